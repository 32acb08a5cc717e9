package gtm

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// queryLine is a query log line: time, client, transport, name, type,
// rcode, answers, tc.
var queryLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 127\.0\.0\.1 (udp|tcp) (\S+) (\S+) (\S+)((?: \S+)*)$`)

// TestQueryLog: with a sample of 1 every query, over UDP and TCP, is a
// line saying who asked what and what it got; with a sample of 10, one
// query in ten is; a name with quotes and spaces stays one field; a new
// call (a reload) reopens the path.
func TestQueryLog(t *testing.T) {
	s, addr := startServer(t, testZone())
	path := filepath.Join(t.TempDir(), "dns.log")
	if err := s.SetQueryLog(&config.QueryLog{Path: path, Sample: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.SetQueryLog(nil) })
	ask(t, addr, "udp", "www.gslb.shop.example.", dns.TypeA, 1232)
	ask(t, addr, "tcp", "api.v1.gslb.shop.example.", dns.TypeA, 0)
	ask(t, addr, "udp", "nope.gslb.shop.example.", dns.TypeAAAA, 0)
	ask(t, addr, "udp", "big.gslb.shop.example.", dns.TypeAAAA, 0)
	ask(t, addr, "udp", "we\"ird\\032x.gslb.shop.example.", dns.TypeA, 0)
	lines := waitLines(t, path, 5)
	want := [][]string{
		{"udp", "www.gslb.shop.example.", "A", "NOERROR", " 198.18.1.100"},
		{"tcp", "api.v1.gslb.shop.example.", "A", "NOERROR", " 198.18.1.101 198.18.1.102"},
		{"udp", "nope.gslb.shop.example.", "AAAA", "NXDOMAIN", ""},
	}
	for i, w := range want {
		m := queryLine.FindStringSubmatch(lines[i])
		if m == nil || strings.Join(m[1:], "|") != strings.Join(w, "|") {
			t.Errorf("line %d %q, want %v", i, lines[i], w)
		}
	}
	if !strings.HasSuffix(lines[3], " tc") {
		t.Errorf("a truncated answer's line %q does not end in tc", lines[3])
	}
	// The name stays one field, in DNS's own escaped text form.
	if m := queryLine.FindStringSubmatch(lines[4]); m == nil || m[2] != `we\"ird\\032x.gslb.shop.example.` {
		t.Errorf("the odd name's line %q: want the name as one escaped field", lines[4])
	}

	// One in ten, to a new file (as a reload after logrotate).
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQueryLog(&config.QueryLog{Path: path, Sample: 10}); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		ask(t, addr, "udp", "www.gslb.shop.example.", dns.TypeA, 0)
	}
	if got := waitLines(t, path, 3); len(got) != 3 {
		t.Errorf("30 queries sampled one in ten: %d lines", len(got))
	}
	if err := s.SetQueryLog(&config.QueryLog{Path: filepath.Join(t.TempDir(), "no", "dir.log"), Sample: 1}); err == nil {
		t.Error("a query log in a missing directory was opened")
	}
}

func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testenv.Poll(t, 10*time.Second, "query log lines", func() (bool, string) {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0 && len(lines) >= n, string(b)
	})
	return lines
}
