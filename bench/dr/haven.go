package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

// haven's side: `haven agent` on every host (the six database nodes, both
// clients and the witness), one haven.yaml for both regions. Each region
// has its own etcd quorum of its three database nodes (east's is
// coordination.members, west's coordination.regions.west); the global
// scope that holds the active-region record is east1, west1 and the
// witness on segment 3. East's nodes are database.nodes, west's
// database.dr.nodes with `failover: automatic`; each client runs a router
// (database.listen.primary, port havenRouterPort), the region's write
// endpoint. The same writer's role and table as Patroni's, made on east's
// primary over its unix socket.
//
// database.router_hold is 0s: with its default (5s) a router whose pool
// has no primary keeps a new connection waiting for one, the standby
// region's router too, so the switchover's writer, which tries its own
// region's endpoint first with a 500 ms connect timeout, never got past
// the old region's router once it became the standby (no write in 2
// minutes after a 1.5 s switchover, in the first run). With 0s the router
// closes such a connection at once, as HAProxy does with no server up.
const (
	havenRouterPort = 6432
	havenReplPass   = "bench-repl"
	havenToken      = "bench-token"
)

// defaultHavenLease is database.dr.lease, haven's own default (-haven-lease
// changes it).
const defaultHavenLease = 10 * time.Second

// havenLease is the dr.lease haven's targets run with (-haven-lease).
var havenLease = defaultHavenLease

type haven struct {
	name string
	mode string // database.dr.mode: async or sync

	env     *env
	cfg     string // haven.yaml
	etcdDir string // the etcd members' data, in memory when /dev/shm exists
	procs   map[string]*netlab.Proc
	history []*netlab.Proc
	primary string
	standby string
	lag     *lagProbe
}

func newHaven(name, mode string) *haven { return &haven{name: name, mode: mode} }

func (h *haven) Name() string { return h.name }

func (h *haven) Describe() string {
	return fmt.Sprintf("haven (this tree's `haven agent` on every host): each region its own etcd quorum of its three database nodes, "+
		"the active-region record in a global scope of east1, west1 and a witness on segment 3 (198.18.3.11, behind the same WAN delay); "+
		"`database.replication.mode: sync` inside each region, database lease at its default (2s); `database.dr: {nodes: [west1, west2, west3], "+
		"mode: %s, failover: automatic, lease: %s}` (max_lag at its default, 5s); a haven router on each region's client (port %d, `router_hold: 0s`: "+
		"a region without a primary closes a connection at once, as HAProxy does) is the region's write endpoint. Region loss: west promotes by itself (`haven dr promote west` only if it did not); switchover: `haven dr switchover --to REGION`",
		h.mode, havenLease, havenRouterPort)
}

// Packages: haven needs only PostgreSQL, which the bench checks.
func (h *haven) Packages() []string { return nil }

// Witness: the global scope's third member is on segment 3.
func (h *haven) Witness() bool { return true }

func (h *haven) WriteEndpoint(region string) string {
	return fmt.Sprintf("%s:%d", hostAddr(regionHosts[region].client), havenRouterPort)
}

func (h *haven) Automatic() bool { return true }

// hosts is every host that runs an agent.
func (h *haven) hosts() []string {
	return slices.Concat(regionHosts[east].hosts(), regionHosts[west].hosts(), []string{witness})
}

