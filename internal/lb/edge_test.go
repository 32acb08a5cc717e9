package lb

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the table of HTTP edge cases in docs/balancer.md")

// edgeCase is one request that an attacker or an unlucky client could send,
// and what must come of it.
type edgeCase struct {
	name      string
	raw       string // sent at once
	then      string // sent once the backend has received the beginning
	halfClose bool   // the client shuts its side after sending
	status    int    // what the client gets
	// backend is exactly what the backend receives ("": nothing; {backend}
	// stands for its address), and cut says that haven then closed the
	// connection before the request was complete.
	backend string
	cut     bool
	note    string // what the backend sees, in words, for the docs

	haproxy     int    // HAProxy 2.6's status for the same bytes
	haproxyNote string // and what its backend saw
}

// fwd is a request head as haven forwards it: the lines given, then the
// X-Forwarded-* fields.
func fwd(lines ...string) string {
	return strings.Join(lines, "\r\n") + "\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
}

func manyHeaders(n int) (raw, forwarded []string) {
	for i := range n {
		raw = append(raw, "X-H"+strconv.Itoa(i)+": v")
	}
	return raw, raw
}

func edgeCases() []edgeCase {
	h100, f100 := manyHeaders(99) // and Host: 100 fields
	h101, _ := manyHeaders(100)
	const chunkedHead = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	return []edgeCase{
		{name: "plain GET", raw: "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: a"), note: "the request",
			haproxy: 200, haproxyNote: "the request"},
		{name: "bare LF line ends", raw: "GET /a HTTP/1.1\nHost: a\n\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: a"), note: "the request, with CRLF",
			haproxy: 200, haproxyNote: "the request, with CRLF"},
		{name: "empty line before the request", raw: "\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: a"), note: "the request",
			haproxy: 200, haproxyNote: "the request"},
		{name: "HTTP/1.0 without Host", raw: "GET /a HTTP/1.0\r\n\r\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: {backend}"), note: "HTTP/1.1 with `Host:` the backend's address",
			haproxy: 200, haproxyNote: "HTTP/1.0 with `connection: keep-alive`, no Host"},
		{name: "hop-by-hop fields", raw: "GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\nTE: trailers\r\nProxy-Connection: x\r\nX-End: 1\r\n\r\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: a", "X-End: 1"), note: "without Connection, Keep-Alive, X-Hop, TE, Proxy-Connection",
			haproxy: 200, haproxyNote: "`connection: X-Hop`, Keep-Alive, X-Hop, TE, Proxy-Connection passed on"},
		{name: "`Connection: Host, Content-Length, Transfer-Encoding`", raw: "POST /a HTTP/1.1\r\nHost: a\r\nConnection: Host, Content-Length, Transfer-Encoding\r\nContent-Length: 2\r\n\r\nhi",
			status: 200, backend: fwd("POST /a HTTP/1.1", "Host: a", "Content-Length: 2") + "hi", note: "Host and Content-Length kept",
			haproxy: 200, haproxyNote: "Host, Content-Length and the Connection field kept"},
		{name: "empty Host", raw: "GET /a HTTP/1.1\r\nHost:\r\n\r\n",
			status: 200, backend: fwd("GET /a HTTP/1.1", "Host: "), note: "one empty Host",
			haproxy: 200, haproxyNote: "one empty Host"},
		{name: "absolute-form target, Host differs", raw: "GET http://evil.example/x?q HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 200, backend: fwd("GET /x?q HTTP/1.1", "Host: evil.example"), note: "`GET /x?q` with `Host: evil.example`: the target's authority replaces Host (RFC 9112 3.2.2)",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "absolute-form target, no path", raw: "GET http://a:8080 HTTP/1.1\r\nHost: a:8080\r\n\r\n",
			status: 200, backend: fwd("GET / HTTP/1.1", "Host: a:8080"), note: "`GET /` with `Host: a:8080`",
			haproxy: 200, haproxyNote: "`GET http://a:8080` with `Host: a:8080`"},
		{name: "absolute-form target with user information", raw: "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`GET http://u@a/` unchanged"},
		{name: "fragment in the target", raw: "GET /a/../admin#frag HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "chunked: extensions, `6 ` and upper-case hex", raw: chunkedHead + "5;ext=1\r\nhello\r\n6 \r\n world\r\n0A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
			status: 200, backend: fwd("POST /c HTTP/1.1", "Host: a", "Transfer-Encoding: chunked") + "5\r\nhello\r\n6\r\n world\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
			note:    "chunks re-encoded: sizes and CRLFs of haven's own, no extensions",
			haproxy: 200, haproxyNote: "chunks re-encoded (here merged into one), extensions dropped"},
		{name: "chunked: bare LF after the chunk data", raw: chunkedHead + "5\r\nhello\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`hello`: the bare LF read as a line end"},
		{name: "chunked: bare LF after the size", raw: chunkedHead + "5\nhello\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`hello`: the bare LF read as a line end"},
		{name: "chunked: space before an extension", raw: chunkedHead + "5 ;a=b\r\nhello\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`hello`, the extension dropped"},
		{name: "chunk size `ffffffffffffffff1`", raw: chunkedHead + "ffffffffffffffff1\r\nx\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "bad chunk size after a good chunk, same packet", raw: chunkedHead + "5\r\nhello\r\nzz\r\nab\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "chunk data longer than its size", raw: chunkedHead + "2\r\nabc\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "bad chunk size arriving later", raw: chunkedHead + "5\r\nhello\r\n", then: "zz\r\n",
			status: 400, backend: fwd("POST /c HTTP/1.1", "Host: a", "Transfer-Encoding: chunked") + "5\r\nhello\r\n", cut: true,
			note:    "the head and the good chunk, then the connection closes",
			haproxy: 400, haproxyNote: "the head and the good chunk, then the connection closes"},
		{name: "Content-Length and Transfer-Encoding (CL.TE)", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "chunked, Content-Length removed"},
		{name: "Transfer-Encoding and Content-Length (TE.CL)", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "chunked, Content-Length removed"},
		{name: "`Transfer-Encoding: xchunked`", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
			status: 501, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "`Transfer-Encoding: chunked, identity`", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
			status: 501, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "Transfer-Encoding twice", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			status: 501, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "`Transfer-Encoding : chunked` (space before the colon)", raw: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "two different Content-Lengths", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "`Content-Length: +3`", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "`Content-Length: 3, 3`", raw: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`Content-Length: 3`"},
		{name: "obsolete line folding", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`x-a: b   c` (unfolded)"},
		{name: "bare CR in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "NUL in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 502, haproxyNote: "the head with the NUL (which this backend refused: 502)"},
		{name: "control character in a value", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 502, haproxyNote: "the head with the control character (which this backend refused: 502)"},
		{name: "Host with a space", raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "`Host: a b`"},
		{name: "`%zz` in the target", raw: "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 502, haproxyNote: "`GET /%zz` (which this backend refused: 502)"},
		{name: "`*0` as the target", raw: "OPTIONS *0 HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 502, haproxyNote: "`OPTIONS *0` (which this backend refused: 502)"},
		{name: "two Hosts", raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "HTTP/1.1 without Host", raw: "GET / HTTP/1.1\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 200, haproxyNote: "the request, no Host"},
		{name: "100 KB URI", raw: "GET /" + strings.Repeat("a", 100_000) + " HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 414, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "17 KB header field", raw: "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 17_000) + "\r\n\r\n",
			status: 431, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "100 header fields", raw: "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Join(h100, "\r\n") + "\r\n\r\n",
			status: 200, backend: fwd(append([]string{"GET / HTTP/1.1", "Host: a"}, f100...)...), note: "the request",
			haproxy: 200, haproxyNote: "the request"},
		{name: "101 header fields", raw: "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Join(h101, "\r\n") + "\r\n\r\n",
			status: 431, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "a request pipelined after a bad one", raw: "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
			status: 400, note: "nothing",
			haproxy: 400, haproxyNote: "nothing"},
		{name: "CONNECT", raw: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
			status: 405, note: "nothing",
			haproxy: 200, haproxyNote: "the request"},
		{name: "HTTP/2 preface on a plain-text listener", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			status: 505, note: "nothing",
			haproxy: 0, haproxyNote: "nothing (HAProxy answers in HTTP/2: prior knowledge)"},
		{name: "body cut short by the client", raw: "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", halfClose: true,
			status: 400, backend: fwd("POST /u HTTP/1.1", "Host: a", "Content-Length: 10") + "abc", cut: true,
			note:    "the head and `abc`, then the connection closes",
			haproxy: 0, haproxyNote: "the head and `abc`, then the connection closes; the client gets no answer"},
		{name: "client silent in the middle of its body", raw: "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
			status: 408, backend: fwd("POST /u HTTP/1.1", "Host: a", "Content-Length: 10") + "abc", cut: true,
			note:    "the head and `abc`, then the connection closes",
			haproxy: 504, haproxyNote: "the head and `abc`, then the connection closes, after `timeout server`"},
	}
}

// edgeConfig is the balancer both haven and HAProxy run the table with: a
// short client timeout, so that a silent client is answered quickly.
const edgeClientTimeout = "1s"

// TestHTTPEdgeCases sends each case's bytes to a balancer in front of a
// backend that records exactly what it receives, and checks the status the
// client gets and what the backend saw. The table is documented in
// docs/balancer.md (go test -run TestHTTPEdgeCases -update-docs rewrites it).
func TestHTTPEdgeCases(t *testing.T) {
	for _, tc := range edgeCases() {
		t.Run(tc.name, func(t *testing.T) {
			be := startRawBackend(t)
			lb := startLB(t, "    timeouts: {client: "+edgeClientTimeout+"}\n", "", be.addr())
			status, got, cut := runEdgeCase(t, lb.addr, be, tc, tc.backend != "")
			if status != tc.status {
				t.Errorf("client got %d, want %d", status, tc.status)
			}
			want := strings.ReplaceAll(tc.backend, "{backend}", be.addr())
			if got != want || cut != tc.cut {
				t.Errorf("backend saw %.300q (cut %v)\nwant %.300q (cut %v)", got, cut, want, tc.cut)
			}
		})
	}
	checkEdgeDocs(t, edgeCases())
}

// TestHTTPEdgeCasesHAProxy runs the same table through HAProxy and checks
// the HAProxy column of the docs: HAVEN_EDGE_HAPROXY=1 opts in, and then
// haproxy must be on the PATH (testenv.NeedCommand). It logs what
// HAProxy's backend saw.
func TestHTTPEdgeCasesHAProxy(t *testing.T) {
	if os.Getenv("HAVEN_EDGE_HAPROXY") == "" {
		t.Skip("set HAVEN_EDGE_HAPROXY=1 to compare with HAProxy")
	}
	bin := testenv.NeedCommand(t, "haproxy", "haproxy")
	for _, tc := range edgeCases() {
		t.Run(tc.name, func(t *testing.T) {
			be := startRawBackend(t)
			addr := startHAProxy(t, bin, be.addr())
			status, got, cut := runEdgeCase(t, addr, be, tc, !strings.HasPrefix(tc.haproxyNote, "nothing"))
			t.Logf("HAProxy: %d; backend saw %.300q (cut %v)", status, got, cut)
			if status != tc.haproxy {
				t.Errorf("HAProxy answered %d, the table says %d", status, tc.haproxy)
			}
		})
	}
}

func startHAProxy(t *testing.T, bin, backend string) string {
	t.Helper()
	addr := freeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    mode http
    timeout connect 2s
    timeout client %s
    timeout server 5s
    timeout http-request 10s
frontend fe
    bind %s
    default_backend be
backend be
    server s1 %s
`, edgeClientTimeout, addr, backend)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testenv.Poll(t, 10*time.Second, "haproxy listening", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return addr
}

// runEdgeCase sends tc to a balancer at addr and returns the status the
// client got (0: none), what the backend received and whether the
// connection was closed before the request was complete.
// With wait, it waits for the backend to see the end of a request (it was
// sent) or of its connection (it was cut).
func runEdgeCase(t *testing.T, addr string, be *rawBackend, tc edgeCase, wait bool) (status int, backend string, cut bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, tc.raw); err != nil {
		t.Logf("write: %v", err)
	}
	if tc.then != "" {
		testenv.Poll(t, 5*time.Second, "the backend receiving the beginning", func() (bool, string) {
			return be.received.Load() > 0, ""
		})
		io.WriteString(c, tc.then)
	}
	if tc.halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		status = resp.StatusCode
		resp.Body.Close()
	} else {
		t.Logf("reading the response: %v", err)
	}
	if wait {
		testenv.Poll(t, 5*time.Second, "the backend's request to end", func() (bool, string) {
			return len(be.reqs.all()) > 0, ""
		})
	}
	for _, r := range be.reqs.all() {
		backend += r.raw
		cut = cut || r.cut
	}
	return status, backend, cut
}

// rawBackend records exactly the bytes of each request it receives, and
// whether the connection ended before the request was complete.
type rawBackend struct {
	ln       net.Listener
	received atomic.Int64
	reqs     list[seenRequest]
}

type seenRequest struct {
	raw string
	cut bool
}

func startRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &rawBackend{ln: ln}
	var wg sync.WaitGroup
	var conns sync.Map
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, nil)
			wg.Add(1)
			go func() { defer wg.Done(); be.serve(c) }()
		}
	}()
	return be
}

func (be *rawBackend) addr() string { return be.ln.Addr().String() }

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (be *rawBackend) serve(c net.Conn) {
	defer c.Close()
	var captured bytes.Buffer
	br := bufio.NewReader(io.TeeReader(countingReader{c, &be.received}, &captured))
	start := 0
	for {
		req, err := http.ReadRequest(br)
		if err == nil {
			_, err = io.Copy(io.Discard, req.Body)
		}
		end := captured.Len() - br.Buffered()
		raw := captured.String()[start:end]
		if err != nil {
			if raw != "" {
				be.reqs.add(seenRequest{raw: raw, cut: true})
			}
			return
		}
		be.reqs.add(seenRequest{raw: raw})
		start = end
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

// The edge-case table in docs/balancer.md sits between these markers.
const (
	edgeDocsBegin = "<!-- edge cases: generated by go test ./internal/lb -run TestHTTPEdgeCases -update-docs -->\n"
	edgeDocsEnd   = "<!-- end of edge cases -->\n"
)

func renderEdgeDocs(cases []edgeCase) string {
	var b strings.Builder
	b.WriteString("| request | haven answers | haven's backend sees | HAProxy 2.6 answers | HAProxy's backend sees |\n|---|---|---|---|---|\n")
	for _, tc := range cases {
		hap := "none"
		if tc.haproxy != 0 {
			hap = strconv.Itoa(tc.haproxy)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", tc.name, tc.status, tc.note, hap, tc.haproxyNote)
	}
	return b.String()
}

// checkEdgeDocs checks that docs/balancer.md shows the table as tested.
func checkEdgeDocs(t *testing.T, cases []edgeCase) {
	t.Helper()
	const file = "../../docs/balancer.md"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, edgeDocsBegin), strings.Index(doc, edgeDocsEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no edge-case table between %q and %q", file, edgeDocsBegin, edgeDocsEnd)
	}
	table := renderEdgeDocs(cases)
	if doc[i+len(edgeDocsBegin):j] == table {
		return
	}
	if !*updateDocs {
		t.Errorf("the edge-case table in %s is not the tested one; rerun with -update-docs", file)
		return
	}
	doc = doc[:i+len(edgeDocsBegin)] + table + doc[j:]
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}
