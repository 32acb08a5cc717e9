package lb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// countingBackend is an in-process backend that records what it saw.
type countingBackend struct {
	*httptest.Server
	name     string
	hits     atomic.Int64
	mu       sync.Mutex
	lastHdrs http.Header
}

func newCountingBackend(t *testing.T, name string, h http.HandlerFunc) *countingBackend {
	t.Helper()
	cb := &countingBackend{name: name}
	cb.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb.hits.Add(1)
		cb.mu.Lock()
		cb.lastHdrs = r.Header.Clone()
		cb.mu.Unlock()
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s\n", name)
	}))
	t.Cleanup(cb.Close)
	return cb
}

func (cb *countingBackend) addr() string { return strings.TrimPrefix(cb.URL, "http://") }

// TestDrain: requests in flight on a drained backend complete; no new ones
// reach it; its status says when it is drained.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	slow := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done")
	}
	b1 := newCountingBackend(t, "b1", slow)
	b2 := newCountingBackend(t, "b2", slow)
	lb := startLB(t, "", "", b1.addr(), b2.addr())

	// Start long requests until one is in flight on b1.
	type result struct {
		status int
		err    error
	}
	results := make(chan result, 8)
	for range 4 {
		go func() {
			resp, err := http.Get(lb.url + "/slow")
			if err != nil {
				results <- result{err: err}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			results <- result{status: resp.StatusCode}
		}()
	}
	// All four must have reached their backend's handler, or one still on
	// its way to b1 would count as a new request after the drain.
	testenv.Poll(t, 5*time.Second, "long requests in flight on both backends", func() (bool, string) {
		st := lb.Status()
		arrived := b1.hits.Load() + b2.hits.Load()
		return st.Backends[0].Inflight > 0 && st.Backends[1].Inflight > 0 && arrived == 4,
			fmt.Sprint(st.Backends[0].Inflight, st.Backends[1].Inflight, arrived)
	})
	if err := lb.SetState("b1", Drain); err != nil {
		t.Fatal(err)
	}
	if st := lb.Status().Backends[0]; st.Admin != "drain" || st.Drained {
		t.Fatalf("after drain: admin=%s drained=%v inflight=%d, want drain, not yet drained", st.Admin, st.Drained, st.Inflight)
	}
	hitsAtDrain := b1.hits.Load()
	for range 50 {
		resp, err := http.Get(lb.url + "/fast")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != "b2" {
			t.Fatalf("a new request went to %q after b1 was drained", got)
		}
	}
	if b1.hits.Load() != hitsAtDrain {
		t.Errorf("b1 received %d new requests while draining", b1.hits.Load()-hitsAtDrain)
	}
	close(release)
	for range 4 {
		if r := <-results; r.err != nil || r.status != 200 {
			t.Errorf("an in-flight request on a draining backend ended with %d %v, want 200", r.status, r.err)
		}
	}
	testenv.Poll(t, 5*time.Second, "b1 drained", func() (bool, string) {
		st := lb.Status().Backends[0]
		return st.Drained, fmt.Sprintf("inflight=%d", st.Inflight)
	})
	if err := lb.SetState("b1", Ready); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 5*time.Second, "b1 serving again", func() (bool, string) {
		resp, err := http.Get(lb.url + "/fast")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend") == "b1", resp.Header.Get("X-Backend")
	})
	if err := lb.SetState("nope", Drain); err == nil || !strings.Contains(err.Error(), "b1, b2") {
		t.Errorf("draining an unknown backend: err = %v, want one that lists the backends", err)
	}
}

// TestReloadUnderLoad: twenty reloads that reweight, add and remove
// backends lose no request, and keep health state.
func TestReloadUnderLoad(t *testing.T) {
	bs := []*countingBackend{newCountingBackend(t, "b1", nil), newCountingBackend(t, "b2", nil), newCountingBackend(t, "b3", nil)}
	checks := "  web:\n    http: {path: /}\n    interval: 200ms\n"
	lb := startLB(t, "    check: web\n", checks, bs[0].addr(), bs[1].addr())
	gen := newLoadGen(lb.url + "/")
	stop := gen.background(8, 500000)
	defer stop()
	gen.waitServed(t, 200)
	for i := range 20 {
		body := fmt.Sprintf("    check: web\n    algorithm: roundrobin\n    timeouts: {server: %ds}\n", 10+i)
		addrs := []string{bs[0].addr(), bs[1].addr()}
		if i%2 == 1 { // the last reload adds it
			addrs = append(addrs, bs[2].addr())
		}
		lb.reload(t, body, checks, addrs...)
		gen.waitServed(t, 50)
	}
	// b3 serves once its first check passed: under load that can take
	// longer than the 50 requests between two reloads.
	testenv.Poll(t, 10*time.Second, "b3, added by the last reload, serving", func() (bool, string) {
		var states []string
		for _, b := range lb.Status().Backends {
			states = append(states, b.Health.State.String())
		}
		return bs[2].hits.Load() > 0, fmt.Sprint("backends' health: ", states)
	})
	stop()
	if fails := gen.fails.all(); len(fails) > 0 {
		t.Errorf("%d requests failed across 20 reloads, want none: %v", len(fails), fails[:min(5, len(fails))])
	}
	st := lb.Status()
	if st.Backends[0].Health.State.String() != "up" {
		t.Errorf("b1 health after reloads = %s, want up (state kept)", st.Backends[0].Health.State)
	}
}

