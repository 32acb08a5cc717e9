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

// The topology: three nodes and a client on one bridge (netlab gives the
// i-th host 198.18.1.(10+i)), the floating address on the nodes' eth0.
var (
	nodes     = []string{"n1", "n2", "n3"}
	hosts     = append(append([]string{}, nodes...), "client")
	priority  = map[string]int{"n1": 150, "n2": 100, "n3": 50}
	vipAddr   = netip.MustParseAddr("198.18.1.100")
	vipPrefix = netip.PrefixFrom(vipAddr, 24)
	probePort = uint16(7777)
)

const (
	havenLease     = 500 * time.Millisecond // the default
	havenFastLease = 300 * time.Millisecond
	backendPort    = 9000
	adminPort      = 9900
	vrid           = 51
)

// target is one implementation of the floating address.
type target struct {
	name string
	kind string // "keepalived" or "haven"
	// period is the interval of its heartbeats: VRRP's advert_int, or
	// haven's renewal period (lease/4). Faults fall at a uniformly random
	// moment within one period.
	period time.Duration
	// advert is keepalived's advert_int as written in its configuration.
	advert string
	// vrrp3 selects VRRP version 3 (keepalived's default is 2).
	vrrp3 bool
	// lease is haven's vip lease.
	lease time.Duration
	desc  string
}

var allTargets = []target{
	{name: "keepalived", kind: "keepalived", period: time.Second, advert: "1",
		desc: "keepalived 2.2.7 with its defaults: VRRPv2, advert_int 1, multicast to 224.0.0.18, preempt"},
	{name: "keepalived-fast", kind: "keepalived", period: 100 * time.Millisecond, advert: "0.1", vrrp3: true,
		desc: "keepalived 2.2.7 with vrrp_version 3 and advert_int 0.1, otherwise its defaults"},
	{name: "haven", kind: "haven", period: havenLease / 4, lease: havenLease,
		desc: "haven agents (embedded etcd on all three nodes, a balancer with the floating address), lease 500ms (the default), preempt (the default)"},
	{name: "haven-fast", kind: "haven", period: havenFastLease / 4, lease: havenFastLease,
		desc: "the same haven agents with lease 300ms: haven's answer to keepalived-fast"},
}

func findTarget(name string) (target, bool) {
	for _, t := range allTargets {
		if t.name == name {
			return t, true
		}
	}
	return target{}, false
}

// keepalivedConf is one node's keepalived.conf. Everything not written here
// is keepalived's default: no `state` (every node starts as BACKUP and the
// best takes over when it hears no master), preempt, no authentication,
// multicast adverts, gratuitous ARPs at once on becoming master
// (garp_master_delay, default 5s, only delays the second burst).
const keepalivedConf = `# bench/vip: {{.Target}} on {{.Node}}
global_defs {
    router_id {{.Node}}
{{- if .VRRP3}}
    vrrp_version 3
{{- end}}
}

vrrp_instance VI_1 {
    interface eth0
    virtual_router_id {{.VRID}}
    priority {{.Priority}}
    advert_int {{.Advert}}
    virtual_ipaddress {
        {{.VIP}} dev eth0
    }
}
`

// havenConf is the one haven.yaml of the three agents, as in
// internal/vip/e2e_test.go, with keepalived's priorities. The notify hook
// records the fencing epoch for the responder.
const havenConf = `# bench/vip: haven
cluster: benchvip
admin: {token_file: {{.Dir}}/token}
regions:
  east:
    nodes:
{{- range .Nodes}}
      {{.Name}}: {address: {{.Addr}}, zone: {{.Zone}}}
{{- end}}
coordination:
  members: [{{.Members}}]
  data_dir: {{.Dir}}/{node}/etcd
  join_timeout: 20s
checks:
  local: {http: {port: {{.BackendPort}}, path: /healthz}, interval: 200ms, timeout: 100ms, rise: 1, fall: 2}
balancers:
  web:
    nodes: [{{.Members}}]
    listen: "{{.VIPAddr}}:8080"
    check: local
    vip:
      address: {{.VIP}}
      priority: { {{- .Priorities -}} }
      lease: {{.Lease}}
      notify:
        holder: [sh, -c, 'echo "$HAVEN_EPOCH" > {{.Dir}}/$HAVEN_NODE.epoch.tmp && mv {{.Dir}}/$HAVEN_NODE.epoch.tmp {{.Dir}}/$HAVEN_NODE.epoch']
    backends: [{address: "127.0.0.1:{{.BackendPort}}"}]
`

type keepalivedData struct {
	Target, Node, Advert, VIP string
	VRRP3                     bool
	VRID, Priority            int
}

func writeKeepalivedConf(path string, t target, node string) error {
	return harness.WriteTemplate(path, keepalivedConf, keepalivedData{
		Target: t.name, Node: node, Advert: t.advert, VIP: vipPrefix.String(),
		VRRP3: t.vrrp3, VRID: vrid, Priority: priority[node],
	})
}

type havenNode struct{ Name, Addr, Zone string }

type havenData struct {
	Dir, Members, Priorities, VIP, VIPAddr string
	Lease                                  time.Duration
	Nodes                                  []havenNode
	BackendPort                            int
}

// nodeAddr is netlab's address of the i-th host (from 0).
func nodeAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)}) }

func writeHavenConf(path, dir string, lease time.Duration) error {
	d := havenData{Dir: dir, Members: strings.Join(nodes, ", "), VIP: vipPrefix.String(), VIPAddr: vipAddr.String(),
		Lease: lease, BackendPort: backendPort}
	var prio []string
	for i, n := range nodes {
		d.Nodes = append(d.Nodes, havenNode{Name: n, Addr: nodeAddr(i).String(), Zone: string(rune('a' + i))})
		prio = append(prio, fmt.Sprintf("%s: %d", n, priority[n]))
	}
	d.Priorities = strings.Join(prio, ", ")
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("bench-vip\n"), 0o600); err != nil {
		return err
	}
	return harness.WriteTemplate(path, havenConf, d)
}
