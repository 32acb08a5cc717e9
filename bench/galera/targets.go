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

// The network: three database nodes and a client on one bridge.
var (
	nodes = []string{"db1", "db2", "db3"}
	hosts = append(append([]string{}, nodes...), "client")
	// vip is keepalived's database address (the guide's).
	vip = netip.MustParseAddr("198.18.1.100")
)

const (
	sqlPort       = 3306
	checkPort     = 9200 // clustercheck's, as Percona's xinetd service
	routerPort    = 3306 // HAProxy's and haven's router on the client
	appUser       = "app"
	appPassword   = "bench-app-password"
	database      = "bench"
	clusterName   = "benchgalera"
	vrrpID        = 51
	bufferPool    = "32M" // every server alike: three run on one small machine
	galeraDefault = 5 * time.Second
)

// hostAddr is a host's address: the i-th host, from 1, gets
// 198.18.1.(10+i).
func hostAddr(name string) netip.Addr {
	for i, h := range hosts {
		if h == name {
			return netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)})
		}
	}
	panic("bench/galera: unknown host " + name)
}

// target is one way of running the cluster.
type target struct {
	name string
	kind string // "guide" (mariadbd started by hand) or "haven"
	// router is what takes the writes to a node: "keepalived" (the
	// writer connects to the database address), "haproxy" (HAProxy on
	// the client) or "" (haven's router on the client).
	router string
	// period is the cycle faults fall at a random moment of: keepalived's
	// advert_int, HAProxy's check interval, haven's writer lease.
	period time.Duration
	desc   string
}

const defaultTargets = "keepalived,haproxy,haven"

var allTargets = []target{
	{name: "keepalived", kind: "guide", router: "keepalived", period: time.Second,
		desc: "the guide's architecture: MariaDB Galera at its defaults on each node (`evs.suspect_timeout` PT5S, `evs.inactive_timeout` PT15S, `pc.recovery` on), started by hand (`--wsrep-new-cluster` on db1, then the others), and keepalived on each node moving the database address 198.18.1.100 (VRRP at its defaults: advert_int 1, priorities 103/102/101, preempt) with a `vrrp_script` that fails unless `wsrep_local_state` is 4 (keepalived's default interval 1s); the writer connects to the database address"},
	{name: "haproxy", kind: "guide", router: "haproxy", period: 2 * time.Second,
		desc: "the same Galera nodes behind HAProxy on the client as Percona documents it: `mode tcp`, `option httpchk` against a clustercheck service on each node's port 9200 (200 when `wsrep_local_state` is 4, else 503: Percona's clustercheck at its defaults), db1 the one writer and db2, db3 `backup`, HAProxy's default check timing (inter 2s, fall 3, rise 2) with `timeout connect 1s` and `timeout check 1s`"},
	{name: "haven", kind: "haven", router: "", period: 500 * time.Millisecond,
		desc: "haven agents (`database.engine: galera`, every default: failure_detection 5s, writer lease 500ms, writers one) with embedded etcd on the three nodes, and a router-only agent on the client; the writer connects to the client's router"},
}

func findTarget(name string) (target, bool) {
	for _, t := range allTargets {
		if t.name == name {
			return t, true
		}
	}
	return target{}, false
}

// routerAddr is where the writer connects, from the client.
func (t target) routerAddr() string {
	if t.router == "keepalived" {
		return fmt.Sprintf("%s:%d", vip, sqlPort)
	}
	return fmt.Sprintf("127.0.0.1:%d", routerPort)
}

// peerConf is one node's my.cnf for the guide's stack: what a person
// following Galera's documentation writes; every provider option is
// Galera's default. The server listens on every address (MariaDB's
// default): the database address comes and goes.
const peerConf = `# bench/galera: {{.Node}}
[mysqld]
datadir = {{.Dir}}/data
socket = {{.Dir}}/mysqld.sock
pid_file = {{.Dir}}/mysqld.pid
log_error = {{.Dir}}/mariadb.log
port = {{.Port}}
binlog_format = ROW
default_storage_engine = InnoDB
innodb_autoinc_lock_mode = 2
innodb_buffer_pool_size = {{.BufferPool}}
performance_schema = OFF
skip_name_resolve = ON
wsrep_on = ON
wsrep_provider = {{.Provider}}
wsrep_cluster_name = {{.Cluster}}
wsrep_cluster_address = gcomm://{{.Peers}}
wsrep_node_name = {{.Node}}
wsrep_node_address = {{.Addr}}
wsrep_sst_method = mariabackup
wsrep_sst_auth = mysql:
`

type peerConfData struct {
	Node, Dir, Addr, Provider, Cluster, Peers, BufferPool string
	Port                                                  int
}