// rawExchange sends raw bytes and returns what came back until close.
func rawExchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	out, _ := io.ReadAll(c)
	return string(out)
}

// TestMalformedRequestsNeverReachBackend: each bad request gets a 4xx/5xx
// from haven and the backend sees nothing.
func TestMalformedRequestsNeverReachBackend(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	lb := startLB(t, "    limits: {max_header_bytes: 4KiB, max_body_bytes: 1KiB}\n", "", b.addr())
	cases := []struct{ raw, want string }{
		{"GARBAGE\r\n\r\n", "400"},
		{"GET / HTTP/1.1\r\n\r\n", "400"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", "400"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "400"},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n", "431"},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", "413"},
		{"GET / HTTP/3.0\r\nHost: a\r\n\r\n", "505"},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", "400"},
		{"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", "405"},
	}
	for _, c := range cases {
		got := rawExchange(t, lb.addr, c.raw)
		if !strings.HasPrefix(got, "HTTP/1.1 "+c.want) {
			t.Errorf("%.40q: got %.60q, want status %s", c.raw, got, c.want)
		}
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend received %d malformed requests, want 0", n)
	}
	if got := rawExchange(t, lb.addr, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Errorf("a good request after bad ones: %.60q", got)
	}
}

// TestSlowlorisIsCut: a client that sends its head byte by byte is cut at
// the header timeout with a 408, and the backend sees nothing.
func TestSlowlorisIsCut(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	lb := startLB(t, "    timeouts: {client_header: 300ms}\n", "", b.addr())
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + strings.Repeat("a", 100)
	start := time.Now()
	var werr error
	for i := 0; i < len(head) && werr == nil && time.Since(start) < 5*time.Second; i++ {
		_, werr = c.Write([]byte{head[i]})
		time.Sleep(20 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	out, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(out), "HTTP/1.1 408") {
		t.Errorf("slow client got %.60q (write error %v), want a 408 and a closed connection", out, werr)
	}
	if time.Since(start) >= 5*time.Second {
		t.Errorf("slow client was never cut")
	}
	if b.hits.Load() != 0 {
		t.Errorf("backend saw the slow request")
	}
}

// TestRetryNeverRevisitsFailedBackend: backends that reset every connection
// are each tried at most once per request, and the request succeeds on the
// healthy one.
func TestRetryNeverRevisitsFailedBackend(t *testing.T) {
	var accepts [3]atomic.Int64
	var bad []string
	for i := range 3 {
		bad = append(bad, tcpBackend(t, func(c net.Conn) {
			accepts[i].Add(1)
			resetAfterRequest(c) // the request may have been seen
		}))
	}
	good := newCountingBackend(t, "good", nil)
	lb := startLB(t, "    retries: {count: 3}\n    passive: {consecutive_failures: 0}\n", "", append(bad, good.addr())...)
	for i := range 20 {
		before := [3]int64{accepts[0].Load(), accepts[1].Load(), accepts[2].Load()}
		resp, err := http.Get(lb.url + fmt.Sprintf("/r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "good" {
			t.Fatalf("request %d: %s from %q, want 200 from good", i, resp.Status, resp.Header.Get("X-Backend"))
		}
		for j := range 3 {
			if d := accepts[j].Load() - before[j]; d > 1 {
				t.Fatalf("request %d went to bad backend %d %d times; a retry must not go back to a backend that failed it", i, j, d)
			}
		}
	}
}

// resetAfterRequest reads a request's first line, then resets the
// connection.
func resetAfterRequest(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(time.Second))
	bufio.NewReader(c).ReadString('\n')
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// TestNonIdempotentNotRetried: a POST that reached a backend which then
// reset is answered 502, never sent to a second backend.
func TestNonIdempotentNotRetried(t *testing.T) {
	resetter := tcpBackend(t, resetAfterRequest)
	good := newCountingBackend(t, "good", nil)
	lb := startLB(t, "    algorithm: roundrobin\n    passive: {consecutive_failures: 0}\n", "", resetter, good.addr())
	got502 := false
	for range 4 {
		resp, err := http.Post(lb.url+"/pay", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 502 {
			got502 = true
		}
	}
	if !got502 {
		t.Errorf("no POST saw the resetting backend's failure: it was retried elsewhere")
	}
}

// TestMaxConnQueue: with one slot per backend and a queue of one, a third
// concurrent request is refused with a clear 503, the queued one completes.
func TestMaxConnQueue(t *testing.T) {
	release := make(chan struct{})
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "ok")
	})
	lb := startLB(t, "    limits: {max_conn: 1, queue_size: 1}\n    timeouts: {queue: 10s}\n", "", b.addr())
	statuses := make(chan int, 3)
	get := func() {
		resp, err := http.Get(lb.url + "/")
		if err != nil {
			statuses <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses <- resp.StatusCode
	}
	go get()
	testenv.Poll(t, 5*time.Second, "first request in flight", func() (bool, string) { return lb.Status().Backends[0].Inflight == 1, "" })
	go get()
	testenv.Poll(t, 5*time.Second, "second request queued", func() (bool, string) { return lb.Status().Queued == 1, "" })
	resp, err := http.Get(lb.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "queue full") {
		t.Errorf("third request: %d %q, want 503 saying the queue is full", resp.StatusCode, body)
	}
	close(release)
	for range 2 {
		if s := <-statuses; s != 200 {
			t.Errorf("a request within the cap or queue ended with %d, want 200", s)
		}
	}
}

// TestForwardedHeaders: X-Forwarded-For is appended, X-Forwarded-Proto set,
// hop-by-hop headers dropped.
func TestForwardedHeaders(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	lb := startLB(t, "", "", b.addr())
	req, _ := http.NewRequest("GET", lb.url+"/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	req.Header.Set("X-Kept", "end-to-end")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.mu.Lock()
	h := b.lastHdrs
	b.mu.Unlock()
	if got := h.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if h.Get("X-Secret") != "" {
		t.Errorf("a header named in Connection reached the backend")
	}
	if h.Get("X-Kept") != "end-to-end" {
		t.Errorf("an end-to-end header was dropped")
	}
}

// TestStickySessions: a client with the cookie stays on its backend; a
// client whose backend is drained is moved and given a new cookie.
func TestStickySessions(t *testing.T) {
	b1, b2, b3 := newCountingBackend(t, "b1", nil), newCountingBackend(t, "b2", nil), newCountingBackend(t, "b3", nil)
	lb := startLB(t, "    sticky: {cookie: HAVEN}\n", "", b1.addr(), b2.addr(), b3.addr())
	resp, err := http.Get(lb.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	first := resp.Header.Get("X-Backend")
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "HAVEN" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("no HAVEN cookie set; headers %v", resp.Header)
	}
	for range 10 {
		req, _ := http.NewRequest("GET", lb.url+"/", nil)
		req.AddCookie(cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Backend"); got != first {
			t.Fatalf("sticky client moved from %s to %s", first, got)
		}
	}
	lb.SetState(map[string]string{"b1": "b1", "b2": "b2", "b3": "b3"}[first], Drain)
	req, _ := http.NewRequest("GET", lb.url+"/", nil)
	req.AddCookie(cookie)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Backend") == first || len(resp.Cookies()) == 0 {
		t.Errorf("after draining %s the sticky client got %s with cookies %v, want another backend and a new cookie", first, resp.Header.Get("X-Backend"), resp.Cookies())
	}
}

// TestShutdownLameduck: while stopping, readiness fails at once but
// requests are still served for the lameduck period.
func TestShutdownLameduck(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bc, check := parseBalancer(t, balancerYAML(ln.Addr().String(), "    lameduck: 500ms\n", "", b.addr()))
	bal, err := New(bc, check, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bal.Serve(ctx, ln) }()
	testenv.Poll(t, 5*time.Second, "ready", func() (bool, string) { return bal.Ready() == nil, "" })
	cancel()
	testenv.Poll(t, 5*time.Second, "not ready after stop", func() (bool, string) { return bal.Ready() != nil, "" })
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("request during lameduck failed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("during lameduck: %s, want 200", resp.Status)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Errorf("still accepting after shutdown")
	}
}

// TestReloadSameCheckKeepsMonitors: reloading an unchanged file keeps each
// backend's health state and counters (a reload must not reset them).
func TestReloadSameCheckKeepsMonitors(t *testing.T) {
	_, ca := parseBalancer(t, balancerYAML("127.0.0.1:3", "    check: web\n", "  web:\n    http: {path: /}\n", "127.0.0.1:2"))
	_, cb := parseBalancer(t, balancerYAML("127.0.0.1:3", "    check: web\n", "  web:\n    http: {path: /}\n", "127.0.0.1:2"))
	if !sameCheck(ca, cb) {
		t.Errorf("two loads of the same check compare different: a reload would reset every backend's health")
	}
	_, cc := parseBalancer(t, balancerYAML("127.0.0.1:3", "    check: web\n", "  web:\n    http: {path: /other}\n", "127.0.0.1:2"))
	if sameCheck(ca, cc) {
		t.Errorf("checks with different paths compare equal")
	}
}

// TestSilentClientClosedQuietly: a connection that never sends a byte is
// closed at the header timeout without a response (nothing to answer), and
// the backend sees nothing.
func TestSilentClientClosedQuietly(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	lb := startLB(t, "    timeouts: {client_header: 200ms}\n", "", b.addr())
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	out, err := io.ReadAll(c)
	if err != nil || len(out) != 0 {
		t.Errorf("silent client got %q, %v; want a quiet close", out, err)
	}
}
