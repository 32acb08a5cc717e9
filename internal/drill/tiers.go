package drill

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// Tier is one of the guide's four disaster-recovery architectures, in the
// order of what they promise (its RTO/RPO table): backup and restore, light,
// warm standby, multi-site.
type Tier int

const (
	// NoTier: nothing to recover the data from once its site is lost.
	NoTier Tier = iota
	// BackupRestore: periodic backups elsewhere; recovery is a restore,
	// by hand (RTO minutes to hours, RPO what the archive trails).
	BackupRestore
	// Light: the data replicated at the database level to a second
	// region, with automated failover; the service's compute is made
	// there when needed (RTO tens of minutes, RPO seconds to minutes).
	Light
	// WarmStandby: a second region ready to serve: data replicated,
	// routers and balancers running, traffic following the data, failover
	// automated (RTO minutes, RPO seconds).
	WarmStandby
	// MultiSite: active-active regions with real-time multi-master
	// replication (RTO zero, RPO near zero).
	MultiSite
)

var tierNames = []string{"none", "backup and restore", "light", "warm standby", "multi-site"}

func (t Tier) String() string { return tierNames[t] }

// Finding is one reason a configuration stops short of a tier, or cannot
// promise an objective, with what to change.
type Finding struct {
	// Part is what it concerns: web, database, region or backups.
	Part string `json:"part"`
	// Tier is the tier it keeps the configuration from (NoTier for an
	// objective's finding).
	Tier Tier   `json:"tier,omitempty"`
	Why  string `json:"why"`
	Fix  string `json:"fix,omitempty"`
}

func (f Finding) String() string {
	s := f.Part + ": " + f.Why
	if f.Fix != "" {
		s += "; fix: " + f.Fix
	}
	return s
}

// Promise is what the configuration can promise for one part: the
// longest outage and the most data lost that its design bounds, and why.
type Promise struct {
	Part string
	// RTO bounds the outage; Manual when recovery waits for a person.
	RTO    time.Duration
	Manual bool
	// RPO bounds the loss; Unbounded when nothing bounds it in time (a
	// byte bound such as max_lag_on_failover is not a time).
	RPO       time.Duration
	Unbounded bool
	// RTOWhy and RPOWhy say where the bounds come from.
	RTOWhy, RPOWhy string
	// rtoFix is what bounds a manual RTO when the part's usual fix
	// (rtoFix) does not: what the standby region lacks.
	rtoFix string
}

// Assessment is what Assess found.
type Assessment struct {
	// Tier is the highest tier the configuration reaches; Short lists
	// why it reaches no higher, the next tier's reasons first.
	Tier  Tier
	Short []Finding
	// Promises are the bounds per part; Missed the objectives they do
	// not keep.
	Promises []Promise
	Missed   []Finding
}

// Assess reads a validated configuration against the guide's tiers and
// against its objectives. It judges the design, not the running system:
// a drill measures that.
func Assess(cfg *config.Config) Assessment {
	var a Assessment
	a.Short = tierFindings(cfg)
	a.Tier = MultiSite
	for _, f := range a.Short {
		a.Tier = min(a.Tier, f.Tier-1)
	}
	a.Promises = promises(cfg)
	a.Missed = missed(cfg, a.Promises)
	return a
}

// tierFindings lists what keeps cfg from each tier.
func tierFindings(cfg *config.Config) []Finding {
	db := cfg.Database
	var out []Finding
	add := func(part string, t Tier, why, fix string) { out = append(out, Finding{part, t, why, fix}) }
	if db == nil {
		add("database", BackupRestore, "no database: the tiers are about recovering the service's data", "add a database section (docs/database.md)")
		return out
	}
	switch {
	case db.Backup == nil:
		add("backups", BackupRestore, "no backups: a lost site takes the data with it", "add database.backup with a repository in another place (docs/backup.md)")
	case db.Backup.BaseEvery == 0:
		add("backups", BackupRestore, "no backup is scheduled, only the WAL archive: a restore would replay it from the first backup someone took by hand", "set database.backup.base_every")
	}
	if db.DR == nil {
		add("region", Light, "the data is in one region: database.dr is not set", "add a standby cluster in a second region, database.dr (docs/dr.md)")
	} else if db.DR.Failover != "automatic" {
		add("region", Light, "dr.failover is manual: a region's loss waits for a person", "set database.dr.failover: automatic")
	}
	if db.DR != nil {
		out = append(out, standbyGaps(cfg)...)
	}
	nearest := "the nearest is warm standby with dr.mode: sync (no acknowledged write lost)"
	if db.DR != nil && db.DR.Mode == "sync" {
		nearest = "none in haven: warm standby with dr.mode: sync, as here, is the nearest"
	}
	add("database", MultiSite, "writes are served in one region at a time (PostgreSQL's regions are active and standby, not multi-master): a region's loss is an outage of the region lease and more", nearest)
	return out
}

