package lb

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/testenv"
)

// The HTTP/1 event loops (loop.go) serve plain HTTP unless
// HAVEN_HTTP_LOOP=off; the rest of the package's tests run through them
// too. These tests check that the loops, not the goroutine path, served
// what they should, and that what they hand over is answered as before.

// loopLB starts a balancer in front of h and fails the test if it is not
// served by event loops.
func loopLB(t *testing.T, body string, h http.Handler) *testLB {
	t.Helper()
	if os.Getenv("HAVEN_HTTP_LOOP") == "off" {
		t.Skip("HAVEN_HTTP_LOOP=off: the goroutine path serves every connection")
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tl := startLB(t, body, "", strings.TrimPrefix(srv.URL, "http://"))
	if tl.httpLoops() == nil {
		t.Fatal("a plain-HTTP balancer is not served by event loops")
	}
	return tl
}

// exchange writes raw to a new connection and reads n responses.
func exchangeRaw(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d of %d: %v", len(out)+1, n, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", len(out)+1, err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		out = append(out, resp)
	}
	return out
}

func bodyOf(r *http.Response) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

// echoHandler answers with the method, the client address haven forwarded
// and the request body.
var echoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Length", fmt.Sprint(len(r.Method)+1+len(r.Header.Get("X-Forwarded-For"))+1+len(b)))
	fmt.Fprintf(w, "%s %s %s", r.Method, r.Header.Get("X-Forwarded-For"), b)
})

// TestLoopServesKeepAliveCloseAndPipelined runs with loops that wait in
// epoll_wait themselves (the first balancer's) and with loops parked on
// Go's poller (those of a balancer started while another's wait directly).
// Direct loops hold a processor each while they run: GOMAXPROCS is raised
// by their number and given back when the balancer stops.
func TestLoopServesKeepAliveCloseAndPipelined(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "parked"}[direct], func(t *testing.T) {
			procs := runtime.GOMAXPROCS(0)
			if !direct {
				if !directLoops.CompareAndSwap(false, true) {
					t.Fatal("another balancer's loops wait directly still")
				}
				t.Cleanup(func() { directLoops.Store(false) })
			}
			tl := loopLB(t, "", echoHandler)
			ls := tl.httpLoops()
			reserved := 0
			if direct {
				reserved = len(ls.loops)
			}
			for i, l := range ls.loops {
				if l.direct != direct {
					t.Errorf("loop %d waits directly: %v, want %v", i, l.direct, direct)
				}
			}
			if got := runtime.GOMAXPROCS(0); got != procs+reserved {
				t.Errorf("GOMAXPROCS %d while %d loops run (direct: %v), want %d", got, len(ls.loops), direct, procs+reserved)
			}
			serveKeepAliveCloseAndPipelined(t, tl)
			if direct {
				// Idle, a direct loop parks on Go's poller; a request then
				// wakes it, and it serves on.
				parks := func() (n uint64) {
					for _, l := range ls.loops {
						n += l.parks.Load()
					}
					return n
				}
				before := parks()
				testenv.Poll(t, 10*time.Second, "the idle loops park", func() (bool, string) {
					return parks() > before, fmt.Sprint(parks(), " parks")
				})
				for i := range 3 {
					rs := exchangeRaw(t, tl.addr, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n", 1)
					if rs[0].StatusCode != 200 || bodyOf(rs[0]) != "GET 127.0.0.1 " {
						t.Fatalf("request %d after the loops parked: %d", i, rs[0].StatusCode)
					}
				}
				if served := ls.served.Load(); served != 126 {
					t.Errorf("the loops served %d requests; want 126, the last 3 after they parked", served)
				}
			}
			tl.stop()
			if got := runtime.GOMAXPROCS(0); got != procs {
				t.Errorf("GOMAXPROCS %d once the balancer stopped, want %d back", got, procs)
			}
			if direct && directLoops.Load() {
				t.Error("the stopped balancer still holds the direct loops")
			}
		})
	}
}

