package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serve starts s on a fresh 127.0.0.1 port and returns its base URL. The
// address s was built with (opt.Addr) decides whether it counts as loopback,
// so a server built with "0.0.0.0:PORT" but reached through 127.0.0.1 is an
// honest stand-in for an admin listener on every interface.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func newServer(t *testing.T, opt Options) *Server {
	t.Helper()
	s, err := New(opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

type reply struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, method, url, token string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestHealthz(t *testing.T) {
	s := newServer(t, Options{Addr: "127.0.0.1:9900"})
	s.AddReadiness("balancer web", func() error { return errors.New("no healthy backend") })
	s.SetLameduck()
	base := serve(t, s)
	// Liveness is not readiness: a not-ready, shutting-down agent is alive.
	r := call(t, "GET", base+"/healthz", "")
	if r.status != 200 || strings.TrimSpace(r.body) != "ok" {
		t.Fatalf("GET /healthz = %d %q, want 200 \"ok\"", r.status, r.body)
	}
}

func TestReadyz(t *testing.T) {
	s := newServer(t, Options{Addr: "127.0.0.1:9900"})
	webErr := errors.New("no healthy backend")
	apiErr := errors.New("not listening on 127.0.0.1:8081")
	var webBad, apiBad atomic.Pointer[error]
	s.AddReadiness("balancer web", func() error { return loadErr(&webBad) })
	s.AddReadiness("balancer api", func() error { return loadErr(&apiBad) })
	base := serve(t, s)

	r := call(t, "GET", base+"/readyz", "")
	if r.status != 200 || strings.TrimSpace(r.body) != "ready" {
		t.Fatalf("all ready: GET /readyz = %d %q, want 200 \"ready\"", r.status, r.body)
	}

	webBad.Store(&webErr)
	apiBad.Store(&apiErr)
	r = call(t, "GET", base+"/readyz", "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("two not ready: GET /readyz = %d, want 503; body %q", r.status, r.body)
	}
	// Each component by name and reason, sorted, one per line.
	want := "not ready:\n" +
		"  balancer api: not listening on 127.0.0.1:8081\n" +
		"  balancer web: no healthy backend\n"
	if r.body != want {
		t.Errorf("GET /readyz body:\n%s\nwant:\n%s", r.body, want)
	}

	// A removed component no longer counts.
	s.RemoveReadiness("balancer api")
	webBad.Store(nil)
	if r := call(t, "GET", base+"/readyz", ""); r.status != 200 {
		t.Errorf("after RemoveReadiness: GET /readyz = %d %q, want 200", r.status, r.body)
	}
}

func TestLameduckFailsReadiness(t *testing.T) {
	s := newServer(t, Options{Addr: "127.0.0.1:9900"})
	s.AddReadiness("balancer web", func() error { return nil })
	base := serve(t, s)
	if r := call(t, "GET", base+"/readyz", ""); r.status != 200 {
		t.Fatalf("before lameduck: GET /readyz = %d %q, want 200", r.status, r.body)
	}
	s.SetLameduck()
	r := call(t, "GET", base+"/readyz", "")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "agent: shutting down") {
		t.Errorf("in lameduck: GET /readyz = %d %q, want 503 naming \"agent: shutting down\"", r.status, r.body)
	}
	// Lameduck means still serving: status and liveness keep answering.
	if r := call(t, "GET", base+"/api/v1/status", ""); r.status != 200 {
		t.Errorf("in lameduck: GET /api/v1/status = %d, want 200", r.status)
	}
}

func TestMetricsServesRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "haven_test_things_total", Help: "Things counted by the test."})
	reg.MustRegister(c)
	c.Add(3)
	base := serve(t, newServer(t, Options{Addr: "127.0.0.1:9900", Gatherer: reg}))
	r := call(t, "GET", base+"/metrics", "")
	if r.status != 200 {
		t.Fatalf("GET /metrics = %d, want 200", r.status)
	}
	for _, want := range []string{"# HELP haven_test_things_total Things counted by the test.", "# TYPE haven_test_things_total counter", "haven_test_things_total 3"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("GET /metrics lacks %q; got:\n%s", want, r.body)
		}
	}

	// Without a gatherer there is no /metrics route at all.
	base = serve(t, newServer(t, Options{Addr: "127.0.0.1:9900"}))
	if r := call(t, "GET", base+"/metrics", ""); r.status != http.StatusNotFound {
		t.Errorf("no gatherer: GET /metrics = %d, want 404", r.status)
	}
}

