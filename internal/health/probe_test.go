package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// probe runs p once with a timeout, as a Monitor does.
func probe(t *testing.T, p Prober, target string, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := withProbeTimeout(t.Context(), timeout)
	defer cancel()
	return p.Probe(ctx, target)
}

func mustProber(t *testing.T, c *config.Check) Prober {
	t.Helper()
	c.Name = "test"
	p, err := NewProber(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// closedPort returns a loopback address that refuses connections.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("err = %v, want pass", err)
	case want != "" && err == nil:
		t.Errorf("passed, want error %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
}

func TestNewProberErrors(t *testing.T) {
	tests := []struct {
		c    config.Check
		want string
	}{
		{config.Check{}, `health: check "x": no probe set: want one of tcp, http, https, icmp, exec`},
		{config.Check{TCP: &config.TCPProbe{}, HTTP: &config.HTTPProbe{}}, `tcp, http are all set: want exactly one probe`},
		{config.Check{HTTP: &config.HTTPProbe{ExpectRegex: "("}}, `http.expect_regex: error parsing regexp`},
		{config.Check{HTTPS: &config.HTTPProbe{Path: "healthz"}}, `https.path "healthz" is not a path`},
		{config.Check{HTTP: &config.HTTPProbe{Path: "//evil.example/x"}}, `is not a path`},
		{config.Check{Exec: &config.ExecProbe{}}, `exec.command is empty`},
	}
	for _, tt := range tests {
		tt.c.Name = "x"
		_, err := NewProber(&tt.c)
		wantErr(t, err, tt.want)
	}
}

func TestSpecFromConfig(t *testing.T) {
	zero := 0.0
	tests := []struct {
		c    config.Check
		want Spec
	}{
		{config.Check{}, Spec{Interval: 2 * time.Second, FastInterval: 500 * time.Millisecond, DownInterval: 2 * time.Second,
			Timeout: time.Second, Rise: 2, Fall: 3, Jitter: 0.1}},
		{config.Check{Interval: config.Duration(200 * time.Millisecond), Jitter: &zero},
			Spec{Interval: 200 * time.Millisecond, FastInterval: 100 * time.Millisecond, DownInterval: 200 * time.Millisecond,
				Timeout: 200 * time.Millisecond, Rise: 2, Fall: 3}},
		{config.Check{Interval: config.Duration(50 * time.Millisecond)},
			Spec{Interval: 50 * time.Millisecond, FastInterval: 50 * time.Millisecond, DownInterval: 50 * time.Millisecond,
				Timeout: 50 * time.Millisecond, Rise: 2, Fall: 3, Jitter: 0.1}},
		{config.Check{Interval: config.Duration(time.Second), FastInterval: config.Duration(300 * time.Millisecond),
			DownInterval: config.Duration(10 * time.Second), Timeout: config.Duration(500 * time.Millisecond), Rise: 1, Fall: 5},
			Spec{Interval: time.Second, FastInterval: 300 * time.Millisecond, DownInterval: 10 * time.Second,
				Timeout: 500 * time.Millisecond, Rise: 1, Fall: 5, Jitter: 0.1}},
	}
	for _, tt := range tests {
		if got := SpecFromConfig(&tt.c); got != tt.want {
			t.Errorf("SpecFromConfig(%+v) = %+v, want %+v", tt.c, got, tt.want)
		}
	}
	three := 3
	if got := PassiveSpecFromConfig(config.Passive{}); got != (PassiveSpec{5, 10 * time.Second}) {
		t.Errorf("PassiveSpecFromConfig defaults = %+v", got)
	}
	if got := PassiveSpecFromConfig(config.Passive{ConsecutiveFailures: &three, EjectFor: config.Duration(time.Minute)}); got != (PassiveSpec{3, time.Minute}) {
		t.Errorf("PassiveSpecFromConfig = %+v", got)
	}
}

func TestDialAddr(t *testing.T) {
	tests := []struct {
		target string
		port   int
		def    string
		want   string
	}{
		{"127.0.0.1:8080", 0, "", "127.0.0.1:8080"},
		{"127.0.0.1:8080", 9000, "", "127.0.0.1:9000"},
		{"127.0.0.1", 0, "80", "127.0.0.1:80"},
		{"db1.example", 5432, "", "db1.example:5432"},
		{"[::1]:8080", 0, "", "[::1]:8080"},
		{"::1", 0, "443", "[::1]:443"},
		{"127.0.0.1", 0, "", "error: no port"},
		{":80", 0, "", "error: no host"},
	}
	for _, tt := range tests {
		got, err := dialAddr(tt.target, tt.port, tt.def)
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, tt.want) && !strings.Contains(got, strings.TrimPrefix(tt.want, "error: ")) {
			t.Errorf("dialAddr(%q, %d, %q) = %q, want %q", tt.target, tt.port, tt.def, got, tt.want)
		}
	}
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	open := l.Addr().String()
	_, openPort, _ := net.SplitHostPort(open)
	closed := closedPort(t)

	p := mustProber(t, &config.Check{TCP: &config.TCPProbe{}})
	wantErr(t, probe(t, p, open, time.Second), "")
	err = probe(t, p, closed, time.Second)
	wantErr(t, err, "tcp: dial "+closed+": connection refused")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%v does not wrap ECONNREFUSED", err)
	}
	wantErr(t, probe(t, p, "127.0.0.1", time.Second), `tcp: target "127.0.0.1" has no port`)

	// The probe's port replaces the target's.
	port, _ := strconv.Atoi(openPort)
	p = mustProber(t, &config.Check{TCP: &config.TCPProbe{Port: port}})
	wantErr(t, probe(t, p, closed, time.Second), "")
	wantErr(t, probe(t, p, "127.0.0.1", time.Second), "")
}

