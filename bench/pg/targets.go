package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// The topology: three database nodes and a client on one bridge (netlab
// gives the i-th host 198.18.1.(10+i)). HAProxy runs on the client.
var (
	nodes = []string{"db1", "db2", "db3"}
	hosts = append(append([]string{}, nodes...), "client")
)

const (
	pgPort      = 5432
	patroniPort = 8008 // Patroni's REST API
	adminPort   = 9900 // haven's admin port, with the Patroni-style endpoints
	etcdClient  = 2379
	etcdPeer    = 2380
	routerPort  = 5000 // HAProxy's listener on the client
	havenRouter = 6432 // haven's router (database.listen.primary) on the client
	clusterName = "benchpg"
	appUser     = "app"
	appPassword = "bench-app"
	superPass   = "bench-super"
	replPass    = "bench-repl"
)

// hostAddr is netlab's address of the host of that name.
func hostAddr(name string) netip.Addr {
	for i, h := range hosts {
		if h == name {
			return netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)})
		}
	}
	panic("bench/pg: no host " + name)
}

// target is one implementation of the database cluster.
type target struct {
	name string
	kind string // "patroni" or "haven"
	// Patroni's timing (seconds): the leader key's TTL, the HA loop's
	// period, and the timeout of DCS and PostgreSQL retries.
	ttl, loopWait, retryTimeout int
	// lease is haven's database.lease.
	lease time.Duration
	// haproxy says that the writer goes through HAProxy; otherwise
	// through haven's own router, an agent on the client.
	haproxy bool
	// period is the target's own cycle (Patroni's loop_wait, haven's
	// lease): a fault falls at a uniformly random moment of one period.
	period time.Duration
	desc   string
}

var allTargets = []target{
	{name: "patroni", kind: "patroni", haproxy: true, ttl: 30, loopWait: 10, retryTimeout: 10, period: 10 * time.Second,
		desc: "Patroni 3.0.2 at its defaults (ttl 30, loop_wait 10, retry_timeout 10) with synchronous_mode: true, etcd 3.4 (one member per database node, etcd3 API)"},
	{name: "patroni-fast", kind: "patroni", haproxy: true, ttl: 10, loopWait: 2, retryTimeout: 4, period: 2 * time.Second,
		desc: "the same with ttl 10, loop_wait 2, retry_timeout 4: the fastest settings that keep Patroni's rule loop_wait + 2 × retry_timeout ≤ ttl with loop_wait 2"},
	{name: "haven-haproxy", kind: "haven", haproxy: true, lease: 2 * time.Second, period: 2 * time.Second,
		desc: "haven agents (embedded etcd on the three nodes, database mode sync, sync_standbys 1, write fence on) with database.lease 2s (the default), behind the same HAProxy checking haven's Patroni-compatible /primary on the admin port: the comparison with Patroni"},
	{name: "haven", kind: "haven", lease: 2 * time.Second, period: 2 * time.Second,
		desc: "the same haven agents (lease 2s), written to through haven's own router: `database.listen: {primary: \":6432\"}` served by a router-only agent on the client (`database.routers: [client]`), which follows the primary through etcd and closes the connections to a former primary"},
	{name: "haven-fast", kind: "haven", lease: time.Second, period: time.Second,
		desc: "haven's router with database.lease 1s, as in haven's end-to-end test"},
	{name: "haven-fast-haproxy", kind: "haven", haproxy: true, lease: time.Second, period: time.Second,
		desc: "HAProxy in front of haven agents with database.lease 1s"},
}

const defaultTargets = "patroni,patroni-fast,haven-haproxy,haven,haven-fast"

func findTarget(name string) (target, bool) {
	for _, t := range allTargets {
		if t.name == name {
			return t, true
		}
	}
	return target{}, false
}

// routerAddr is where the writer connects: HAProxy's or haven's router,
// both on the client.
func (t target) routerAddr() string {
	if t.haproxy {
		return fmt.Sprintf("%s:%d", hostAddr("client"), routerPort)
	}
	return fmt.Sprintf("%s:%d", hostAddr("client"), havenRouter)
}

// checkPort is the port of the HTTP health endpoint HAProxy checks.
func (t target) checkPort() int {
	if t.kind == "patroni" {
		return patroniPort
	}
	return adminPort
}