func TestStatusMergesInfoAndSections(t *testing.T) {
	s := newServer(t, Options{
		Addr: "127.0.0.1:9900",
		Info: map[string]any{"node": "lb1", "cluster": "shop", "version": "v1.2.3"},
	})
	s.SetStatus("balancers", func() any { return []map[string]any{{"name": "web", "backends": 2}} })
	s.SetStatus("gone", func() any { return "never shown" })
	s.SetStatus("gone", nil)
	var bad atomic.Pointer[error]
	s.AddReadiness("balancer web", func() error { return loadErr(&bad) })
	base := serve(t, s)

	get := func() map[string]any {
		t.Helper()
		r := call(t, "GET", base+"/api/v1/status", "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET /api/v1/status = %d %s, want 200 application/json", r.status, r.header.Get("Content-Type"))
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.body), &m); err != nil {
			t.Fatalf("status is not JSON: %v\n%s", err, r.body)
		}
		return m
	}
	m := get()
	for k, want := range map[string]any{"node": "lb1", "cluster": "shop", "version": "v1.2.3", "ready": true} {
		if m[k] != want {
			t.Errorf("status[%q] = %v, want %v", k, m[k], want)
		}
	}
	if _, ok := m["uptime_seconds"].(float64); !ok {
		t.Errorf("status has no numeric uptime_seconds: %v", m["uptime_seconds"])
	}
	bs, ok := m["balancers"].([]any)
	if !ok || len(bs) != 1 || bs[0].(map[string]any)["name"] != "web" {
		t.Errorf("status[balancers] = %v, want the registered section", m["balancers"])
	}
	if _, ok := m["gone"]; ok {
		t.Errorf("a section removed with SetStatus(name, nil) is still shown: %v", m["gone"])
	}
	if _, ok := m["not_ready"]; ok {
		t.Errorf("ready agent reports not_ready: %v", m["not_ready"])
	}

	noBackend := errors.New("no healthy backend")
	bad.Store(&noBackend)
	m = get()
	if m["ready"] != false {
		t.Errorf("status[ready] = %v with a component not ready, want false", m["ready"])
	}
	nr, _ := m["not_ready"].([]any)
	if len(nr) != 1 || nr[0] != "balancer web: no healthy backend" {
		t.Errorf("status[not_ready] = %v, want [balancer web: no healthy backend]", m["not_ready"])
	}
}

func loadErr(p *atomic.Pointer[error]) error {
	if e := p.Load(); e != nil {
		return *e
	}
	return nil
}

func writeToken(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mutating registers a state-changing route that records its calls.
func mutating(s *Server) *atomic.Int32 {
	calls := new(atomic.Int32)
	s.HandleMutating("POST /api/v1/things/{name}/poke", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		WriteJSON(w, http.StatusOK, map[string]string{"poked": r.PathValue("name")})
	})
	return calls
}

func errorOf(t *testing.T, r reply) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
		t.Fatalf("refusal is not {\"error\": ...}: %q", r.body)
	}
	return e.Error
}

func TestMutatingOnLoopbackNeedsNoToken(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9900", "127.0.0.2:9900", "[::1]:9900", "localhost:9900"} {
		t.Run(addr, func(t *testing.T) {
			// A token file is configured, yet loopback callers need none.
			s := newServer(t, Options{Addr: addr, TokenFile: writeToken(t, "s3cret\n")})
			calls := mutating(s)
			base := serve(t, s)
			r := call(t, "POST", base+"/api/v1/things/a/poke", "")
			if r.status != 200 || calls.Load() != 1 {
				t.Fatalf("POST on loopback without token = %d %q (handler ran %d times), want 200", r.status, r.body, calls.Load())
			}
		})
	}
}