// standbyGaps lists what the standby region lacks to serve the service
// once it takes the writes: a way for the applications to the data, a
// balancer for the web, and users sent there. Each keeps the configuration
// from warm standby, and leaves a region's loss to a person.
func standbyGaps(cfg *config.Config) []Finding {
	standby := cfg.DatabaseRegions()[1]
	var out []Finding
	add := func(part, why, fix string) { out = append(out, Finding{part, WarmStandby, why, fix}) }
	if !slices.ContainsFunc(cfg.Database.Routers, func(n string) bool { return regionOf(cfg, n) == standby }) {
		add("region", "no database router in region "+standby+": its applications have no way to the data once it is active", "add a node of "+standby+" to database.routers")
	}
	if !anyBalancerIn(cfg, standby) {
		add("web", "no balancer in region "+standby+": nothing serves the web there until someone builds it", "add a balancer with nodes and backends in "+standby)
	}
	if !followsDatabase(cfg) {
		add("traffic", "no traffic record follows the database: users stay on the lost region's address", "give each region's target follows: {database: true, region: REGION} (docs/traffic.md)")
	}
	return out
}

func regionOf(cfg *config.Config, node string) string {
	n, ok := cfg.Node(node)
	if !ok {
		return ""
	}
	return n.Region
}

func anyBalancerIn(cfg *config.Config, region string) bool {
	for _, b := range cfg.Balancers {
		if b != nil && slices.ContainsFunc(b.Nodes, func(n string) bool { return regionOf(cfg, n) == region }) {
			return true
		}
	}
	return false
}

func followsDatabase(cfg *config.Config) bool {
	return anyFollows(cfg, func(f *config.Follows) bool { return f.Database && f.Region != "" })
}

// anyFollows reports whether a traffic target follows what match says.
func anyFollows(cfg *config.Config, match func(*config.Follows) bool) bool {
	if cfg.Traffic == nil {
		return false
	}
	for _, r := range cfg.Traffic.Records {
		if r == nil {
			continue
		}
		for _, t := range r.Targets {
			if t != nil && t.Follows != nil && match(t.Follows) {
				return true
			}
		}
	}
	return false
}

// balancerNames returns the balancers' names, sorted.
func balancerNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Balancers))
	for name := range cfg.Balancers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Allowances above the leases in the promised RTOs, from the measured
// failovers (docs/database.md, docs/dr.md): a database's primary is
// replaced about 1.02 leases after its loss, a region about a lease and
// two seconds after; the rest is the routers and clients reconnecting.
const (
	databaseAllowance = time.Second
	regionAllowance   = 5 * time.Second
	webAllowance      = time.Second
	// archiveTrail is how far the asynchronous WAL archive trails commits
	// (docs/backup.md).
	archiveTrail = time.Second
)