// httpServer is a local server whose handlers report what they saw.
type httpServer struct {
	*httptest.Server
	mu      sync.Mutex
	host    string // Host header of the last request
	method  string
	sni     string
	newConn int
	closed  int
}

func (s *httpServer) seen() (host, method, sni string, newConn, closed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.host, s.method, s.sni, s.newConn, s.closed
}

func newHTTPServer(t *testing.T, tlsOn bool) *httpServer {
	s := &httpServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "db down", 500) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("a", 100<<10)+"needle")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/fail", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.host, s.method = r.Host, r.Method
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed TLS verifications are expected
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.newConn++
		case http.StateClosed, http.StateHijacked:
			s.closed++
		}
	}
	if tlsOn {
		s.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			s.mu.Lock()
			s.sni = hello.ServerName
			s.mu.Unlock()
			return nil, nil
		}}
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func TestHTTPProbe(t *testing.T) {
	srv := newHTTPServer(t, false)
	target := srv.Listener.Addr().String()
	tests := []struct {
		name string
		c    config.HTTPProbe
		want string
	}{
		{"default path and status", config.HTTPProbe{}, "http: GET /: status 404, want 200-399"},
		{"ok", config.HTTPProbe{Path: "/ok"}, ""},
		{"500", config.HTTPProbe{Path: "/fail"}, "http: GET /fail: status 500, want 200-399"},
		{"500 expected", config.HTTPProbe{Path: "/fail", ExpectStatus: []int{500}}, ""},
		{"one status", config.HTTPProbe{Path: "/fail", ExpectStatus: []int{200}}, "http: GET /fail: status 500, want 200"},
		{"status set", config.HTTPProbe{Path: "/ok", ExpectStatus: []int{204, 205}}, "status 200, want one of 204, 205"},
		{"query kept", config.HTTPProbe{Path: "/fail?deep=1"}, "http: GET /fail?deep=1: status 500"},
		{"body", config.HTTPProbe{Path: "/ok", ExpectBody: "ok"}, ""},
		{"body missing", config.HTTPProbe{Path: "/ok", ExpectBody: "ready"}, `http: body does not contain "ready"`},
		{"regex", config.HTTPProbe{Path: "/ok", ExpectRegex: `^o.\n$`}, ""},
		{"regex no match", config.HTTPProbe{Path: "/ok", ExpectRegex: `^x`}, `http: body does not match "^x"`},
		{"beyond the limit", config.HTTPProbe{Path: "/big", ExpectBody: "needle"}, `http: body does not contain "needle"`},
		{"within a larger limit", config.HTTPProbe{Path: "/big", ExpectBody: "needle", BodyLimit: 128 << 10}, ""},
		{"redirect not followed", config.HTTPProbe{Path: "/redirect"}, ""},
		{"redirect is the answer", config.HTTPProbe{Path: "/redirect", ExpectStatus: []int{200}}, "status 302, want 200"},
		{"method", config.HTTPProbe{Path: "/ok", Method: "head"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProber(t, &config.Check{HTTP: &tt.c})
			wantErr(t, probe(t, p, target, 2*time.Second), tt.want)
		})
	}
	if _, method, _, _, _ := srv.seen(); method != "HEAD" {
		t.Errorf("server saw method %q, want HEAD", method)
	}
}

