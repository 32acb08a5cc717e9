package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// packages are the Debian packages the PowerDNS cells and dnsperf need.
var packages = []string{"dnsperf", "pdns-server", "pdns-backend-bind"}

// setup installs what is missing, builds haven, and records the machine
// and the versions for the report.
func (b *bench) setup(ctx context.Context) error {
	if _, err := exec.LookPath("taskset"); err != nil {
		return fmt.Errorf("needs taskset (util-linux): %w", err)
	}
	if err := b.opt.install.Ensure(ctx, packages...); err != nil { // dnsperf: every cell
		return err
	}
	if b.wants("haven") {
		b.havenBin, b.havenErr = harness.BuildHaven(ctx, b.root, b.dir)
		if b.havenErr != nil {
			harness.Logf("haven: %v", b.havenErr)
		}
	}
	b.machine = append(harness.Machine(), "load average at start: "+harness.LoadAverage())
	b.describeVersions(ctx)
	for _, l := range append(slices.Clone(b.machine), b.versions...) {
		harness.Logf("%s", l)
	}
	return nil
}

// wants reports whether the run needs a server of kind.
func (b *bench) wants(kind string) bool {
	for _, s := range b.neededServers() {
		if sv, _ := findServer(s); sv.kind == kind {
			return true
		}
	}
	return false
}

// neededServers are the servers the cells and the change runs ask, in
// allServers' order.
func (b *bench) neededServers() []string {
	need := map[string]bool{}
	for _, n := range b.opt.cells {
		c, _ := findCell(n)
		need[c.server] = true
	}
	if b.opt.changeRuns > 0 {
		for _, s := range changeServers {
			need[s] = true
		}
	}
	var out []string
	for _, s := range allServers {
		if need[s.name] {
			out = append(out, s.name)
		}
	}
	return out
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	haven := harness.HavenVersion(ctx, b.root, true)
	if b.havenErr != nil {
		haven += " (build failed)"
	}
	pdns := "PowerDNS: not used"
	if b.wants("pdns") {
		pdns = "PowerDNS Authoritative Server"
		if v, err := harness.PackageVersion("pdns-server"); err == nil {
			pdns += " " + v + " (Debian packages pdns-server, pdns-backend-bind)"
		}
	}
	dnsperf := "dnsperf"
	if v, err := harness.PackageVersion("dnsperf"); err == nil {
		dnsperf += " " + v
	}
	gover, _ := harness.Run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = []string{haven, pdns, dnsperf, harness.FirstLine(gover)}
}

// freePort returns a port that is free for both TCP and UDP on host now.
func freePort(host string) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both TCP and UDP on %s after 20 tries", host)
}

// startAll picks the ports, starts the targets' listeners and every server
// the run needs, and waits until each answers. A server that fails is
// noted for its rows; the others still run.
func (b *bench) startAll(ctx context.Context) error {
	var err error
	b.ports.dns = map[string]int{}
	if b.ports.backend, err = freePort(primaryIP); err != nil {
		return err
	}
	b.ports.admin = map[string]int{}
	b.primary = &backend{addr: net.JoinHostPort(primaryIP, fmt.Sprint(b.ports.backend))}
	b.backup = &backend{addr: net.JoinHostPort(backupIP, fmt.Sprint(b.ports.backend))}
	if err := errors.Join(b.primary.up(), b.backup.up()); err != nil {
		return err
	}
	for _, name := range b.neededServers() {
		if b.ports.dns[name], err = freePort("127.0.0.1"); err != nil {
			return err
		}
		if b.ports.admin[name], err = freePort("127.0.0.1"); err != nil {
			return err
		}
	}
	for _, name := range b.neededServers() {
		s, _ := findServer(name)
		if err := b.startServer(ctx, s); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			harness.Logf("%s: %v", name, err)
			b.serverErr[name] = err.Error()
			if p := b.servers[name]; p != nil {
				b.procs.kill(p)
				delete(b.servers, name)
			}
			continue
		}
		harness.Logf("%s: answering on 127.0.0.1:%d", name, b.ports.dns[name])
	}
	return nil
}

// startServer writes s's configuration, starts it on CPU 0 and waits
// until it answers.
func (b *bench) startServer(ctx context.Context, s server) error {
	dir := filepath.Join(b.dir, "srv-"+s.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	port := b.ports.dns[s.name]
	var argv []string
	switch s.kind {
	case "pdns":
		files := map[string]string{
			"pdns.conf":  pdnsConf(s, dir, port),
			"named.conf": namedConf(dir),
			"bench.zone": zoneFile(b.ports.backend),
		}
		for f, text := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
				return err
			}
		}
		argv = []string{"taskset", "-c", "0", "pdns_server", "--config-dir=" + dir}
	case "haven":
		if b.havenErr != nil {
			return b.havenErr
		}
		conf := filepath.Join(dir, "haven.yaml")
		if err := os.WriteFile(conf, []byte(havenConf(b.ports, s, dir)), 0o644); err != nil {
			return err
		}
		argv = []string{"taskset", "-c", "0", b.havenBin, "agent", "-c", conf, "-n", "ns1"}
	}
	p, err := b.procs.start(s.name, argv...)
	if err != nil {
		return err
	}
	b.servers[s.name] = p
	if err := waitAnswering(ctx, port, 30*time.Second); err != nil {
		return fmt.Errorf("%w; its log: %s", err, p.tail(5))
	}
	// Ask the Lua record once, so that PowerDNS starts its checks.
	_, _ = query(ctx, port, "www", false)
	return nil
}