func (h *haven) Start(ctx context.Context, e *env) error {
	h.env = e
	h.procs = map[string]*netlab.Proc{}
	if e.HavenErr != nil {
		return e.HavenErr
	}
	if e.HavenBin == "" {
		return errors.New("haven's binary was not built")
	}
	etcdDir, err := os.MkdirTemp("/dev/shm", "benchdr-etcd")
	if err != nil {
		etcdDir = filepath.Join(e.Dir, "etcd")
	}
	h.etcdDir = etcdDir
	h.cfg = filepath.Join(e.Dir, "haven.yaml")
	for name, content := range map[string]string{
		"haven.yaml":           havenConf(e.Dir, e.Bindir, etcdDir, h.mode, havenLease),
		"replication.password": havenReplPass + "\n",
		"token":                havenToken + "\n",
	} {
		if err := os.WriteFile(filepath.Join(e.Dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	for _, host := range h.hosts() {
		if err := os.MkdirAll(filepath.Join(e.Dir, host), 0o711); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(e.Dir, host), 0o711); err != nil {
			return err
		}
		proc, err := e.Net.Host(host).Start(context.Background(), e.HavenBin, "agent", "-c", h.cfg, "-n", host)
		if err != nil {
			return err
		}
		h.procs[host] = proc
		h.history = append(h.history, proc)
	}
	// The writer's role and table, on east's primary. On a loaded machine
	// the first primary can lose its database lease within seconds of
	// initdb (etcd answering in over a second) and stop while the bench
	// makes the table: then the keeper elects another, and the bench makes
	// the table there (the statements are idempotent), and says so.
	err = poll(ctx, e.Settle, 500*time.Millisecond, func() (string, error) {
		if err := h.alive(); err != nil {
			return "", err
		}
		primary := h.primaryOf(ctx, east)
		if primary == "" {
			return "no primary in east", nil
		}
		if _, err := h.sql(ctx, primary, makeTableSQL); err != nil {
			harness.Logf("%s: making the writer's table on east's primary failed, trying again on whichever is primary next: %v", e.Label, err)
			return fmt.Sprintf("the writer's table not made: %v", err), nil
		}
		return "", nil
	})
	if err != nil {
		return fmt.Errorf("east: make the writer's table: %w", err)
	}
	return h.Ready(ctx, east)
}

// makeTableSQL makes the writer's role and table (tableSQL, grantSQL) in
// one transaction, and does nothing where they exist: a retry after a
// commit whose answer was lost succeeds.
var makeTableSQL = fmt.Sprintf("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN CREATE ROLE %[1]s LOGIN PASSWORD '%[2]s'; END IF; END$$; %[3]s; %[4]s",
	appUser, appPassword, strings.Replace(tableSQL, "CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1), grantSQL)

// havenConf is the haven.yaml of both regions: dir holds each host's
// directory, bindir is PostgreSQL's, etcdDir the etcd members' data.
func havenConf(dir, bindir, etcdDir, mode string, lease time.Duration) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "cluster: benchdr\nadmin: {token_file: %s/token}\nregions:\n", dir)
	zones := []string{"a", "b", "c", "d"}
	for _, r := range regions {
		fmt.Fprintf(&sb, "  %s:\n    nodes:\n", r)
		for i, host := range regionHosts[r].hosts() {
			fmt.Fprintf(&sb, "      %s: {address: %s, zone: %s}\n", host, hostAddr(host), zones[i])
		}
	}
	fmt.Fprintf(&sb, "  %s:\n    nodes:\n      %s: {address: %s, zone: a}\n", witness, witness, hostAddr(witness))
	e, w := regionHosts[east], regionHosts[west]
	fmt.Fprintf(&sb, `coordination:
  members: [%[1]s]
  data_dir: %[3]s/{node}/etcd
  join_timeout: 30s
  regions:
    west: {members: [%[2]s]}
  global:
    members: [%[4]s, %[5]s, %[6]s]
    data_dir: %[3]s/{node}/etcd-global
database:
  nodes: [%[1]s]
  data_dir: %[7]s/{node}/pg
  bindir: %[8]s
  replication: {mode: sync, password_file: %[7]s/replication.password}
  hba: ["host %[9]s %[10]s 198.18.0.0/15 scram-sha-256"]
  listen: {primary: ":%[11]d"}
  routers: [%[12]s, %[13]s]
  router_hold: 0s
  settings: {dynamic_shared_memory_type: mmap}
  dr: {nodes: [%[2]s], mode: %[14]s, failover: automatic, lease: %[15]s}
`, strings.Join(e.nodes, ", "), strings.Join(w.nodes, ", "), etcdDir, e.nodes[0], w.nodes[0], witness,
		dir, bindir, appDB, appUser, havenRouterPort, e.client, w.client, mode, lease)
	return sb.String()
}

// sql runs query on node as the superuser over its unix socket and
// returns psql's unaligned output.
func (h *haven) sql(ctx context.Context, node, query string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := h.env.Net.Host(node).Command(ctx, "runuser", "-u", "postgres", "--", filepath.Join(h.env.Bindir, "psql"),
		"-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(h.env.Dir, node, "run"), "-p", fmt.Sprint(pgPort), "-d", appDB,
		"-c", query).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", node, err, harness.LastLines(string(out), 2))
	}
	return strings.TrimSpace(string(out)), nil
}

// primaryOf is the one node of region whose postgres is not in recovery,
// or "".
func (h *haven) primaryOf(ctx context.Context, region string) string {
	var found []string
	for _, n := range regionHosts[region].nodes {
		if out, err := h.sql(ctx, n, "SELECT pg_is_in_recovery()"); err == nil && out == "f" {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return ""
	}
	return found[0]
}

// upstream is where node's WAL receiver streams from (its sender's
// address), or why it does not stream.
func (h *haven) upstream(ctx context.Context, node string) (string, bool) {
	out, err := h.sql(ctx, node, "SELECT pg_is_in_recovery()::text || ' ' || coalesce((SELECT status || ' ' || coalesce(sender_host, '') FROM pg_stat_wal_receiver), 'no receiver')")
	if err != nil {
		return err.Error(), false
	}
	f := strings.Fields(out)
	if len(f) == 3 && f[0] == "true" && f[1] == "streaming" {
		return f[2], true
	}
	return out, false
}

// health says whether active has one primary that its two other nodes
// stream from, and the other region a standby leader that streams from
// the primary and that its two other nodes stream from.
func (h *haven) health(ctx context.Context, active string) (primary, standby, why string) {
	primary = h.primaryOf(ctx, active)
	if primary == "" {
		return "", "", "no single primary in " + active
	}
	pa := hostAddr(primary).String()
	var seen []string
	for _, n := range regionHosts[active].nodes {
		if n == primary {
			continue
		}
		from, ok := h.upstream(ctx, n)
		if !ok || from != pa {
			return "", "", fmt.Sprintf("%s's replica %s: %s", active, n, from)
		}
	}
	ups := map[string]string{}
	for _, n := range regionHosts[other(active)].nodes {
		from, ok := h.upstream(ctx, n)
		seen = append(seen, n+": "+from)
		if ok {
			ups[n] = from
		}
		if from == pa {
			standby = n
		}
	}
	if standby == "" {
		return "", "", fmt.Sprintf("no node of %s streams from %s (%s)", other(active), primary, strings.Join(seen, "; "))
	}
	sa := hostAddr(standby).String()
	for _, n := range regionHosts[other(active)].nodes {
		if n != standby && ups[n] != sa {
			return "", "", fmt.Sprintf("standby leader %s; %s does not stream from it (%s)", standby, n, strings.Join(seen, "; "))
		}
	}
	return primary, standby, ""
}

// Ready waits until active's router reaches its primary, the primary's
// region streams from it, and the other region's standby leader streams
// from the primary with its own two replicas streaming from it.
func (h *haven) Ready(ctx context.Context, active string) error {
	return poll(ctx, h.env.Settle, 500*time.Millisecond, func() (string, error) {
		if err := h.alive(); err != nil {
			return "", err
		}
		primary, standby, why := h.health(ctx, active)
		if why != "" {
			return why, nil
		}
		if err := routerReaches(ctx, h.env.Net, h, active, primary); err != nil {
			return err.Error(), nil
		}
		if h.primary != primary || h.standby != standby || h.lag == nil {
			if h.lag != nil {
				h.lag.close()
			}
			h.lag = newLagProbe(h.env.Net, primary, standby)
		}
		h.primary, h.standby = primary, standby
		return "", nil
	})
}

// alive returns an error when an agent exited.
func (h *haven) alive() error {
	for _, proc := range h.procs {
		select {
		case <-proc.Done():
			return fmt.Errorf("%s exited: %s", proc, harness.LastLines(proc.Output(), 5))
		default:
		}
	}
	return nil
}

func (h *haven) Lag(ctx context.Context, active string) (lagSample, error) {
	if h.lag == nil {
		return lagSample{}, errors.New("not ready")
	}
	return h.lag.sample(ctx)
}

// cli runs `haven ARGS -c haven.yaml` on host, as an operator would.
func (h *haven) cli(ctx context.Context, host string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	argv := append(append([]string{}, args...), "-c", h.cfg)
	out, err := h.env.Net.Host(host).Command(ctx, h.env.HavenBin, argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("haven %s: %w: %s", strings.Join(args, " "), err, harness.LastLines(string(out), 3))
	}
	return string(out), nil
}

// Promote is `haven dr promote REGION` on region's client: the bench calls
// it only when west did not take a write by itself.
func (h *haven) Promote(ctx context.Context, region string) (string, error) {
	out, err := h.cli(ctx, regionHosts[region].client, "dr", "promote", region)
	return harness.LastLines(out, 2), err
}

// Switchover is `haven dr switchover --to OTHER` on from's client; it
// returns once the other region is active.
func (h *haven) Switchover(ctx context.Context, from string) (string, error) {
	out, err := h.cli(ctx, regionHosts[from].client, "dr", "switchover", "--to", other(from))
	return harness.LastLines(out, 2), err
}

// Close stops the agents (each stops its postgres and etcd), keeps their
// output in RawDir as Label-HOST-1.log, and removes the etcd data.
func (h *haven) Close() {
	if h.lag != nil {
		h.lag.close()
	}
	if h.env == nil {
		return
	}
	for _, proc := range h.procs {
		_ = proc.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, proc := range h.procs {
		select {
		case <-proc.Done():
		case <-ctx.Done():
		}
	}
	count := map[string]int{}
	for _, proc := range h.history {
		host := proc.Host.Name
		count[host]++
		path := filepath.Join(h.env.RawDir, fmt.Sprintf("%s-%s-%d.log", h.env.Label, host, count[host]))
		_ = os.WriteFile(path, []byte(proc.String()+"\n"+proc.Output()), 0o644)
	}
	if strings.HasPrefix(h.etcdDir, "/dev/shm/") {
		_ = os.RemoveAll(h.etcdDir)
	}
}
