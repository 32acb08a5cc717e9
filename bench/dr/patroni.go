package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

// Patroni's side: in each region an etcd 3.4 cluster of the three
// database nodes (Patroni's usual layout: each Patroni cluster its own
// DCS), Patroni 3.0.2 on the three, and HAProxy on the region's client.
// East is a normal Patroni cluster; west is a Patroni standby cluster
// whose standby leader streams from east through standby_cluster: the list
// of east's three nodes with a replication slot, so that Patroni adds
// target_session_attrs=read-write and west follows east's failovers (a
// permanent slot for the other region is in both clusters' dynamic
// configuration, so the slot exists on whichever node is the primary).
const (
	patroniPort = 8008
	etcdClient  = 2379
	etcdPeer    = 2380
	routerPort  = 5000 // HAProxy on each region's client
	superPass   = "bench-super"
	replPass    = "bench-repl"
)

// slotFor is the permanent replication slot that region's standby leader
// uses on the other region's primary.
func slotFor(region string) string { return region + "_region" }

type patroni struct {
	name                        string
	ttl, loopWait, retryTimeout int

	env     *env
	pgUID   int
	pgGID   int
	procs   map[string][]*netlab.Proc // each host's daemons: etcd and patroni, or HAProxy
	history []*netlab.Proc
	// primary and standbyLeader are what Ready last saw.
	primary, standbyLeader string
	lag                    *lagProbe
	notes                  []string // what the operator had to do, for the run's notes
}

func newPatroni(name string, ttl, loopWait, retryTimeout int) *patroni {
	return &patroni{name: name, ttl: ttl, loopWait: loopWait, retryTimeout: retryTimeout}
}

func (p *patroni) Name() string { return p.name }

func (p *patroni) Describe() string {
	return fmt.Sprintf("Patroni 3.0.2 (ttl %d, loop_wait %d, retry_timeout %d; `synchronous_mode: true` inside each region), "+
		"an etcd 3.4 cluster of three members in each region, HAProxy on each region's client (Patroni's template: `option httpchk GET /primary`, "+
		"checks every 250 ms, `on-marked-down shutdown-sessions`). West is a standby cluster: `standby_cluster: {host: %s, port: %d, "+
		"primary_slot_name: %s, create_replica_methods: [basebackup]}` (with a slot Patroni adds `target_session_attrs=read-write`, so the standby leader "+
		"follows east's failovers); its promotion is `patronictl edit-config --force -s standby_cluster=null`",
		p.ttl, p.loopWait, p.retryTimeout, strings.Join(nodeAddrs(east), ","), pgPort, slotFor(west))
}

func (p *patroni) Packages() []string { return []string{"patroni", "etcd-server", "haproxy"} }

func (p *patroni) WriteEndpoint(region string) string {
	return fmt.Sprintf("%s:%d", hostAddr(regionHosts[region].client), routerPort)
}

func (p *patroni) Automatic() bool { return false }

// nodeAddrs is the addresses of region's database nodes.
func nodeAddrs(region string) []string {
	var out []string
	for _, n := range regionHosts[region].nodes {
		out = append(out, hostAddr(n).String())
	}
	return out
}

func (p *patroni) nodeDir(node string) string { return filepath.Join(p.env.Dir, node) }

func (p *patroni) conf(node string) string { return filepath.Join(p.nodeDir(node), "patroni.yml") }

func (p *patroni) Start(ctx context.Context, e *env) error {
	p.env = e
	p.procs = map[string][]*netlab.Proc{}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("no postgres user (install postgresql-15): %w", err)
	}
	p.pgUID, _ = strconv.Atoi(u.Uid)
	p.pgGID, _ = strconv.Atoi(u.Gid)
	if err := p.writeConfigs(); err != nil {
		return err
	}
	for _, r := range regions {
		for _, node := range regionHosts[r].nodes {
			if err := p.start(node, etcdArgs(p.nodeDir(node), r, node)...); err != nil {
				return err
			}
		}
		client := regionHosts[r].client
		if err := p.start(client, "haproxy", "-db", "-f", filepath.Join(p.nodeDir(client), "haproxy.cfg")); err != nil {
			return err
		}
	}
	// East first: west's standby leader copies east's primary.
	for _, node := range regionHosts[east].nodes {
		if err := p.start(node, "runuser", "-u", "postgres", "--", "patroni", p.conf(node)); err != nil {
			return err
		}
	}
	primary, err := p.waitPrimary(ctx, east)
	if err != nil {
		return fmt.Errorf("east: %w", err)
	}
	if err := p.makeTable(ctx, primary); err != nil {
		return err
	}
	for _, node := range regionHosts[west].nodes {
		if err := p.start(node, "runuser", "-u", "postgres", "--", "patroni", p.conf(node)); err != nil {
			return err
		}
	}
	return p.Ready(ctx, east)
}