func writePeerConf(path, dir, node, provider string) error {
	var peers []string
	for _, n := range nodes {
		peers = append(peers, hostAddr(n).String())
	}
	return harness.WriteTemplate(path, peerConf, peerConfData{Node: node, Dir: dir, Addr: hostAddr(node).String(),
		Provider: provider, Cluster: clusterName, Peers: strings.Join(peers, ","), BufferPool: bufferPool, Port: sqlPort})
}

// keepalivedConf moves the database address to a synced node. Everything
// not written is keepalived's default.
const keepalivedConf = `# bench/galera: keepalived on {{.Node}}
global_defs {
    router_id {{.Node}}
    script_user root
}

vrrp_script chk_galera {
    script "{{.Check}}"
}

vrrp_instance galera {
    interface eth0
    virtual_router_id {{.VRID}}
    priority {{.Priority}}
    advert_int 1
    virtual_ipaddress {
        {{.VIP}}/24 dev eth0
    }
    track_script {
        chk_galera
    }
}
`

// checkScript is keepalived's check: the node is synced.
const checkScript = `#!/bin/sh
# bench/galera: keepalived's check on {{.Node}}: wsrep_local_state is 4 (Synced).
{{.Client}} --socket={{.Socket}} -u root --connect-timeout=1 -N -B -e "SHOW GLOBAL STATUS LIKE 'wsrep_local_state'" | grep -q '^wsrep_local_state[[:space:]]*4$'
`

type keepalivedData struct {
	Node, Check, VIP, Client, Socket string
	VRID, Priority                   int
}

// writeKeepalived writes keepalived.conf and its check script into dir,
// for the server whose socket is socket.
func writeKeepalived(dir, node, client, socket string) error {
	d := keepalivedData{Node: node, Check: filepath.Join(dir, "chk_galera.sh"), VIP: vip.String(), Client: client,
		Socket: socket, VRID: vrrpID, Priority: 104 - nodeIndex(node)}
	if err := harness.WriteTemplate(d.Check, checkScript, d); err != nil {
		return err
	}
	if err := os.Chmod(d.Check, 0o755); err != nil {
		return err
	}
	return harness.WriteTemplate(filepath.Join(dir, "keepalived.conf"), keepalivedConf, d)
}

func nodeIndex(node string) int {
	for i, n := range nodes {
		if n == node {
			return i + 1
		}
	}
	return 0
}

// haproxyConf is Percona's documented HAProxy in front of a Galera
// cluster: one writer, the others backups, a clustercheck HTTP check; the
// check's timing is HAProxy's default.
const haproxyConf = `# bench/galera: HAProxy with clustercheck
global
    maxconn 200

defaults
    mode tcp
    timeout client 30m
    timeout server 30m
    timeout connect 1s
    timeout check 1s

listen galera
    bind 127.0.0.1:{{.Port}}
    option httpchk
{{- range $i, $s := .Servers}}
    server {{$s.Name}} {{$s.Addr}}:{{$.SQLPort}} check port {{$.CheckPort}}{{if $i}} backup{{end}}
{{- end}}
`

type server struct{ Name, Addr string }

func writeHAProxyConf(path string) error {
	d := struct {
		Port, SQLPort, CheckPort int
		Servers                  []server
	}{Port: routerPort, SQLPort: sqlPort, CheckPort: checkPort}
	for _, n := range nodes {
		d.Servers = append(d.Servers, server{n, hostAddr(n).String()})
	}
	return harness.WriteTemplate(path, haproxyConf, d)
}

// havenConf is the one haven.yaml of the agents: the Galera engine at its
// defaults, the same server settings as the peer's.
const havenConf = `# bench/galera: haven
cluster: {{.Cluster}}
admin: {token_file: {{.Dir}}/token}
regions:
  lab:
    nodes:
{{- range .Hosts}}
      {{.Name}}: {address: {{.Addr}}, zone: {{.Zone}}}
{{- end}}
coordination:
  members: [{{.Nodes}}]
  data_dir: {{.Dir}}/{node}/etcd
database:
  engine: galera
  nodes: [{{.Nodes}}]
  data_dir: {{.Dir}}/{node}/galera
  listen: {primary: ":{{.Port}}"}
  routers: [client]
  settings:
    innodb_buffer_pool_size: {{.BufferPool}}
    performance_schema: "OFF"
`

type havenHost struct{ Name, Addr, Zone string }

func writeHavenConf(dir string) error {
	d := struct {
		Cluster, Dir, Nodes, BufferPool string
		Port                            int
		Hosts                           []havenHost
	}{Cluster: clusterName, Dir: dir, Nodes: strings.Join(nodes, ", "), BufferPool: bufferPool, Port: routerPort}
	for i, h := range hosts {
		d.Hosts = append(d.Hosts, havenHost{h, hostAddr(h).String(), string(rune('a' + i%3))})
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("bench-galera-token\n"), 0o600); err != nil {
		return err
	}
	return harness.WriteTemplate(filepath.Join(dir, "haven.yaml"), havenConf, d)
}
