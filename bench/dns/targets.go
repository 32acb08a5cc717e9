package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// The zone every server answers for, and the names in it.
const (
	zone      = "bench.example."
	primaryIP = "127.0.0.21" // the first target: the one that dies in the change runs
	backupIP  = "127.0.0.22"
	ecsOption = "8:000118000a0000" // dnsperf -E: ECS (code 8), IPv4, source /24, scope 0, 10.0.0.0
)

// server is one name server the run starts: a PowerDNS in one of its
// modes, or haven.
type server struct {
	name string
	kind string // "pdns" or "haven"
	// lua is PowerDNS's enable-lua-records: "yes" or "shared".
	lua string
	// checkInterval is PowerDNS's lua-health-checks-interval in seconds
	// (0: the default, 5).
	checkInterval int
	// querySample is haven's traffic.query_log sample (0: no query log).
	querySample int
	desc        string
}

var allServers = []server{
	{name: "pdns", kind: "pdns", lua: "yes",
		desc: "PowerDNS with `enable-lua-records=yes`: every Lua record runs in a Lua state of the thread that answers, and is not served from the packet cache"},
	{name: "pdns-shared", kind: "pdns", lua: "shared",
		desc: "the same with `enable-lua-records=shared`: one Lua state for every Lua record of the thread (state kept between queries)"},
	{name: "pdns-fast", kind: "pdns", lua: "yes", checkInterval: 1,
		desc: "the same as pdns with `lua-health-checks-interval=1` (only for the change runs)"},
	{name: "haven", kind: "haven",
		desc: "`haven agent` with only the traffic role: one node, 127.0.0.1, answering for the zone; its check `web` probes GET /healthz every 1s (timeout 500ms, rise 2, fall 2)"},
	{name: "haven-qlog", kind: "haven", querySample: 100,
		desc: "the same with `traffic.query_log` on, its default sample: one query in 100 logged to a file"},
	{name: "haven-qlog-all", kind: "haven", querySample: 1,
		desc: "the same with `query_log.sample: 1`: every query logged to a file"},
}

func findServer(name string) (server, bool) {
	for _, s := range allServers {
		if s.name == name {
			return s, true
		}
	}
	return server{}, false
}

// cell is one QPS measurement: dnsperf asking one server one name.
type cell struct {
	name   string
	server string
	qname  string // relative to zone
	ecs    bool   // ECS on every query
	edns   bool   // an OPT record without options on every query (dnsperf -e)
	desc   string
}

var allCells = []cell{
	{name: "pdns-static", server: "pdns", qname: "static", desc: "PowerDNS, a static A record (bind backend; served from the packet cache)"},
	{name: "pdns-lua", server: "pdns", qname: "www", desc: "PowerDNS, the Lua record `ifportup(PORT, {'127.0.0.21', '127.0.0.22'})`, default mode"},
	{name: "pdns-lua-shared", server: "pdns-shared", qname: "www", desc: "PowerDNS, the same Lua record with `enable-lua-records=shared`"},
	{name: "haven-static", server: "haven", qname: "static", desc: "haven, `static`: policy all, one target without a check (haven's nearest to a static record)"},
	{name: "haven-failover", server: "haven", qname: "www", desc: "haven, `www`: policy failover over 127.0.0.21 and 127.0.0.22, both checked by `web` (a health-checked answer)"},
	{name: "haven-failover-qlog", server: "haven-qlog", qname: "www", desc: "haven, `www`, with the query log on (one query in 100)"},
	{name: "haven-failover-qlog-all", server: "haven-qlog-all", qname: "www", desc: "haven, `www`, with every query logged"},
	{name: "haven-failover-edns", server: "haven", qname: "www", edns: true, desc: "haven, `www` with EDNS but no ECS on every query (an OPT record without options: the baseline of the ECS cell without the option)"},
	{name: "haven-failover-ecs", server: "haven", qname: "www", ecs: true, desc: "haven, `www` with ECS 10.0.0.0/24 on every query"},
	{name: "haven-hashed", server: "haven", qname: "hashed", desc: "haven, `hashed`: policy hashed over the same checked targets, hashing the client's address (127.0.0.1)"},
	{name: "haven-hashed-edns", server: "haven", qname: "hashed", edns: true, desc: "haven, `hashed` with EDNS but no ECS on every query"},
	{name: "haven-hashed-ecs", server: "haven", qname: "hashed", ecs: true, desc: "haven, `hashed` with ECS 10.0.0.0/24 on every query (answered with scope /24)"},
}