// TestLoopParkRefused: where the kernel refuses to put an idle direct
// loop's set on Go's poller (ENOSPC: fs.epoll.max_user_watches), the loop
// waits through the scheduler instead, a tick at a time rather than in a
// spin, and serves on.
func TestLoopParkRefused(t *testing.T) {
	var tries atomic.Int64
	defer func(f func(int, int) error) { parkAdd = f }(parkAdd)
	parkAdd = func(int, int) error { tries.Add(1); return unix.ENOSPC }
	tl := loopLB(t, "", echoHandler)
	if !tl.httpLoops().loops[0].direct {
		t.Fatal("the balancer's loops do not wait directly")
	}
	for i := range 3 {
		testenv.Poll(t, 10*time.Second, "an idle loop tries to park", func() (bool, string) {
			return tries.Load() > int64(i), fmt.Sprint(tries.Load(), " tries")
		})
		rs := exchangeRaw(t, tl.addr, "GET /r HTTP/1.1\r\nHost: x\r\n\r\n", 1)
		if rs[0].StatusCode != 200 || bodyOf(rs[0]) != "GET 127.0.0.1 " {
			t.Fatalf("request %d while parking is refused: %d", i, rs[0].StatusCode)
		}
	}
	// A loop that retried at once would try hundreds of thousands of
	// times a second; one that waits a tick between tries, 20 a loop.
	before := tries.Load()
	time.Sleep(time.Second)
	if n := tries.Load() - before; n > 200 {
		t.Errorf("%d tries to park in 1s: the idle loops spin", n)
	}
	if served := tl.httpLoops().served.Load(); served != 3 {
		t.Errorf("the loops served %d requests, want 3", served)
	}
}

func serveKeepAliveCloseAndPipelined(t *testing.T, tl *testLB) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	for i := range 100 {
		req, _ := http.NewRequest("POST", tl.url+"/x", strings.NewReader(fmt.Sprintf("body-%d", i)))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		if got, want := bodyOf(resp), fmt.Sprintf("POST 127.0.0.1 body-%d", i); resp.StatusCode != 200 || got != want {
			t.Fatalf("keep-alive request %d: %d %q, want 200 %q", i, resp.StatusCode, got, want)
		}
		resp.Body.Close()
	}
	for i := range 20 {
		rs := exchangeRaw(t, tl.addr, "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
		if rs[0].StatusCode != 200 || !rs[0].Close || bodyOf(rs[0]) != "GET 127.0.0.1 " {
			t.Fatalf("connection-close request %d: %d close=%v", i, rs[0].StatusCode, rs[0].Close)
		}
	}
	// Three requests in one write: three answers, in order.
	rs := exchangeRaw(t, tl.addr, "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\naGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nc", 3)
	for i, want := range []string{"POST 127.0.0.1 a", "GET 127.0.0.1 ", "POST 127.0.0.1 c"} {
		if got := bodyOf(rs[i]); got != want {
			t.Errorf("pipelined response %d: %q, want %q", i+1, got, want)
		}
	}
	if served, handed := tl.httpLoops().served.Load(), tl.httpLoops().handedOver(); served != 123 || len(handed) != 0 {
		t.Errorf("the loops served %d requests and handed connections over %v; want 123 and none", served, handed)
	}
}

// TestLoopListenerSocket checks the listening socket the loops accept
// from: plain TCP, as HAProxy's and nginx's (Go's default would be MPTCP
// where the kernel has it), with delayed acknowledgements for the sockets
// it accepts, so that a new connection's request is acknowledged by its
// response rather than by a packet of its own.
func TestLoopListenerSocket(t *testing.T) {
	tl := loopLB(t, "", echoHandler)
	fd := tl.httpLoops().loops[0].lnfd
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_TCP {
		t.Errorf("the listener's protocol is %d (%v), want TCP (%d)", proto, err, unix.IPPROTO_TCP)
	}
	// Linux reads TCP_QUICKACK back as "not in delayed-ACK mode".
	if quick, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK); err != nil || quick != 0 {
		t.Errorf("TCP_QUICKACK on the listener: %d (%v), want 0", quick, err)
	}
	rs := exchangeRaw(t, tl.addr, "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
	if rs[0].StatusCode != 200 {
		t.Errorf("a connection-close request: %d, want 200", rs[0].StatusCode)
	}
}