func TestMutatingOffLoopbackNeedsToken(t *testing.T) {
	// "0.0.0.0" is every interface, not loopback: the token is required even
	// though the test reaches the server through 127.0.0.1.
	s := newServer(t, Options{Addr: "0.0.0.0:9900", TokenFile: writeToken(t, "  s3cret\n\n")})
	calls := mutating(s)
	base := serve(t, s)
	url := base + "/api/v1/things/a/poke"

	for _, tc := range []struct {
		name, token, want string
	}{
		{"missing", "", `send "Authorization: Bearer TOKEN" with the token in admin.token_file`},
		{"wrong", "guess", "wrong bearer token: use the token in admin.token_file"},
		{"prefix of the right one", "s3cre", "wrong bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, "POST", url, tc.token)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("POST with %s token = %d %q, want 401", tc.name, r.status, r.body)
			}
			if msg := errorOf(t, r); !strings.Contains(msg, tc.want) {
				t.Errorf("refusal %q does not say %q", msg, tc.want)
			}
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a WWW-Authenticate: Bearer challenge: %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the handler ran %d times for refused calls", n)
	}

	// The token file's surrounding whitespace is not part of the token.
	r := call(t, "POST", url, "s3cret")
	if r.status != 200 || calls.Load() != 1 {
		t.Fatalf("POST with the right token = %d %q, want 200", r.status, r.body)
	}

	// Reads never need a token.
	for _, path := range []string{"/healthz", "/readyz", "/api/v1/status"} {
		if r := call(t, "GET", base+path, ""); r.status != 200 {
			t.Errorf("GET %s off loopback without token = %d, want 200", path, r.status)
		}
	}
}

func TestMutatingOffLoopbackWithoutTokenFileIsRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9900", ":9900", "198.18.1.11:9900"} {
		t.Run(addr, func(t *testing.T) {
			s := newServer(t, Options{Addr: addr})
			calls := mutating(s)
			base := serve(t, s)
			r := call(t, "POST", base+"/api/v1/things/a/poke", "anything")
			if r.status != http.StatusForbidden {
				t.Fatalf("POST off loopback with no token file = %d %q, want 403", r.status, r.body)
			}
			if msg := errorOf(t, r); !strings.Contains(msg, "admin.token_file") {
				t.Errorf("refusal %q does not name admin.token_file", msg)
			}
			if calls.Load() != 0 {
				t.Errorf("the handler ran for a refused call")
			}
		})
	}
}

func TestNewRejectsUnusableTokenFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, want string
	}{
		{"empty", writeToken(t, ""), "is empty"},
		{"only whitespace", writeToken(t, " \n\t\n"), "is empty"},
		{"missing", filepath.Join(dir, "nope.token"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Options{Addr: "0.0.0.0:9900", TokenFile: tc.path})
			if err == nil {
				t.Fatalf("New with a %s token file = %v, want an error", tc.name, s)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "admin: ") || !strings.Contains(msg, tc.want) || !strings.Contains(msg, tc.path) {
				t.Errorf("New error %q: want it to start with \"admin: \", name %s and say %q", msg, tc.path, tc.want)
			}
		})
	}
}

func TestRunReportsBusyAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := newServer(t, Options{Addr: ln.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "admin: listen "+ln.Addr().String()) {
		t.Fatalf("Run on a busy address = %v, want \"admin: listen %s: ...\"", err, ln.Addr())
	}
}

func TestServeStopsWhenContextEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Options{Addr: "127.0.0.1:9900"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(cancel)
	if r := call(t, "GET", "http://"+ln.Addr().String()+"/healthz", ""); r.status != 200 {
		t.Fatalf("GET /healthz = %d", r.status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of its context ending")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("the admin listener still accepts after Serve returned")
	}
}

// TestStreamOutlivesReadTimeout: a server-sent events stream is not cut
// by the server's read timeout (the dashboard and haven events -f stay
// open for hours), and still delivers after it.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	s := newServer(t, Options{Addr: "127.0.0.1:9900", ReadTimeout: 300 * time.Millisecond})
	tick := make(chan string)
	s.HandleRead("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.StartStream(w, r)
		if err != nil {
			t.Error(err)
			return
		}
		for {
			select {
			case <-st.Context().Done():
				return
			case m := <-tick:
				if st.Send("event", "", []byte(m)) != nil {
					return
				}
			}
		}
	})
	base := serve(t, s)
	resp, err := http.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(time.Second) // three read timeouts
	select {
	case tick <- "late\rinjected: no":
	case <-time.After(5 * time.Second):
		t.Fatal("the stream's handler had ended: the read timeout cut it")
	}
	br := bufio.NewReader(resp.Body)
	var got []string
	for len(got) < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the stream: %v (got %q)", err, got)
		}
		got = append(got, strings.TrimRight(line, "\n"))
	}
	if want := []string{"event: event", "data: late", "data: injected: no"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("stream %q, want %q (a CR starts a new data line)", got, want)
	}
}