// promises bounds each part's outage and loss from the configuration.
func promises(cfg *config.Config) []Promise {
	var out []Promise
	if len(cfg.Balancers) > 0 {
		out = append(out, webPromise(cfg))
	}
	db := cfg.Database
	if db == nil {
		return out
	}
	restore := restorePromise(db)
	p := Promise{Part: config.PartDatabase}
	if len(db.Nodes) < 2 {
		p = restore
		p.Part = config.PartDatabase
		p.RTOWhy = "one database node: its loss waits for a restore"
	} else if db.Engine == "galera" {
		// Every node of the primary component has every acknowledged
		// write set; a lost writer costs its eviction (at once when its
		// server is gone, failure_detection when its machine is silent)
		// and the writer record's lease.
		fd := db.Galera.FailureDetection.D()
		p.RTO = max(fd, db.Lease.D()) + databaseAllowance
		p.RTOWhy = fmt.Sprintf("a silent node's eviction (galera.failure_detection %s) or the writer's lease (%s), and about %s", db.Galera.FailureDetection, db.Lease, config.Duration(databaseAllowance))
		p.RPOWhy = "galera: every commit is certified on every node of the primary component before it is acknowledged"
	} else {
		p.RTO = db.Lease.D() + databaseAllowance
		p.RTOWhy = fmt.Sprintf("database.lease %s and about %s", db.Lease, config.Duration(databaseAllowance))
		switch mode := replicationMode(db); mode {
		case "sync", "strict":
			p.RPOWhy = "replication " + mode + ": no acknowledged commit lost"
		default:
			p.Unbounded = true
			p.RPOWhy = "replication async: a failover may lose up to replication.max_lag_on_failover of WAL (bytes, not a time)"
		}
	}
	out = append(out, p)
	if db.DR == nil {
		restore.Part = config.PartRegion
		restore.rtoFix = "add a standby region that takes over by itself: database.dr with failover: automatic (docs/dr.md)"
		return append(out, restore)
	}
	r := regionRTO(cfg)
	switch {
	case db.DR.Mode == "sync":
		r.RPOWhy = "dr.mode sync: no acknowledged commit lost"
	case db.DR.Failover != "automatic":
		r.Unbounded = true
		r.RPOWhy = "dr.mode async and failover manual: the promotion takes whatever the standby lacks then (haven dr promote says how much)"
	default:
		r.RPO = db.DR.MaxLag.D()
		r.RPOWhy = fmt.Sprintf("dr.mode async: an automatic promotion loses at most dr.max_lag %s", db.DR.MaxLag)
	}
	return append(out, r)
}

// regionRTO bounds the outage of the active region's loss. An automatic
// promotion bounds it only if the standby region then serves the service:
// a promoted database that no application reaches (the guide's light tier,
// whose compute is built when needed) is an outage until someone builds
// the rest. A web that haven does not balance is not its to build: without
// balancers only the way to the data counts.
func regionRTO(cfg *config.Config) Promise {
	dr := cfg.Database.DR
	r := Promise{Part: config.PartRegion}
	if dr.Failover != "automatic" {
		r.Manual, r.RTOWhy = true, "dr.failover manual: a person promotes"
		return r
	}
	for _, g := range standbyGaps(cfg) {
		if g.Part == "region" || len(cfg.Balancers) > 0 {
			r.Manual, r.RTOWhy, r.rtoFix = true, "the data fails over by itself but "+g.Why, g.Fix
			return r
		}
	}
	r.RTO = dr.Lease.D() + regionAllowance
	r.RTOWhy = fmt.Sprintf("dr.lease %s and about %s", dr.Lease, config.Duration(regionAllowance))
	return r
}

// restorePromise is a recovery from the backups alone.
func restorePromise(db *config.Database) Promise {
	r := Promise{Manual: true, RTOWhy: "a restore from the backups, by hand"}
	switch {
	case db.Backup == nil:
		r.Unbounded = true
		r.RTOWhy, r.RPOWhy = "no backups", "no backups: the data is lost with its site"
	case db.Backup.Archive == "sync":
		r.RPOWhy = "backup.archive sync: every acknowledged commit is in the repository"
	default:
		r.RPO = archiveTrail
		r.RPOWhy = "the WAL archive trails commits by about a second"
	}
	return r
}

func replicationMode(db *config.Database) string {
	if db.Replication == nil || db.Replication.Mode == "" {
		return "async"
	}
	return db.Replication.Mode
}