const defaultCells = "pdns-static,pdns-lua,pdns-lua-shared,haven-static,haven-failover,haven-failover-qlog,haven-failover-qlog-all,haven-failover-edns,haven-failover-ecs,haven-hashed,haven-hashed-edns,haven-hashed-ecs"

func findCell(name string) (cell, bool) {
	for _, c := range allCells {
		if c.name == name {
			return c, true
		}
	}
	return cell{}, false
}

// changeServers are the servers whose answer-change time is measured,
// with the name asked.
var changeServers = []string{"pdns", "pdns-fast", "haven"}

// ports are the loopback ports of one run.
type ports struct {
	dns     map[string]int // server name → its UDP and TCP port on 127.0.0.1
	admin   map[string]int // a haven server's admin listener on 127.0.0.1
	backend int            // the targets' HTTP port on 127.0.0.21 and 127.0.0.22
}

// pdnsConf renders pdns.conf for s: the bind backend reading the zone in
// dir, listening on 127.0.0.1:port only, in the foreground.
func pdnsConf(s server, dir string, port int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "launch=bind\nbind-config=%s/named.conf\n", dir)
	fmt.Fprintf(&sb, "local-address=127.0.0.1\nlocal-port=%d\n", port)
	fmt.Fprintf(&sb, "socket-dir=%s\n", dir)
	sb.WriteString("daemon=no\nguardian=no\ndisable-syslog=yes\nwebserver=no\napi=no\nloglevel=4\n")
	fmt.Fprintf(&sb, "enable-lua-records=%s\n", s.lua)
	if s.checkInterval > 0 {
		fmt.Fprintf(&sb, "lua-health-checks-interval=%d\n", s.checkInterval)
	}
	return sb.String()
}

// namedConf is the bind backend's list of zones: ours.
func namedConf(dir string) string {
	return fmt.Sprintf("zone %q { type master; file %q; };\n", strings.TrimSuffix(zone, "."), dir+"/bench.zone")
}

// zoneFile is the zone PowerDNS serves: the same names as haven's.
func zoneFile(backendPort int) string {
	return fmt.Sprintf(`$ORIGIN %[1]s
@      3600 IN SOA ns1.%[1]s hostmaster.%[1]s 1 3600 600 86400 30
@      3600 IN NS  ns1
ns1    3600 IN A   127.0.0.1
static 20   IN A   %[2]s
www    20   IN LUA A "ifportup(%[4]d, {'%[2]s', '%[3]s'})"
`, zone, primaryIP, backupIP, backendPort)
}

// havenConf renders haven.yaml: one node, ns1 at 127.0.0.1, the name
// server of the zone, with the records the cells ask for.
func havenConf(p ports, s server, dir string) string {
	queryLog := ""
	if s.querySample > 0 {
		queryLog = fmt.Sprintf("  query_log: {path: %q, sample: %d}\n", filepath.Join(dir, "queries.log"), s.querySample)
	}
	return fmt.Sprintf(`cluster: benchdns
regions:
  local:
    nodes:
      ns1: {address: 127.0.0.1, admin: "127.0.0.1:%[1]d"}
checks:
  web:
    http: {port: %[2]d, path: /healthz, expect_status: [200]}
    interval: 1s
    timeout: 500ms
    rise: 2
    fall: 2
traffic:
  zone: %[3]s
  nameservers: [ns1]
  listen: "127.0.0.1:%[4]d"
%[7]s  records:
    static:
      policy: all
      ttl: 20s
      targets:
        - {name: a, address: %[5]s}
    www:
      policy: failover
      ttl: 20s
      targets:
        - {name: east, address: %[5]s, check: web}
        - {name: west, address: %[6]s, check: web}
    hashed:
      policy: hashed
      ttl: 20s
      targets:
        - {name: east, address: %[5]s, check: web}
        - {name: west, address: %[6]s, check: web}
`, p.admin[s.name], p.backend, zone, p.dns[s.name], primaryIP, backupIP, queryLog)
}