func TestHTTPProbeHostAndPort(t *testing.T) {
	srv := newHTTPServer(t, false)
	_, portStr, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)

	p := mustProber(t, &config.Check{HTTP: &config.HTTPProbe{Path: "/ok", Host: "www.example.test"}})
	wantErr(t, probe(t, p, srv.Listener.Addr().String(), time.Second), "")
	if host, _, _, _, _ := srv.seen(); host != "www.example.test" {
		t.Errorf("server saw Host %q, want www.example.test", host)
	}
	// Without host, the Host header is the address dialled, with the
	// probe's port replacing the target's.
	p = mustProber(t, &config.Check{HTTP: &config.HTTPProbe{Path: "/ok", Port: port}})
	wantErr(t, probe(t, p, "127.0.0.1:1", time.Second), "")
	if host, _, _, _, _ := srv.seen(); host != "127.0.0.1:"+portStr {
		t.Errorf("server saw Host %q, want 127.0.0.1:%s", host, portStr)
	}
}

func TestHTTPProbeFreshConnections(t *testing.T) {
	srv := newHTTPServer(t, false)
	p := mustProber(t, &config.Check{HTTP: &config.HTTPProbe{Path: "/ok", ExpectBody: "ok"}})
	for range 3 {
		wantErr(t, probe(t, p, srv.Listener.Addr().String(), time.Second), "")
	}
	testenv.Poll(t, 5*time.Second, "3 connections, all closed", func() (bool, string) {
		_, _, _, n, closed := srv.seen()
		return n == 3 && closed == 3, fmt.Sprintf("%d opened, %d closed", n, closed)
	})
}

func TestHTTPProbeFailures(t *testing.T) {
	srv := newHTTPServer(t, false)
	closed := closedPort(t)
	p := mustProber(t, &config.Check{HTTP: &config.HTTPProbe{Path: "/healthz"}})
	err := probe(t, p, closed, time.Second)
	wantErr(t, err, "http: GET /healthz: dial "+closed+": connection refused")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%v does not wrap ECONNREFUSED", err)
	}

	p = mustProber(t, &config.Check{HTTP: &config.HTTPProbe{Path: "/slow"}})
	start := time.Now()
	err = probe(t, p, srv.Listener.Addr().String(), 200*time.Millisecond)
	if err == nil || err.Error() != "http: GET /slow: timeout after 200ms" {
		t.Errorf("err = %v, want http: GET /slow: timeout after 200ms", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v does not wrap context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timed-out probe took %v", d)
	}
}

