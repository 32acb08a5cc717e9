package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/testenv"
)

// haven dns serve runs one name server alone: it answers for the zone,
// takes a changed file on SIGHUP, keeps answering when the new file is
// broken, and stops on SIGTERM.
func TestDNSServe(t *testing.T) {
	dnsAddr := freeAddr(t)
	path := filepath.Join(t.TempDir(), "haven.yaml")
	write := func(target string) {
		t.Helper()
		yaml := fmt.Sprintf(`cluster: dns
regions: {r: {nodes: {ns1: {address: 127.0.0.1}}}}
traffic:
  zone: gslb.serve.test.
  nameservers: [ns1]
  listen: %q
  records:
    www: {policy: failover, targets: [{name: a, address: %s}]}
`, dnsAddr, target)
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("127.0.0.21")
	if r := haven(t, 20*time.Second, "dns", "serve", "-n", "nope", "-c", path); r.code != 1 || !strings.Contains(r.stderr, "must be one of traffic.nameservers") {
		t.Errorf("haven dns serve -n nope:\n%s", r)
	}
	p := start(t, "dns", "serve", "-n", "ns1", "-c", path)
	www := func() (bool, string) {
		q := new(dns.Msg)
		q.SetQuestion("www.gslb.serve.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(q, dnsAddr)
		if err != nil || len(r.Answer) != 1 {
			return false, fmt.Sprint(r, err)
		}
		return true, r.Answer[0].(*dns.A).A.String()
	}
	answers := func(want string) {
		t.Helper()
		testenv.Poll(t, 10*time.Second, "www answers "+want, func() (bool, string) {
			ok, got := www()
			return ok && got == want, got
		})
	}
	answers("127.0.0.21")
	write("127.0.0.22")
	p.cmd.Process.Signal(syscall.SIGHUP)
	answers("127.0.0.22")
	if err := os.WriteFile(path, []byte("traffic: [broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Poll(t, 10*time.Second, "the broken file rejected in the log", func() (bool, string) {
		return strings.Contains(p.stderr.String(), "reload rejected"), p.stderr.String()
	})
	if ok, got := www(); !ok || got != "127.0.0.22" {
		t.Errorf("after a broken reload: %s, want the running answer", got)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("haven dns serve exited %d after SIGTERM", code)
	}
}

// With coordination, haven dns drain is a record in etcd: one call drains
// the target on every name server, the answers leave it out, and the
// drain is still there after the name server's agent restarts (haven
// restart); haven dns enable removes it.
func TestDNSDrainRecordSurvivesRestart(t *testing.T) {
	backend := startBackend(t, "app1")
	admin, listen, dnsAddr, client, peer := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	port := func(a string) string { return a[strings.LastIndex(a, ":")+1:] }
	path := filepath.Join(t.TempDir(), "haven.yaml")
	doc := fmt.Sprintf(`traffic:
  zone: e2e.test.
  nameservers: [lb1]
  listen: %q
  records:
    www: {policy: all, targets: [{name: a, address: 127.0.0.9}, {name: b, address: 127.0.0.10}]}
`, dnsAddr) + e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: backend}}, "") +
		fmt.Sprintf("coordination: {members: [lb1], client_port: %s, peer_port: %s, data_dir: %q}\n", port(client), port(peer), filepath.Join(testenv.MemoryDir(t), "{node}"))
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	start(t, "agent", "-c", path, "-n", "lb1")
	// answers is what www answers, or why the name server did not answer
	// (while the agent starts, its DNS port may not listen yet: a poll
	// must not end the test on that).
	answers := func() string {
		q := new(dns.Msg)
		q.SetQuestion("www.e2e.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, dnsAddr)
		if err != nil {
			return "no answer: " + err.Error()
		}
		var out []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				out = append(out, a.A.String())
			}
		}
		return strings.Join(out, " ")
	}
	testenv.Poll(t, time.Minute, "the agent connected to etcd and answering both targets", func() (bool, string) {
		r := haven(t, 20*time.Second, "status", "-c", path)
		got := answers()
		return r.code == 0 && strings.Contains(r.stdout, "lb1: ready") && got == "127.0.0.9 127.0.0.10", r.String() + "\nwww answers: " + got
	})
	r := haven(t, 30*time.Second, "dns", "drain", "www", "a", "--for", "10m", "--reason", "maintenance in east", "-c", path)
	if r.code != 0 || !strings.Contains(r.stdout, "www/a drained for 10m0s on every name server (recorded in etcd through lb1)") {
		t.Fatalf("haven dns drain: %s", r)
	}
	if got := answers(); got != "127.0.0.10" {
		t.Errorf("www answers %q after the drain; want only b's 127.0.0.10", got)
	}
	if r := haven(t, 3*time.Minute, "restart", "-c", path); r.code != 0 {
		t.Fatalf("haven restart: %s", r)
	}
	if r := haven(t, 20*time.Second, "dns", "status", "-c", path); !strings.Contains(r.stdout, "a 127.0.0.9 drained until") {
		t.Errorf("haven dns status after the restart:\n%s\nwant a still drained", r)
	}
	if got := answers(); got != "127.0.0.10" {
		t.Errorf("www answers %q after the restart; want only b's 127.0.0.10 (the drain is kept in etcd)", got)
	}
	r = haven(t, 30*time.Second, "dns", "enable", "www", "a", "-c", path)
	if r.code != 0 || !strings.Contains(r.stdout, "www/a enabled on every name server") {
		t.Fatalf("haven dns enable: %s", r)
	}
	testenv.Poll(t, 10*time.Second, "www answering both targets again", func() (bool, string) {
		got := answers()
		return got == "127.0.0.9 127.0.0.10", got
	})
}