// haproxyConf is the client's HAProxy: Patroni's template (a TCP listener,
// `option httpchk` against /primary on the REST port,
// `on-marked-down shutdown-sessions`) with short checks: every 250 ms, down
// after 2 failures, up after 1 success.
const haproxyConf = `# bench/pg: {{.Target}}
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

type haproxyData struct {
	Target, Listen    string
	PGPort, CheckPort int
	Servers           []server
}

func writeHAProxyConf(path string, t target) error {
	d := haproxyData{Target: t.name, Listen: fmt.Sprintf("%s:%d", hostAddr("client"), routerPort), PGPort: pgPort, CheckPort: t.checkPort()}
	for _, n := range nodes {
		d.Servers = append(d.Servers, server{n, hostAddr(n).String()})
	}
	return harness.WriteTemplate(path, haproxyConf, d)
}

// patroniConf is one node's patroni.yml: etcd3 as the DCS (the three
// members), synchronous_mode, pg_rewind and slots, the target's timing,
// and postgres's socket beside its data directory.
const patroniConf = `# bench/pg: {{.Target}} on {{.Node}}
scope: {{.Cluster}}
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
  - host replication replicator 198.18.1.0/24 scram-sha-256
  - host all all 198.18.1.0/24 scram-sha-256
watchdog:
  mode: off
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
`

type patroniData struct {
	Target, Node, Cluster, Addr, Etcd, Dir, Bindir, SuperPass, ReplPass string
	RESTPort, PGPort, TTL, LoopWait, RetryTimeout                       int
}

// writePatroniConf writes node's patroni.yml into dir, its own directory.
func writePatroniConf(path, dir, bindir string, t target, node string) error {
	var etcd []string
	for _, n := range nodes {
		etcd = append(etcd, fmt.Sprintf("%s:%d", hostAddr(n), etcdClient))
	}
	return harness.WriteTemplate(path, patroniConf, patroniData{
		Target: t.name, Node: node, Cluster: clusterName, Addr: hostAddr(node).String(), Etcd: strings.Join(etcd, ", "),
		Dir: dir, Bindir: bindir, SuperPass: superPass, ReplPass: replPass,
		RESTPort: patroniPort, PGPort: pgPort, TTL: t.ttl, LoopWait: t.loopWait, RetryTimeout: t.retryTimeout,
	})
}

// etcdArgs is the command line of node's etcd 3.4 member: one cluster of
// the three database nodes, everything else at etcd's defaults (heartbeat
// 100ms, election timeout 1s).
func etcdArgs(dir, node string) []string {
	var initial []string
	for _, n := range nodes {
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
		"--initial-cluster-token", clusterName,
		"--initial-cluster-state", "new",
		"--logger", "zap", "--log-level", "warn",
	}
}

// havenConf is the one haven.yaml of the three agents, as in
// internal/pg/keeper/e2e_test.go: embedded etcd on the database nodes, sync mode
// with one synchronous standby, the write fence on (the default), and for
// the router targets a router-only agent on the client.
const havenConf = `# bench/pg: {{.Target}}
cluster: {{.Cluster}}
admin: {token_file: {{.Dir}}/token}
regions:
  east:
    nodes:
{{- range .Nodes}}
      {{.Name}}: {address: {{.Addr}}, zone: {{.Zone}}}
{{- end}}
{{- if .Router}}
      client: {address: {{.Client}}, zone: d}
{{- end}}
coordination:
  members: [{{.Members}}]
  data_dir: {{.Dir}}/{node}/etcd
  join_timeout: 20s
database:
  nodes: [{{.Members}}]
  data_dir: {{.Dir}}/{node}/pg
  bindir: {{.Bindir}}
  lease: {{.Lease}}
  replication: {mode: sync, sync_standbys: 1, password_file: {{.Dir}}/replication.password}
  hba: ["host postgres {{.AppUser}} 198.18.1.0/24 scram-sha-256"]
{{- if .Router}}
  listen: {primary: ":{{.RouterPort}}"}
  routers: [client]
{{- end}}
{{- if .Soak}}
# haven drill soak: the fault API on, and what the soak is judged by.
drills: {enabled: true}
objectives: {rto: {{.SoakRTO}}, rpo: 0s}
{{- end}}
`

type havenNode struct{ Name, Addr, Zone string }

type havenData struct {
	Target, Cluster, Dir, Members, Bindir, AppUser, Client string
	Lease                                                  time.Duration
	Nodes                                                  []havenNode
	Router                                                 bool
	RouterPort                                             int
	Soak                                                   bool
	SoakRTO                                                string
}

// writeHavenConf writes haven.yaml, its token and the replication
// password into dir.
func writeHavenConf(dir, bindir string, t target, soak bool) error {
	d := havenData{Target: t.name, Cluster: clusterName, Dir: dir, Members: strings.Join(nodes, ", "), Bindir: bindir, AppUser: appUser,
		Client: hostAddr("client").String(), Lease: t.lease, Router: !t.haproxy, RouterPort: havenRouter, Soak: soak, SoakRTO: soakRTO}
	for i, n := range nodes {
		d.Nodes = append(d.Nodes, havenNode{Name: n, Addr: hostAddr(n).String(), Zone: string(rune('a' + i))})
	}
	for name, content := range map[string]string{"token": "bench-pg\n", "replication.password": replPass + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return harness.WriteTemplate(filepath.Join(dir, "haven.yaml"), havenConf, d)
}