func TestHTTPSProbe(t *testing.T) {
	srv := newHTTPServer(t, true)
	target := srv.Listener.Addr().String()
	no := false
	tests := []struct {
		name    string
		c       config.HTTPProbe
		want    string
		wantSNI string
	}{
		{"verify fails on a self-signed cert", config.HTTPProbe{Path: "/ok"}, "https: GET /ok: tls: failed to verify certificate", ""},
		{"verify off", config.HTTPProbe{Path: "/ok", TLSVerify: &no, ExpectBody: "ok"}, "", ""},
		{"status over tls", config.HTTPProbe{Path: "/fail", TLSVerify: &no}, "https: GET /fail: status 500", ""},
		{"sni", config.HTTPProbe{Path: "/ok", TLSVerify: &no, SNI: "api.example.test"}, "", "api.example.test"},
		{"sni from host", config.HTTPProbe{Path: "/ok", TLSVerify: &no, Host: "www.example.test:443"}, "", "www.example.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProber(t, &config.Check{HTTPS: &tt.c})
			wantErr(t, probe(t, p, target, 10*time.Second), tt.want)
			if _, _, sni, _, _ := srv.seen(); sni != tt.wantSNI {
				t.Errorf("server saw SNI %q, want %q", sni, tt.wantSNI)
			}
		})
	}
}

