package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://127.0.0.1:18081/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms  412.00us  12.10ms   90.12%
    Req/Sec    21.70k     1.02k   23.10k    71.00%
  215970 requests in 10.00s, 31.07MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  21596.31
Transfer/sec:      3.11MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 215970 || r.Seconds != 10 || r.RPS != 21596.31 || r.Non2xx != 7 || r.SockErr != 5 || r.SockDesc != "read 3, timeout 2" {
		t.Errorf("parseWrk = %+v", r)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Error("parseWrk of a failed run: want an error")
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may choose.
	line := "4242 (nginx: (worker) x) S 4241 4241 4241 0 -1 4194624 100 0 0 0 150 50 7 3 20 0 1 0 123 1000 200 18446744073709551615"
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.pid != 4242 || st.ppid != 4241 || st.ticks != 150+50+7+3 {
		t.Errorf("parseStat = %+v", st)
	}
	self, err := os.ReadFile("/proc/self/stat")
	testenv.Need(t, err == nil, "needs /proc: %v", err)
	if st, err := parseStat(string(self)); err != nil || st.pid != os.Getpid() {
		t.Errorf("parseStat(/proc/self/stat) = %+v, %v", st, err)
	}
}

func TestParseVmRSS(t *testing.T) {
	if got := parseVmRSS("Name:\thaproxy\nVmRSS:\t   31720 kB\nRssAnon:\t1 kB\n"); got != 31720 {
		t.Errorf("parseVmRSS = %d", got)
	}
	if got := parseVmRSS("Name:\tkthreadd\n"); got != 0 {
		t.Errorf("parseVmRSS without VmRSS = %d", got)
	}
}