func (p *patroni) start(host string, argv ...string) error {
	proc, err := p.env.Net.Host(host).Start(context.Background(), argv[0], argv[1:]...)
	if err != nil {
		return err
	}
	p.procs[host] = append(p.procs[host], proc)
	p.history = append(p.history, proc)
	return nil
}

func (p *patroni) writeConfigs() error {
	for _, r := range regions {
		rh := regionHosts[r]
		cdir := p.nodeDir(rh.client)
		if err := os.MkdirAll(cdir, 0o711); err != nil {
			return err
		}
		if err := writeHAProxyConf(filepath.Join(cdir, "haproxy.cfg"), p.name, r); err != nil {
			return err
		}
		for _, node := range rh.nodes {
			d := p.nodeDir(node)
			// Patroni runs as postgres and makes its data directory,
			// socket and pgpass in here; etcd runs as root in d/etcd.
			if err := os.MkdirAll(filepath.Join(d, "run"), 0o700); err != nil {
				return err
			}
			for _, dir := range []string{d, filepath.Join(d, "run")} {
				if err := os.Chmod(dir, 0o700); err != nil {
					return err
				}
				if err := os.Chown(dir, p.pgUID, p.pgGID); err != nil {
					return err
				}
			}
			if err := writePatroniConf(p.conf(node), d, p.env.Bindir, p, r, node); err != nil {
				return err
			}
			if err := os.Chown(p.conf(node), p.pgUID, p.pgGID); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeTable makes the writer's role and table on east's primary, as the
// superuser over its unix socket.
func (p *patroni) makeTable(ctx context.Context, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := p.env.Net.Host(primary).Command(ctx, "runuser", "-u", "postgres", "--", filepath.Join(p.env.Bindir, "psql"),
		"-v", "ON_ERROR_STOP=1", "-h", filepath.Join(p.nodeDir(primary), "run"), "-p", strconv.Itoa(pgPort), "-d", appDB,
		"-c", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", appUser, appPassword), "-c", tableSQL, "-c", grantSQL)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make the writer's table on %s: %w: %s", primary, err, harness.LastLines(string(out), 3))
	}
	return nil
}

// status is what a node's Patroni says on GET path (/primary,
// /standby-leader): the HTTP code, the role and pg_stat_replication.
type status struct {
	code        int
	Role        string `json:"role"`
	State       string `json:"state"`
	Replication []struct {
		Name      string `json:"application_name"`
		State     string `json:"state"`
		SyncState string `json:"sync_state"`
	} `json:"replication"`
}

func (p *patroni) status(node, path string) (status, error) {
	client := regionHosts[regionOf(node)].client
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: p.env.Net.Host(client).DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get(fmt.Sprintf("http://%s:%d%s", hostAddr(node), patroniPort, path))
	if err != nil {
		return status{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var st status
	if err := json.Unmarshal(body, &st); err != nil {
		return status{code: resp.StatusCode}, fmt.Errorf("GET %s: %d, %q", path, resp.StatusCode, harness.Truncate(string(body), 100))
	}
	st.code = resp.StatusCode
	return st, nil
}

// streaming is the names in st's pg_stat_replication that stream, and
// whether one of them is synchronous.
func (st status) streaming() (names []string, sync bool) {
	for _, r := range st.Replication {
		if r.State == "streaming" {
			names = append(names, r.Name)
			sync = sync || r.SyncState == "sync"
		}
	}
	return names, sync
}

// leaderOf is the one node of region that answers path with 200, and its
// status; or why there is not exactly one.
func (p *patroni) leaderOf(region, path string) (string, status, string) {
	var found []string
	var st status
	var seen []string
	for _, node := range regionHosts[region].nodes {
		s, err := p.status(node, path)
		if err != nil {
			seen = append(seen, node+": "+err.Error())
			continue
		}
		seen = append(seen, fmt.Sprintf("%s: %d %s %s", node, s.code, s.Role, s.State))
		if s.code == http.StatusOK {
			found = append(found, node)
			st = s
		}
	}
	if len(found) != 1 {
		return "", status{}, fmt.Sprintf("%d nodes of %s answer %s with 200 (%s)", len(found), region, path, strings.Join(seen, "; "))
	}
	return found[0], st, ""
}

// health says whether active has one primary streaming to its two other
// nodes (one synchronous) and to the other region's standby leader, which
// streams to its own two other nodes. It returns both leaders, or why not;
// when only some of the standby leader's replicas are missing, it names
// them.
func (p *patroni) health(active string) (primary, standby, why string, missing []string) {
	primary, st, why := p.leaderOf(active, "/primary")
	if why != "" {
		return "", "", why, nil
	}
	names, sync := st.streaming()
	var local, remote []string
	for _, n := range names {
		switch regionOf(n) {
		case active:
			local = append(local, n)
		case other(active):
			remote = append(remote, n)
		}
	}
	switch {
	case len(local) != 2:
		return "", "", fmt.Sprintf("primary %s streams to %v in %s", primary, local, active), nil
	case !sync:
		return "", "", fmt.Sprintf("primary %s has no synchronous standby", primary), nil
	case len(remote) != 1:
		return "", "", fmt.Sprintf("primary %s streams to %v in %s, want its standby leader", primary, remote, other(active)), nil
	}
	standby, sst, why := p.leaderOf(other(active), "/standby-leader")
	if why != "" {
		return "", "", why, nil
	}
	if standby != remote[0] {
		return "", "", fmt.Sprintf("%s's standby leader is %s, but %s streams from %s", other(active), standby, remote[0], primary), nil
	}
	cascade, _ := sst.streaming()
	for _, n := range regionHosts[other(active)].nodes {
		if n != standby && !slices.Contains(cascade, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return "", "", fmt.Sprintf("standby leader %s streams to %v, not to %v", standby, cascade, missing), missing
	}
	return primary, standby, "", nil
}

// stuckAfter is how long Ready lets a replica of the standby region not
// stream before it acts as the operator and reinitialises it.
const stuckAfter = 20 * time.Second

// Ready waits for the healthy state. A replica of the standby cluster that
// does not stream from its standby leader for stuckAfter is reinitialised
// with `patronictl reinit`, as an operator would: after a region
// switchover the old primary's synchronous replica can hold WAL of the
// old timeline beyond the fork (the commit in flight when Patroni stopped
// the old primary), and Patroni 3.0.2 does not pg_rewind a replica from a
// standby leader ("Leader is still in_recovery and therefore can't be used
// for rewind"), so that replica never follows by itself.
func (p *patroni) Ready(ctx context.Context, active string) error {
	var stuckSince time.Time
	done := map[string]bool{}
	return poll(ctx, p.env.Settle, 250*time.Millisecond, func() (string, error) {
		if err := p.alive(); err != nil {
			return "", err
		}
		primary, standby, why, missing := p.health(active)
		if len(missing) == 0 {
			stuckSince = time.Time{}
		} else if stuckSince.IsZero() {
			stuckSince = time.Now()
		} else if time.Since(stuckSince) >= stuckAfter {
			for _, n := range missing {
				if done[n] {
					continue
				}
				done[n] = true
				out, err := p.patronictl(ctx, n, "reinit", "--force", "benchdr-"+regionOf(n), n)
				note := fmt.Sprintf("%s did not stream from its standby leader for %s: patronictl reinit %s: %s", n, stuckAfter, n, harness.LastLines(out, 1))
				if err != nil {
					note += " (" + err.Error() + ")"
				}
				harness.Logf("%s: %s", p.name, note)
				p.notes = append(p.notes, note)
			}
		}
		if why != "" {
			return why, nil
		}
		if err := routerReaches(ctx, p.env.Net, p, active, primary); err != nil {
			return err.Error(), nil
		}
		if p.primary != primary || p.standbyLeader != standby || p.lag == nil {
			if p.lag != nil {
				p.lag.close()
			}
			p.lag = newLagProbe(p.env.Net, primary, standby)
		}
		p.primary, p.standbyLeader = primary, standby
		return "", nil
	})
}

// waitPrimary waits until one node of region answers /primary and
// returns it.
func (p *patroni) waitPrimary(ctx context.Context, region string) (string, error) {
	var primary string
	err := poll(ctx, p.env.Settle, 250*time.Millisecond, func() (string, error) {
		if err := p.alive(); err != nil {
			return "", err
		}
		n, _, why := p.leaderOf(region, "/primary")
		primary = n
		return why, nil
	})
	return primary, err
}

// alive returns an error when a daemon exited.
func (p *patroni) alive() error {
	for _, procs := range p.procs {
		for _, proc := range procs {
			select {
			case <-proc.Done():
				return fmt.Errorf("%s exited: %s", proc, harness.LastLines(proc.Output(), 5))
			default:
			}
		}
	}
	return nil
}

func (p *patroni) Lag(ctx context.Context, active string) (lagSample, error) {
	if p.lag == nil {
		return lagSample{}, errors.New("not ready")
	}
	return p.lag.sample(ctx)
}

// patronictl runs patronictl with node's configuration (its region's
// etcd), on its region's client.
func (p *patroni) patronictl(ctx context.Context, node string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	argv := append([]string{"-c", p.conf(node)}, args...)
	out, err := p.env.Net.Host(regionHosts[regionOf(node)].client).Command(ctx, "patronictl", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("patronictl %s: %w: %s", strings.Join(args, " "), err, harness.LastLines(string(out), 3))
	}
	return string(out), nil
}

// Promote removes standby_cluster from region's dynamic configuration:
// Patroni's documented way to promote a standby cluster.
func (p *patroni) Promote(ctx context.Context, region string) (string, error) {
	out, err := p.patronictl(ctx, regionHosts[region].nodes[0], "edit-config", "--force", "-s", "standby_cluster=null")
	return harness.LastLines(out, 2), err
}

// Switchover moves the writes from from to the other region: from becomes
// a standby cluster of the other region (its leader demotes and follows
// the other region's nodes), the operator waits until the other region's
// standby leader has replayed everything from's old primary wrote, and
// promotes the other region.
func (p *patroni) Switchover(ctx context.Context, from string) (string, error) {
	to := other(from)
	oldPrimary, standby := p.primary, p.standbyLeader
	if oldPrimary == "" || regionOf(oldPrimary) != from {
		return "", fmt.Errorf("the primary is not in %s (Ready first)", from)
	}
	var log []string
	start := time.Now()
	step := func(what string) {
		log = append(log, fmt.Sprintf("%s at %s", what, harness.Dur(time.Since(start))))
	}
	out, err := p.patronictl(ctx, regionHosts[from].nodes[0], "edit-config", "--force",
		"-s", "standby_cluster.host="+strings.Join(nodeAddrs(to), ","),
		"-s", "standby_cluster.port="+strconv.Itoa(pgPort),
		"-s", "standby_cluster.primary_slot_name="+slotFor(from),
		"-s", "standby_cluster.create_replica_methods=[basebackup]")
	step("standby_cluster added to " + from + ": " + harness.LastLines(out, 1))
	if err != nil {
		return strings.Join(log, " / "), err
	}
	// The operator's check: from's old primary is a standby now, and the
	// other region's standby leader has replayed up to where it stopped.
	// Patroni stops a primary that becomes a standby leader with an
	// immediate shutdown, so the WAL of a commit in flight may never have
	// left it: once the standby has replayed all it received and nothing
	// more came for quietFor, it has everything it will get, and the
	// operator promotes it (the old primary's extra WAL is an
	// unacknowledged commit, or a lost one, which the writer counts;
	// Patroni rewinds it away when the old primary follows).
	const quietFor = 2 * time.Second
	var short, lastRecv int64
	var quietSince, demoted time.Time
	caught := false
	err = poll(ctx, 30*time.Second, 200*time.Millisecond, func() (string, error) {
		end, recovery, err := lsnOf(ctx, p.env.Net, oldPrimary, "pg_last_wal_replay_lsn()")
		if err != nil {
			return err.Error(), nil
		}
		if !recovery {
			return oldPrimary + " still primary", nil
		}
		if demoted.IsZero() {
			demoted = time.Now()
			step(oldPrimary + " in recovery")
		}
		recv, _, err := lsnOf(ctx, p.env.Net, standby, "pg_last_wal_receive_lsn()")
		if err != nil {
			return err.Error(), nil
		}
		replayed, _, err := lsnOf(ctx, p.env.Net, standby, "pg_last_wal_replay_lsn()")
		if err != nil {
			return err.Error(), nil
		}
		short = end - replayed
		if short <= 0 {
			caught = true
			return "", nil
		}
		if recv != lastRecv || replayed < recv {
			lastRecv, quietSince = recv, time.Now()
		}
		if time.Since(quietSince) >= quietFor {
			return "", nil
		}
		return fmt.Sprintf("%s replayed %d bytes less than %s's end", standby, short, oldPrimary), nil
	})
	switch {
	case err != nil:
		log = append(log, "not caught up: "+err.Error()+"; promoting anyway")
	case caught:
		log = append(log, fmt.Sprintf("%s caught up with %s", standby, oldPrimary))
	default:
		log = append(log, fmt.Sprintf("%s replayed all it received, %d bytes short of %s's end, and nothing more came for %s", standby, short, oldPrimary, quietFor))
	}
	step("checked")
	out, err = p.patronictl(ctx, regionHosts[to].nodes[0], "edit-config", "--force", "-s", "standby_cluster=null")
	step("standby_cluster removed from " + to + ": " + harness.LastLines(out, 1))
	return strings.Join(log, " / "), err
}

// Notes returns what Ready had to do as the operator since the last call.
func (p *patroni) Notes() []string {
	n := p.notes
	p.notes = nil
	return n
}

func (p *patroni) Close() {
	if p.lag != nil {
		p.lag.close()
	}
	if p.env == nil {
		return
	}
	count := map[string]int{}
	for _, proc := range p.history {
		host := proc.Host.Name
		count[host]++
		path := filepath.Join(p.env.RawDir, fmt.Sprintf("%s-%s-%d.log", p.env.Label, host, count[host]))
		_ = os.WriteFile(path, []byte(proc.String()+"\n"+proc.Output()), 0o644)
	}
	for _, r := range regions {
		for _, node := range regionHosts[r].nodes {
			// postgres's own log, when Patroni's logging collector wrote one.
			logs, _ := filepath.Glob(filepath.Join(p.nodeDir(node), "pg", "log", "*"))
			for i, l := range logs {
				if data, err := os.ReadFile(l); err == nil {
					_ = os.WriteFile(filepath.Join(p.env.RawDir, fmt.Sprintf("%s-%s-postgres-%d.log", p.env.Label, node, i+1)), data, 0o644)
				}
			}
		}
	}
}

// haproxyConf is a region's HAProxy: Patroni's template (a TCP listener,
// `option httpchk` against /primary on the REST port,
// `on-marked-down shutdown-sessions`) with bench/pg's short checks.
const haproxyConf = `# bench/dr: {{.Target}}, region {{.Region}}
global
    maxconn 200

defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout server 30m
    timeout connect 1s
    timeout check 1s

listen primary
    bind {{.Listen}}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
{{- range .Servers}}
    server {{.Name}} {{.Addr}}:{{$.PGPort}} maxconn 100 check port {{$.CheckPort}}
{{- end}}
`

type server struct{ Name, Addr string }

func writeHAProxyConf(path, target, region string) error {
	rh := regionHosts[region]
	d := struct {
		Target, Region, Listen string
		PGPort, CheckPort      int
		Servers                []server
	}{target, region, fmt.Sprintf("%s:%d", hostAddr(rh.client), routerPort), pgPort, patroniPort, nil}
	for _, n := range rh.nodes {
		d.Servers = append(d.Servers, server{n, hostAddr(n).String()})
	}
	return harness.WriteTemplate(path, haproxyConf, d)
}

// patroniConf is one node's patroni.yml: its region's etcd, bench/pg's
// settings (synchronous_mode, pg_rewind, slots), a permanent slot for the
// other region's standby leader, and, in west, standby_cluster.
const patroniConf = `# bench/dr: {{.Target}} on {{.Node}}, region {{.Region}}
scope: {{.Scope}}
namespace: /service/
name: {{.Node}}
log:
  level: INFO
restapi:
  listen: {{.Addr}}:{{.RESTPort}}
  connect_address: {{.Addr}}:{{.RESTPort}}
etcd3:
  hosts: [{{.Etcd}}]
bootstrap:
  dcs:
    ttl: {{.TTL}}
    loop_wait: {{.LoopWait}}
    retry_timeout: {{.RetryTimeout}}
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    slots:
      {{.OtherSlot}}: {type: physical}
{{- if .Standby}}
    standby_cluster:
      host: {{.Standby}}
      port: {{.PGPort}}
      primary_slot_name: {{.Slot}}
      create_replica_methods: [basebackup]
{{- end}}
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
  - encoding: UTF8
  - locale: C
  - data-checksums
postgresql:
  listen: {{.Addr}}:{{.PGPort}}
  connect_address: {{.Addr}}:{{.PGPort}}
  data_dir: {{.Dir}}/pg
  bin_dir: {{.Bindir}}
  pgpass: {{.Dir}}/pgpass
  authentication:
    superuser: {username: postgres, password: {{.SuperPass}}}
    replication: {username: replicator, password: {{.ReplPass}}}
  parameters:
    unix_socket_directories: {{.Dir}}/run
  pg_hba:
  - local all all trust
  - host replication replicator 198.18.0.0/15 scram-sha-256
  - host all all 198.18.0.0/15 scram-sha-256
watchdog:
  mode: off
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
`

// writePatroniConf writes node's patroni.yml, in region, into path; dir
// is the node's own directory.
func writePatroniConf(path, dir, bindir string, p *patroni, region, node string) error {
	var etcd []string
	for _, a := range nodeAddrs(region) {
		etcd = append(etcd, fmt.Sprintf("%s:%d", a, etcdClient))
	}
	d := struct {
		Target, Node, Region, Scope, Addr, Etcd, Dir, Bindir, SuperPass, ReplPass string
		OtherSlot, Standby, Slot                                                  string
		RESTPort, PGPort, TTL, LoopWait, RetryTimeout                             int
	}{
		Target: p.name, Node: node, Region: region, Scope: "benchdr-" + region, Addr: hostAddr(node).String(), Etcd: strings.Join(etcd, ", "),
		Dir: dir, Bindir: bindir, SuperPass: superPass, ReplPass: replPass, OtherSlot: slotFor(other(region)),
		RESTPort: patroniPort, PGPort: pgPort, TTL: p.ttl, LoopWait: p.loopWait, RetryTimeout: p.retryTimeout,
	}
	if region == west {
		d.Standby, d.Slot = strings.Join(nodeAddrs(east), ","), slotFor(west)
	}
	if err := harness.WriteTemplate(path, patroniConf, d); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// etcdArgs is the command line of node's etcd 3.4 member: one cluster of
// its region's three database nodes, at etcd's defaults (heartbeat 100ms,
// election timeout 1s).
func etcdArgs(dir, region, node string) []string {
	var initial []string
	for _, n := range regionHosts[region].nodes {
		initial = append(initial, fmt.Sprintf("%s=http://%s:%d", n, hostAddr(n), etcdPeer))
	}
	a := hostAddr(node)
	return []string{"etcd",
		"--name", node,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://%s:%d", a, etcdClient),
		"--advertise-client-urls", fmt.Sprintf("http://%s:%d", a, etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://%s:%d", a, etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://%s:%d", a, etcdPeer),
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-token", "benchdr-" + region,
		"--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn",
	}
}
