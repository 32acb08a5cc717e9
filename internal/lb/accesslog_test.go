package lb

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// haproxyLine is the access log's line as HAProxy's httplog writes one:
// client [date] balancer backend TR/Tw/Tc/Tr/Ta status bytes termination
// retries "request".
var haproxyLine = regexp.MustCompile(`^127\.0\.0\.1:\d+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] web (\S+) (-?\d+)/(-?\d+)/(-?\d+)/(-?\d+)/(\d+) (-?\d+) (\d+) (\S\S) (\d+) "([^"]*)"$`)

// TestAccessLog: a balancer with access_log writes a line per request,
// after the response: who asked, which backend answered, the timings of
// each phase, the status, the bytes, how it ended and the request line;
// haven's own answers (a request it refuses, no backend left) say so in
// the termination state; a request line a client crafted cannot forge a
// line; a reload reopens the file (logrotate); the JSON format says the
// same in one object per line.
func TestAccessLog(t *testing.T) {
	b1 := startBackend(t, "b1")
	dir := t.TempDir()
	path := filepath.Join(dir, "web.log")
	body := fmt.Sprintf("    access_log: {path: %q}\n", path)
	tl := startLB(t, body, "", b1.addr)

	get := func(target string) int {
		t.Helper()
		c, err := net.Dial("tcp", tl.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get("/hello?x=1"); got != 200 {
		t.Fatalf("GET /hello: %d", got)
	}
	if got := get("/a\"b"); got != 400 && got != 200 {
		t.Fatalf("GET with a quote: %d", got)
	}
	// A request haven refuses itself: too many header bytes are not
	// needed, a bad version does.
	c, _ := net.Dial("tcp", tl.addr)
	fmt.Fprintf(c, "GET / HTTP/9.9\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	b1.kill()
	testenv.Poll(t, 10*time.Second, "b1 refused", func() (bool, string) {
		return get("/gone") == 503, ""
	})

	// A line is written once its response is sent, so two connections'
	// lines may come in either order: each is found by what it says.
	lines := readLines(t, path, 4)
	var hello, refused, gone []string
	for _, l := range lines {
		m := haproxyLine.FindStringSubmatch(l)
		switch {
		case m == nil:
			t.Errorf("line %q is not HAProxy's httplog shape (a quote in the target reaching it unescaped would break it)", l)
		case m[11] == "GET /hello?x=1 HTTP/1.1":
			hello = m
		case m[7] == "505":
			refused = m
		case m[7] == "503":
			gone = m
		}
	}
	if m := hello; m == nil || m[1] != "b1" || m[7] != "200" || m[9] != "--" || m[10] != "0" || m[3] != "0" || m[8] == "0" {
		t.Errorf("the line of GET /hello?x=1: %v in %q; want backend b1, Tw 0, status 200, some bytes, --, 0 retries", hello, lines)
	}
	if strings.Contains(strings.Join(lines, "\n"), `a"b`) {
		t.Errorf("a quote in the target reached a line unescaped: %q", lines)
	}
	if refused == nil || refused[1] != "<NOSRV>" || refused[9] != "PR" {
		t.Errorf("the refused request's line: %v in %q; want <NOSRV>, 505, PR", refused, lines)
	}
	if gone == nil || gone[9] != "SC" {
		t.Errorf("the line of a request no backend took: %v in %q; want 503 SC", gone, lines)
	}

	// logrotate: the file is moved away, the agent reloaded; the next
	// lines go to a new file at the path.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	b2 := startBackend(t, "b2")
	// (The reloaded balancer names its one backend, b2's server, b1.)
	tl.reload(t, fmt.Sprintf("    access_log: {path: %q, format: json}\n", path), "", b2.addr)
	if got := get("/after"); got != 200 {
		t.Fatalf("GET /after: %d", got)
	}
	after := readLines(t, path, 1)
	var e struct {
		Time, Client, Balancer, Backend, Method, Target, Proto, Termination string
		Status, Bytes, Retries                                              int
		RequestMS, QueueMS, ConnectMS, ResponseMS, TotalMS                  *float64 `json:"-"`
	}
	if err := json.Unmarshal([]byte(after[0]), &e); err != nil {
		t.Fatalf("JSON line %q: %v", after[0], err)
	}
	var raw map[string]any
	json.Unmarshal([]byte(after[0]), &raw)
	for _, k := range []string{"request_ms", "queue_ms", "connect_ms", "response_ms", "total_ms"} {
		if _, ok := raw[k].(float64); !ok {
			t.Errorf("JSON line lacks the timing %s: %s", k, after[0])
		}
	}
	if e.Backend != "b1" || e.Target != "/after" || e.Status != 200 || e.Termination != "--" || e.Balancer != "web" || !strings.HasPrefix(e.Client, "127.0.0.1:") {
		t.Errorf("JSON line %+v", e)
	}
	if old := readLines(t, path+".1", 4); len(old) != 4 {
		t.Errorf("the rotated file has %d lines, want the 4 from before", len(old))
	}
}

// readLines waits until the file has at least n lines (the log reaches
// it within a second) and returns them.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testenv.Poll(t, 10*time.Second, fmt.Sprintf("%d lines in %s", n, path), func() (bool, string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(b) > 0 && len(lines) >= n, string(b)
	})
	return lines
}

// TestAppendSafe: what a client sends cannot break a log line.
func TestAppendSafe(t *testing.T) {
	for in, want := range map[string]string{
		"/plain":       "/plain",
		"/a\"b\\c":     `/a\x22b\x5cc`,
		"/x\ny\r":      `/x\x0ay\x0d`,
		"/caf\u00e9":   "/caf\u00e9",
		"/bad\xff":     `/bad\xff`,
		"/\x1b[31mred": `/\x1b[31mred`,
	} {
		if got := string(appendSafe(nil, in)); got != want {
			t.Errorf("appendSafe(%q) = %q, want %q", in, got, want)
		}
		var back string
		if err := json.Unmarshal(appendJSONString(nil, in), &back); err != nil {
			t.Errorf("appendJSONString(%q) is not JSON: %v", in, err)
		}
	}
}

// BenchmarkAccessLogLine is what the access log adds to a request: the
// line formatted and appended to the file's buffer.
func BenchmarkAccessLogLine(b *testing.B) {
	l, err := openAccessLog(&config.AccessLog{Path: filepath.Join(b.TempDir(), "web.log"), Format: "haproxy"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	client := &net.TCPAddr{IP: net.IPv4(198, 18, 1, 20), Port: 51234}
	req := &request{method: []byte("GET"), target: []byte("/hello?x=1"), minor: 1}
	var e logEntry
	var line []byte
	b.ReportAllocs()
	for b.Loop() {
		e.reset(time.Now())
		e.backend, e.status, e.bytes, e.tr, e.tw, e.tc, e.ts = "app1", 200, 213, 10*time.Microsecond, 0, 0, 120*time.Microsecond
		e.parsed = true
		line = e.appendHTTP(line[:0], l, "web", client, req, time.Now())
		l.Write(line)
	}
}