// TestLoopAcknowledgesPartialRequests: the loops' client sockets delay
// their acknowledgements (TestLoopListenerSocket), but one whose request
// has come only in part is switched to acknowledge at once, as HAProxy's
// are: a client with Nagle's algorithm on holds the rest of its request
// until its first bytes are acknowledged, and would wait out the
// delayed-ACK timer for each request otherwise.
func TestLoopAcknowledgesPartialRequests(t *testing.T) {
	tl := loopLB(t, "", echoHandler)
	for _, part := range []struct{ name, first, rest string }{
		{"a head without its body", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", "hello"},
		{"half a head", "POST /x HTTP/1.1\r\nHo", "st: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
	} {
		c, err := net.Dial("tcp", tl.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetNoDelay(false)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, part.first)
		// Looked at as soon as the loop holds the part: the kernel leaves
		// delayed-ACK mode by itself once its timer (40 ms) went off, so a
		// later look would not tell.
		var quick, held int
		testenv.Poll(t, 10*time.Second, part.name+": held by a loop", func() (bool, string) {
			quick, held = tl.partialClientsQuickAck()
			return held > 0, "no connection holds part of a request"
		})
		if quick != held {
			t.Errorf("%s: %d of %d connections holding part of a request acknowledge at once, want all", part.name, quick, held)
		}
		io.WriteString(c, part.rest)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", part.name, err)
		}
		if got := bodyOf(resp); resp.StatusCode != 200 || got != "POST 127.0.0.1 hello" {
			t.Errorf("%s: %d %q, want 200 %q", part.name, resp.StatusCode, got, "POST 127.0.0.1 hello")
		}
		c.Close()
	}
}

// partialClientsQuickAck counts, on every loop, the client connections
// that hold part of a request, and those of them in quick-ACK mode.
func (tl *testLB) partialClientsQuickAck() (quick, held int) {
	for _, l := range tl.httpLoops().loops {
		done := make(chan [2]int, 1)
		l.post(func(l *httpLoop) {
			var n [2]int
			for _, h := range l.clients {
				if len(h.in) > 0 && h.state == waitRequest {
					n[1]++
					if v, err := unix.GetsockoptInt(h.fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK); err == nil && v == 1 {
						n[0]++
					}
				}
			}
			done <- n
		})
		select {
		case n := <-done:
			quick, held = quick+n[0], held+n[1]
		case <-time.After(5 * time.Second):
		}
	}
	return quick, held
}

// What the loops do not serve themselves goes to the goroutine path with
// what they read, and is answered there as it always was.
func TestLoopHandsOver(t *testing.T) {
	tl := loopLB(t, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte("part1;"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
			return
		}
		echoHandler(w, r)
	}))
	handed := func() string { return fmt.Sprint(tl.httpLoops().handedOver()) }

	// A chunked response, then the next request on the same connection.
	rs := exchangeRaw(t, tl.addr, "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2)
	if got := bodyOf(rs[0]); got != "part1;part2" || rs[0].TransferEncoding == nil {
		t.Errorf("chunked response: %q (transfer-encoding %v), want part1;part2 chunked", got, rs[0].TransferEncoding)
	}
	if got := bodyOf(rs[1]); got != "GET 127.0.0.1 " {
		t.Errorf("request after the chunked response: %q", got)
	}
	if got, want := handed(), "map[response:1]"; got != want {
		t.Errorf("handed over after a chunked response: %s, want %s", got, want)
	}

	// A chunked upload, and a malformed request: answered by the goroutine path.
	rs = exchangeRaw(t, tl.addr, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 1)
	if got := bodyOf(rs[0]); got != "POST 127.0.0.1 abc" {
		t.Errorf("chunked upload: %q", got)
	}
	rs = exchangeRaw(t, tl.addr, "GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 1)
	if rs[0].StatusCode != 400 {
		t.Errorf("two Content-Lengths: %d, want 400", rs[0].StatusCode)
	}
	// A head that arrives in pieces, the body after it: still the loop's.
	c, err := net.Dial("tcp", tl.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, part := range []string{"POST /p HTTP/1.1\r\nHo", "st: x\r\nContent-Length: 4\r\n\r\n", "ab", "cd"} {
		io.WriteString(c, part)
		time.Sleep(20 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || bodyOf(resp) != "POST 127.0.0.1 abcd" {
		t.Fatalf("request in pieces: %v", err)
	}
	if got, want := handed(), "map[request:2 response:1]"; got != want {
		t.Errorf("handed over: %s, want %s (the chunked response; the chunked upload and the malformed head)", got, want)
	}
}

// A large response to a client that reads slowly arrives whole: the loop
// holds what the client cannot take yet and stops reading the backend.
func TestLoopLargeResponseSlowReader(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	tl, c := getBig(t, "", big)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if n < 1<<20 {
			time.Sleep(2 * time.Millisecond) // slow for the first MiB: haven's writes fill up
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
	}
	if want := sha256.Sum256(big); !bytes.Equal(h.Sum(nil), want[:]) || n != int64(len(big)) {
		t.Fatalf("got %d bytes, want %d intact", n, len(big))
	}
	if tl.httpLoops().served.Load() != 1 {
		t.Errorf("served %d requests on the loops, want 1", tl.httpLoops().served.Load())
	}
}

// A backend that dies in the middle of a body: the client's connection is
// closed (it cannot be told otherwise), the next client is served, and no
// descriptor is left behind once the balancer stops.
func TestLoopBackendCutsBodyNoLeak(t *testing.T) {
	backend := tcpBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/cut" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	before := openFDs(t)
	tl := startLB(t, "", "", backend)
	for range 3 {
		c, err := net.Dial("tcp", tl.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.HasSuffix(got, []byte("only ten b")) {
			t.Fatalf("cut response: %q %v: want the head and ten bytes, then the close", got, err)
		}
		if rs := exchangeRaw(t, tl.addr, "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1); bodyOf(rs[0]) != "ok" {
			t.Fatal("the request after a cut response failed")
		}
	}
	tl.stop()
	// The backend's side of each connection closes once it reads haven's
	// close: soon, not at once.
	testenv.Poll(t, 10*time.Second, "descriptors back to before the balancer", func() (bool, string) {
		after := openFDs(t)
		return after <= before, fmt.Sprintf("%d open, %d before", after, before)
	})
}

// getBig starts a balancer (settings body) in front of a backend that
// answers big, and sends it a request from a client with a small receive
// buffer, which the test is to read (or not).
func getBig(t *testing.T, body string, big []byte) (*testLB, net.Conn) {
	t.Helper()
	tl := loopLB(t, body, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		w.Write(big)
	}))
	c, err := net.Dial("tcp", tl.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(16 << 10)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	return tl, c
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A client that stops reading a response is cut after the client timeout,
// even while it keeps sending bytes (each raises an event on its socket,
// which must not count as the client moving).
func TestLoopClientThatStopsReading(t *testing.T) {
	_, c := getBig(t, "    timeouts: {client: 1s}\n", bytes.Repeat([]byte("x"), 32<<20))
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("z")); err != nil {
			return // haven closed the connection (reset: it had unread bytes)
		}
	}
	t.Fatal("a client that sends but does not read was not cut in 30s with a 1s client timeout")
}

// An empty line between requests (a client's CRLF after a body) is not a
// request begun: no 408 comes for it.
func TestLoopStrayCRLF(t *testing.T) {
	tl := loopLB(t, "    timeouts: {client_header: 300ms}\n", echoHandler)
	c, err := net.Dial("tcp", tl.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || bodyOf(resp) != "POST 127.0.0.1 z" {
		t.Fatalf("the POST: %v", err)
	}
	rest, _ := io.ReadAll(br) // until haven closes the idle connection
	if len(rest) > 0 {
		t.Errorf("after a stray CRLF haven sent %q; want a silent close", rest)
	}
}

// A chunked response handed to the goroutine path is counted once, in the
// metrics and in passive health.
func TestLoopHandedResponseCountedOnce(t *testing.T) {
	tl := loopLB(t, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		w.Write([]byte("a"))
		w.(http.Flusher).Flush()
		w.Write([]byte("b"))
	}))
	rs := exchangeRaw(t, tl.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1)
	if rs[0].StatusCode != 500 || bodyOf(rs[0]) != "ab" {
		t.Fatalf("got %d %q, want the backend's chunked 500", rs[0].StatusCode, bodyOf(rs[0]))
	}
	b := tl.pool.Load().backends[0]
	if n := b.m.responses[5].Load(); n != 1 {
		t.Errorf("5xx responses counted: %d, want 1", n)
	}
}

// A request whose first backend refuses the connection goes on to the next
// on the goroutine path when that one is named by host (the loops connect
// to addresses only), a POST with its body intact.
func TestLoopRetryToHostNamedBackend(t *testing.T) {
	srv := httptest.NewServer(echoHandler)
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	tl := startLB(t, "    passive: {consecutive_failures: 0}\n", "", freeAddr(t), "localhost:"+port)
	for i := range 4 {
		rs := exchangeRaw(t, tl.addr, fmt.Sprintf("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nb%d", i), 1)
		if got, want := bodyOf(rs[0]), fmt.Sprintf("POST 127.0.0.1 b%d", i); rs[0].StatusCode != 200 || got != want {
			t.Errorf("request %d: %d %q, want 200 %q", i, rs[0].StatusCode, got, want)
		}
	}
}

// handedOver returns the connections the loops handed over, by reason
// (the reasons with none left out).
func (ls *httpLoops) handedOver() map[string]uint64 {
	m := map[string]uint64{}
	for r, name := range handoffReasonNames {
		if n := ls.handed[r].Load(); n > 0 {
			m[name] = n
		}
	}
	return m
}