// webPromise bounds the web part by its weakest balancer: one on a single
// node, or on several without a floating address, is recovered by hand.
func webPromise(cfg *config.Config) Promise {
	p := Promise{Part: config.PartWeb, RTO: webAllowance, RTOWhy: "every balancer on two or more nodes, behind a floating address or a traffic record"}
	for _, name := range balancerNames(cfg) {
		b := cfg.Balancers[name]
		switch {
		case b == nil:
		case len(b.Nodes) < 2:
			return Promise{Part: config.PartWeb, Manual: true, RTOWhy: "balancer " + name + " runs on one node: its loss waits for a person"}
		case b.VIP == nil && !balancerFollowed(cfg, name):
			return Promise{Part: config.PartWeb, Manual: true, RTOWhy: "balancer " + name + " has no floating address and no traffic record follows it: clients keep the lost node's address"}
		}
	}
	return p
}

func balancerFollowed(cfg *config.Config, name string) bool {
	return anyFollows(cfg, func(f *config.Follows) bool { return f.Balancer == name })
}

// missed compares each promise with its part's objectives.
func missed(cfg *config.Config, ps []Promise) []Finding {
	var out []Finding
	for _, p := range ps {
		rto, rpo := cfg.Objectives.For(p.Part)
		switch {
		case rto == nil:
		case p.Manual && p.rtoFix != "":
			out = append(out, Finding{Part: p.Part, Why: fmt.Sprintf("RTO %s: %s", config.Duration(*rto), p.RTOWhy), Fix: p.rtoFix})
		case p.Manual:
			out = append(out, Finding{Part: p.Part, Why: fmt.Sprintf("RTO %s: %s", config.Duration(*rto), p.RTOWhy), Fix: rtoFix(p.Part)})
		case p.RTO > *rto:
			out = append(out, Finding{Part: p.Part, Why: fmt.Sprintf("RTO %s: recovery takes up to %s (%s)", config.Duration(*rto), config.Duration(p.RTO), p.RTOWhy), Fix: rtoFix(p.Part)})
		}
		switch {
		case rpo == nil || p.Part == config.PartWeb:
		case p.Unbounded:
			out = append(out, Finding{Part: p.Part, Why: fmt.Sprintf("RPO %s: nothing bounds the loss in time (%s)", config.Duration(*rpo), p.RPOWhy), Fix: rpoFix(p.Part)})
		case p.RPO > *rpo:
			out = append(out, Finding{Part: p.Part, Why: fmt.Sprintf("RPO %s: up to %s may be lost (%s)", config.Duration(*rpo), config.Duration(p.RPO), p.RPOWhy), Fix: rpoFix(p.Part)})
		}
	}
	return out
}

func rtoFix(part string) string {
	switch part {
	case config.PartWeb:
		return "run each balancer on two nodes or more, with a vip or a traffic record that follows it"
	case config.PartDatabase:
		return "run three database nodes, or lower database.lease"
	}
	return "set database.dr.failover: automatic, or lower database.dr.lease"
}

func rpoFix(part string) string {
	if part == config.PartRegion {
		return "lower database.dr.max_lag to the RPO, or set database.dr.mode: sync for none"
	}
	return "set database.replication.mode: sync"
}

// Format writes the assessment as haven check prints it.
func (a Assessment) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tier: %s\n", a.Tier)
	for _, f := range a.Short {
		if f.Tier == a.Tier+1 {
			fmt.Fprintf(&b, "  not %s: %s\n", f.Tier, f)
		}
	}
	for _, p := range a.Promises {
		fmt.Fprintf(&b, "%s: %s\n", p.Part, p.summary())
	}
	for _, f := range a.Missed {
		fmt.Fprintf(&b, "objective not kept: %s\n", f)
	}
	return b.String()
}

func (p Promise) summary() string {
	rto := fmt.Sprintf("outage up to %s (%s)", config.Duration(p.RTO), p.RTOWhy)
	if p.Manual {
		rto = "outage until a person acts (" + p.RTOWhy + ")"
	}
	if p.Part == config.PartWeb {
		return rto
	}
	rpo := "no acknowledged write lost"
	switch {
	case p.Unbounded:
		rpo = "loss not bounded in time"
	case p.RPO > 0:
		rpo = "loss up to " + config.Duration(p.RPO).String()
	}
	return rto + "; " + rpo + " (" + p.RPOWhy + ")"
}