func TestExecProbe(t *testing.T) {
	tests := []struct {
		name   string
		cmd    []string
		target string
		want   string
	}{
		{"exit 0", []string{"sh", "-c", "exit 0"}, "127.0.0.1:8080", ""},
		{"environment", []string{"sh", "-c",
			`test "$HAVEN_TARGET" = 127.0.0.1:8080 && test "$HAVEN_TARGET_HOST" = 127.0.0.1 && test "$HAVEN_TARGET_PORT" = 8080`},
			"127.0.0.1:8080", ""},
		{"environment without port", []string{"sh", "-c", `test "$HAVEN_TARGET_HOST" = db1 && test -z "$HAVEN_TARGET_PORT"`}, "db1", ""},
		{"exit 1 with stderr", []string{"sh", "-c", "echo starting >&2; echo 'replica lag 40s' >&2; echo stdout; exit 1"},
			"t", "exec: sh: exit status 1: replica lag 40s"},
		{"exit 2 silent", []string{"sh", "-c", "exit 2"}, "t", "exec: sh: exit status 2"},
		{"stderr is bounded", []string{"sh", "-c", "yes filler | head -c 2000000 >&2; echo >&2; echo 'last words' >&2; exit 3"},
			"t", "exec: sh: exit status 3: last words"},
		{"not found", []string{"/nonexistent/check-db"}, "t", "exec: check-db: fork/exec /nonexistent/check-db: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProber(t, &config.Check{Exec: &config.ExecProbe{Command: tt.cmd}})
			err := probe(t, p, tt.target, 5*time.Second)
			wantErr(t, err, tt.want)
			if err != nil && len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func TestExecProbeTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The shell starts a child in the background, records its pid, and
	// hangs; the timeout must kill both.
	script := fmt.Sprintf("sleep 60 & echo $! > %s; sleep 60", pidFile)
	p := mustProber(t, &config.Check{Exec: &config.ExecProbe{Command: []string{"sh", "-c", script}}})
	start := time.Now()
	err := probe(t, p, "t", 300*time.Millisecond)
	if err == nil || err.Error() != "exec: sh: timeout after 300ms (killed)" {
		t.Fatalf("err = %v, want exec: sh: timeout after 300ms (killed)", err)
	}
	if d := time.Since(start); d > 300*time.Millisecond+execWaitDelay+time.Second {
		t.Errorf("probe took %v", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	testenv.Poll(t, 5*time.Second, fmt.Sprintf("background child %d to die", pid), func() (bool, string) {
		st := procState(pid)
		return st == "" || st == "Z", "state " + st
	})
}

// procState returns a process's state letter from /proc, or "" if it is gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 16}
	tb.Write([]byte("first line\nsecond"))
	tb.Write([]byte(" line\n\n"))
	if got := tb.lastLine(); got != "second line" {
		t.Errorf("lastLine = %q", got)
	}
	if len(tb.b) > 16 {
		t.Errorf("kept %d bytes, max 16", len(tb.b))
	}
	tb.Write([]byte(strings.Repeat("x", 100)))
	if got := tb.lastLine(); got != strings.Repeat("x", 16) {
		t.Errorf("lastLine = %q", got)
	}
	long := &tailBuffer{max: 4096}
	long.Write([]byte(strings.Repeat("é", 300)))
	if got := long.lastLine(); len(got) > maxLine+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("long line not bounded: %d bytes", len(got))
	}
}

// needICMPPrivilege ends an ICMP test whose probe lacked the privilege:
// skipped off CI, failed in CI, where tests run as root.
func needICMPPrivilege(t *testing.T, err error) {
	t.Helper()
	testenv.Need(t, !errors.Is(err, ErrICMPPrivilege), "needs root or CAP_NET_RAW: %v", err)
}

func TestICMPProbe(t *testing.T) {
	p := mustProber(t, &config.Check{ICMP: &config.ICMPProbe{}})
	err := probe(t, p, "127.0.0.1:8080", 2*time.Second) // the port is ignored
	needICMPPrivilege(t, err)
	if err != nil {
		t.Fatalf("ping 127.0.0.1: %v", err)
	}
	// Repeated probes each match their own reply.
	for range 3 {
		if err := probe(t, p, "127.0.0.1", 2*time.Second); err != nil {
			t.Fatalf("ping 127.0.0.1 again: %v", err)
		}
	}
}

func TestICMPProbeIPv6(t *testing.T) {
	l, err := net.ListenPacket("udp6", "[::1]:0")
	testenv.Need(t, err == nil, "needs an IPv6 loopback address: %v", err)
	l.Close()
	p := mustProber(t, &config.Check{ICMP: &config.ICMPProbe{}})
	err = probe(t, p, "::1", 2*time.Second)
	needICMPPrivilege(t, err)
	if err != nil {
		t.Fatalf("ping ::1: %v", err)
	}
}

func TestICMPProbeTimeout(t *testing.T) {
	p := mustProber(t, &config.Check{ICMP: &config.ICMPProbe{}})
	ctx, cancel := withProbeTimeout(t.Context(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	err := p.Probe(ctx, "127.0.0.1")
	needICMPPrivilege(t, err)
	wantErr(t, err, "icmp: echo 127.0.0.1: timeout after 1ms")
}

// TestICMPProbeUnprivileged runs the ICMP probe in a child process without
// CAP_NET_RAW and checks that the error says so.
func TestICMPProbeUnprivileged(t *testing.T) {
	if os.Getenv("HAVEN_ICMP_CHILD") == "1" {
		p := newICMPProber()
		ctx, cancel := withProbeTimeout(context.Background(), time.Second)
		defer cancel()
		fmt.Println(p.Probe(ctx, "127.0.0.1"))
		return
	}
	testenv.NeedRoot(t) // to start a child as another user
	// The test binary may live in a directory the child's user cannot
	// read; run a world-readable copy.
	dir, err := os.MkdirTemp("", "haven-icmp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "health.test")
	copyFile(t, os.Args[0], exe)
	cmd := exec.Command(exe, "-test.run=^TestICMPProbeUnprivileged$")
	cmd.Env = append(os.Environ(), "HAVEN_ICMP_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	testenv.Need(t, err == nil, "needs to run a child as nobody (uid 65534): %v: %s", err, out)
	if !strings.Contains(string(out), "icmp probe needs root or CAP_NET_RAW") {
		t.Errorf("unprivileged probe said %q, want it to name the missing privilege", out)
	}
	t.Logf("unprivileged child: %s", bytes.TrimSpace(out))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestProberWithoutDeadlineIsBounded(t *testing.T) {
	srv := newHTTPServer(t, false)
	c := &config.Check{HTTP: &config.HTTPProbe{Path: "/slow"}, Timeout: config.Duration(100 * time.Millisecond)}
	p := mustProber(t, c)
	err := p.Probe(context.Background(), srv.Listener.Addr().String())
	wantErr(t, err, "http: GET /slow: timeout after 100ms")
}
