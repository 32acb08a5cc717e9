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