func TestTreeCPUAndRSS(t *testing.T) {
	_, err := os.Stat("/proc/self/stat")
	testenv.Need(t, err == nil, "needs /proc: %v", err)
	if treeRSS(os.Getpid()) <= 0 {
		t.Error("treeRSS of this process is 0")
	}
	// Burn a little CPU and see it counted.
	before := treeCPU(os.Getpid())
	deadline := time.Now().Add(200 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	if after := treeCPU(os.Getpid()); after <= before {
		t.Errorf("treeCPU did not grow: %v then %v (x=%d)", before, after, x)
	}
}

// TestConfigs renders every proxy's configuration in every mode and, where
// the proxy is installed, has it check the file. haven's is checked by
// haven's own config package, so that the benchmark follows the contract.
func TestConfigs(t *testing.T) {
	b := &bench{dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(b.dir, "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"http", "tcp"} {
		for _, failover := range []bool{false, true} {
			name := mode
			if failover {
				name += "-failover"
			}
			t.Run("haven-"+name, func(t *testing.T) {
				path := filepath.Join(b.dir, "haven.yaml")
				if err := harness.WriteTemplate(path, havenConf, b.tmplData(mode, failover, havenAddr, havenAdmin)); err != nil {
					t.Fatal(err)
				}
				cfg, err := config.Load(path)
				if err != nil {
					t.Fatalf("haven.yaml does not load: %v", err)
				}
				bal := cfg.Balancers["web"]
				if bal == nil || bal.Mode != mode || len(bal.Backends) != 3 || bal.Backends[1].Name != "b2" {
					t.Errorf("balancer web = %+v", bal)
				}
			})
			t.Run("haproxy-"+name, func(t *testing.T) {
				path := filepath.Join(b.dir, "haproxy.cfg")
				if err := harness.WriteTemplate(path, haproxyConf, b.tmplData(mode, failover, haproxyAddr, "")); err != nil {
					t.Fatal(err)
				}
				check(t, "haproxy", "-c", "-f", path)
				forwards(t, path, mode, "option forwardfor", "X-Forwarded-Proto http")
			})
			t.Run("nginx-"+name, func(t *testing.T) {
				path := filepath.Join(b.dir, "nginx.conf")
				if err := harness.WriteTemplate(path, nginxConf, b.tmplData(mode, failover, nginxAddr, "")); err != nil {
					t.Fatal(err)
				}
				if mode == "tcp" {
					_, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so")
					testenv.Need(t, err == nil, "needs nginx's stream module (apt-get install libnginx-mod-stream)")
				}
				check(t, "nginx", "-t", "-q", "-e", filepath.Join(b.dir, "log", "t.log"), "-p", b.dir, "-c", path)
				forwards(t, path, mode, "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme")
			})
		}
	}
	for _, failover := range []bool{false, true} {
		t.Run(fmt.Sprintf("caddy-failover=%v", failover), func(t *testing.T) {
			path := filepath.Join(b.dir, "Caddyfile")
			if err := writeCaddyfile(path, b.tmplData("http", failover, caddyAddr, caddyAdmin)); err != nil {
				t.Fatal(err)
			}
			check(t, "caddy", "adapt", "--config", path, "--adapter", "caddyfile", "--validate")
		})
	}
	// The two-core placement: HAProxy nbthread 2, nginx worker_processes 2.
	b.cores = 2
	t.Run("haproxy-two-cores", func(t *testing.T) {
		path := filepath.Join(b.dir, "haproxy.cfg")
		if err := harness.WriteTemplate(path, haproxyConf, b.tmplData("http", false, haproxyAddr, "")); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(path); !strings.Contains(string(data), "nbthread 2") {
			t.Errorf("haproxy.cfg on two cores has no nbthread 2:\n%s", data)
		}
		check(t, "haproxy", "-c", "-f", path)
	})
	t.Run("nginx-two-cores", func(t *testing.T) {
		path := filepath.Join(b.dir, "nginx.conf")
		if err := harness.WriteTemplate(path, nginxConf, b.tmplData("http", false, nginxAddr, "")); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(path); !strings.Contains(string(data), "worker_processes 2;") {
			t.Errorf("nginx.conf on two cores has no worker_processes 2:\n%s", data)
		}
		check(t, "nginx", "-t", "-q", "-e", filepath.Join(b.dir, "log", "t.log"), "-p", b.dir, "-c", path)
	})
	b.cores = 0
	t.Run("backend", func(t *testing.T) {
		path := filepath.Join(b.dir, "b.conf")
		if err := harness.WriteTemplate(path, backendConf, struct{ Dir, Name, Addr string }{b.dir, "b1", backendAddrs[0]}); err != nil {
			t.Fatal(err)
		}
		check(t, "nginx", "-t", "-q", "-e", filepath.Join(b.dir, "log", "t.log"), "-p", b.dir, "-c", path)
	})
}

// check runs a proxy's configuration check. It needs the proxy, from the
// Debian package of the same name, and root (the files say "user root").
func check(t *testing.T, argv ...string) {
	t.Helper()
	testenv.NeedCommand(t, argv[0], argv[0])
	testenv.NeedRoot(t)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// forwards fails the test unless the HTTP proxy's configuration at path
// has it tell the backend what haven always does (the client's address and
// the scheme): the peers do the same work as haven per request.
func forwards(t *testing.T, path, mode string, want ...string) {
	t.Helper()
	if mode != "http" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !strings.Contains(string(b), w) {
			t.Errorf("%s lacks %q: the peer would do less per request than haven, which always sends X-Forwarded-For and -Proto", path, w)
		}
	}
}

func TestRoundRatio(t *testing.T) {
	run := func(round int, rps float64) runRec {
		return runRec{round: round, wrk: wrkResult{Requests: 1, RPS: rps}}
	}
	rps := func(r runRec) float64 { return r.wrk.RPS }
	a := []runRec{run(1, 20), run(2, 10), run(3, 30)}
	b := []runRec{run(1, 10), run(3, 60)} // no round 2: it is left out
	if got := roundRatio(a, b, rps, false); got != 1.25 {
		t.Errorf("roundRatio = %v, want median(2, 0.5) = 1.25", got)
	}
	if got := roundRatio(a, b, rps, true); got != 1.25 {
		t.Errorf("roundRatio inverted = %v, want median(0.5, 2) = 1.25", got)
	}
	if got := roundRatio(a, nil, rps, false); got != 0 {
		t.Errorf("roundRatio without b = %v, want 0", got)
	}
}
