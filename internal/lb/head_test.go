package lb

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func parse(t *testing.T, raw string) (*request, error) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(raw), 64)
	head, err := readHead(br, nil, 64*1024)
	if err != nil {
		return nil, err
	}
	var r request
	return &r, parseRequest(head, &r)
}

func TestParseRequestAccepts(t *testing.T) {
	tests := []struct {
		name, raw  string
		method     string
		target     string
		cl         int64
		chunked    bool
		persistent bool
		upgrade    string
	}{
		{"get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", -1, false, true, ""},
		{"leading empty lines", "\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/x", -1, false, true, ""},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", "GET", "/", -1, false, true, ""},
		{"http10 closes by default", "GET / HTTP/1.0\r\n\r\n", "GET", "/", -1, false, false, ""},
		{"http10 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET", "/", -1, false, true, ""},
		{"close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET", "/", -1, false, false, ""},
		{"post cl", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", "POST", "/p", 5, false, true, ""},
		{"same cl twice", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "POST", "/p", 5, false, true, ""},
		{"chunked", "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "POST", "/p", -1, true, true, ""},
		{"upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "GET", "/ws", -1, false, true, "websocket"},
		{"upgrade without connection token is not an upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", "GET", "/ws", -1, false, true, ""},
		{"absolute form", "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "http://a/x", -1, false, true, ""},
		{"options star", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS", "*", -1, false, true, ""},
		// What browsers and common clients send, which net/http accepts too.
		{"query with brackets, braces, pipe, caret, backtick", "GET /a/b;c=d?x=[1]&y={2}|^`&z=\"q\" HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/a/b;c=d?x=[1]&y={2}|^`&z=\"q\"", -1, false, true, ""},
		{"IPv6 literal Host with a port, underscore in a name", "GET / HTTP/1.1\r\nHost: [2001:2::1]:8080\r\nX-My_Field: \xc3\xa9t\xc3\xa9\t\r\n\r\n", "GET", "/", -1, false, true, ""},
		{"escapes in the path, a bare % in the query", "GET /a%20b?q=100%&r=%zz HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/a%20b?q=100%&r=%zz", -1, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parse(t, tt.raw)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if string(r.method) != tt.method || string(r.target) != tt.target || r.contentLength != tt.cl ||
				r.chunked != tt.chunked || r.persistent() != tt.persistent || string(r.upgrade) != tt.upgrade {
				t.Errorf("got method=%s target=%s cl=%d chunked=%v persistent=%v upgrade=%q",
					r.method, r.target, r.contentLength, r.chunked, r.persistent(), r.upgrade)
			}
		})
	}
}

// TestForwardedTarget: the backend gets one consistent target and Host, and
// a Host that the client sent, even empty or named in Connection, once.
func TestForwardedTarget(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"GET http://b.example/x?q HTTP/1.1\r\nHost: a\r\n\r\n", "GET /x?q HTTP/1.1\r\nHost: b.example\r\n"},
		{"GET https://b.example:8443 HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\r\nHost: b.example:8443\r\n"},
		{"GET http://b.example?q HTTP/1.1\r\nHost: a\r\n\r\n", "GET /?q HTTP/1.1\r\nHost: b.example\r\n"},
		{"GET /x HTTP/1.1\r\nHost:\r\n\r\n", "GET /x HTTP/1.1\r\nHost: \r\n"},
		{"GET /x HTTP/1.1\r\nConnection: Host\r\nHost: a\r\n\r\n", "GET /x HTTP/1.1\r\nHost: a\r\n"},
		{"GET /x HTTP/1.0\r\n\r\n", "GET /x HTTP/1.1\r\nHost: 192.0.2.1:80\r\n"},
	}
	lb := &Balancer{}
	cc := &clientConn{}
	for _, tt := range tests {
		r, err := parse(t, tt.raw)
		if err != nil {
			t.Fatalf("%q: %v", tt.raw, err)
		}
		got := string(lb.appendRequestHead(nil, cc, r, "192.0.2.1:80"))
		if !strings.HasPrefix(got, tt.want) || strings.Count(strings.ToLower(got), "host:") != 1 {
			t.Errorf("%q forwarded as %q, want it to begin %q with one Host", tt.raw, got, tt.want)
		}
	}
}

func TestParseRequestRejects(t *testing.T) {
	tests := []struct {
		name, raw string
		status    int
	}{
		{"garbage", "HELLO\r\n\r\n", 400},
		{"no version", "GET /\r\nHost: a\r\n\r\n", 400},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"http2 preface", "PRI * HTTP/2.0\r\n\r\n", 505},
		{"http 1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"conflicting cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"signed cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
		{"cl list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400},
		{"te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"te twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"obs fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400},
		{"bare cr in value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400},
		{"nul in value", "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400},
		{"control in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"user information", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"empty authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"bad escape in the path", "GET /a%zz?q HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"escape cut short in the path", "GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"control character in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400},
		{"host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"star and more", "OPTIONS *0 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.raw)
			var he *httpError
			if !errors.As(err, &he) {
				t.Fatalf("err = %v, want an HTTP %d", err, tt.status)
			}
			if he.status != tt.status {
				t.Errorf("status = %d (%s), want %d", he.status, he.msg, tt.status)
			}
		})
	}
}

func TestReadHeadLimits(t *testing.T) {
	big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 2000) + "\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(big), 64)
	if _, err := readHead(br, nil, 1024); !errors.Is(err, errHeadTooLarge) {
		t.Errorf("2 KB head with a 1 KB limit: err = %v, want errHeadTooLarge", err)
	}
	br = bufio.NewReaderSize(strings.NewReader(big), 64)
	if _, err := readHead(br, nil, 4096); err != nil {
		t.Errorf("2 KB head with a 4 KB limit and a 64-byte buffer: %v", err)
	}
	br = bufio.NewReaderSize(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\n"), 64)
	if _, err := readHead(br, nil, 4096); !errors.Is(err, errTruncated) {
		t.Errorf("truncated head: err = %v, want errTruncated", err)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		raw       string
		status    int
		cl        int64
		chunked   bool
		closeConn bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", 200, 2, false, false},
		{"HTTP/1.1 204 No Content\r\n\r\n", 204, -1, false, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, -1, true, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 200, -1, false, true},
		{"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n", 200, -1, true, false},
		{"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n", 200, -1, false, true},
		{"HTTP/1.1 500\r\n\r\n", 500, -1, false, false},
	}
	for _, tt := range tests {
		var r response
		if err := parseResponse([]byte(tt.raw), &r); err != nil {
			t.Errorf("%q: %v", tt.raw, err)
			continue
		}
		if r.status != tt.status || r.contentLength != tt.cl || r.chunked != tt.chunked || r.closeConn != tt.closeConn {
			t.Errorf("%q: got status=%d cl=%d chunked=%v close=%v", tt.raw, r.status, r.contentLength, r.chunked, r.closeConn)
		}
	}
	for _, bad := range []string{"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n", "SIP/2.0 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"} {
		var r response
		if err := parseResponse([]byte(bad), &r); err == nil {
			t.Errorf("%q: accepted, want an error", bad)
		}
	}
}

func TestCopyChunked(t *testing.T) {
	in := "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
	var out strings.Builder
	br := bufio.NewReader(strings.NewReader(in))
	n, err := copyChunked(&out, br, make([]byte, 3), false, 0, true)
	if err != nil || n != 9 {
		t.Fatalf("copyChunked = %d, %v", n, err)
	}
	if want := "4\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n"; out.String() != want {
		t.Errorf("re-encoded %q, want %q", out.String(), want)
	}
	if rest, _ := br.Peek(4); string(rest) != "NEXT" {
		t.Errorf("copyChunked read past the message end: next bytes %q", rest)
	}
	out.Reset()
	if _, err := copyChunked(&out, bufio.NewReader(strings.NewReader(in)), make([]byte, 3), true, 0, true); err != nil || out.String() != "Wikipedia" {
		t.Errorf("dechunk = %q, %v", out.String(), err)
	}
	if _, err := copyChunked(&out, bufio.NewReader(strings.NewReader(in)), make([]byte, 3), false, 5, true); !errors.Is(err, errBodyTooLarge) {
		t.Errorf("limit 5: err = %v, want errBodyTooLarge", err)
	}
	for _, bad := range []string{"zz\r\nab\r\n0\r\n\r\n", "2\r\nabc\r\n0\r\n\r\n", "2\r\nab", "ffffffffffffffffff\r\n",
		"ffffffffffffffff1\r\n", "2 x\r\nab\r\n0\r\n\r\n", "2;a\x00\r\nab\r\n0\r\n\r\n", "2;a\rb\r\nab\r\n0\r\n\r\n",
		"0\r\nBad Trailer: 1\r\n\r\n", "0\r\n folded\r\n\r\n", "\r\n", ";x\r\n",
		// A bare LF anywhere in the framing, and a space before an extension.
		"5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r\n0\n\r\n", "5\r\nhello\r\n0\r\n\n",
		"5\r\nhello\r\n0\r\nX: 1\n\r\n", "5 ;a\r\nhello\r\n0\r\n\r\n"} {
		out.Reset()
		if _, err := copyChunked(&out, bufio.NewReader(strings.NewReader(bad)), make([]byte, 8), false, 0, true); err == nil {
			t.Errorf("%q: accepted as %q", bad, out.String())
		}
	}
}

// TestChunkReencoding: whatever framing a sender used that haven accepts,
// the receiver gets sizes, line ends and trailers of haven's own.
func TestChunkReencoding(t *testing.T) {
	big := strings.Repeat("x", 70000)
	tests := []struct{ name, in, want string }{
		{"space after size", "5 \r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"extension", "5; a=\"b c\"\r\nhello\r\n0;last\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"upper-case hex, leading zeros", "000A\r\n0123456789\r\n0\r\n\r\n", "a\r\n0123456789\r\n0\r\n\r\n"},
		{"trailers", "1\r\na\r\n0\r\nX-A:  1 \r\nX-B:2\r\n\r\n", "1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"},
		{"chunk larger than the buffer", "11170\r\n" + big + "\r\n0\r\n\r\n", "11170\r\n" + big + "\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{8, 32 * 1024} {
				var out strings.Builder
				if _, err := copyChunked(&out, bufio.NewReaderSize(strings.NewReader(tt.in), 16), make([]byte, size), false, 0, true); err != nil {
					t.Fatalf("buffer %d: %v", size, err)
				}
				if out.String() != tt.want {
					t.Errorf("buffer %d: sent %.80q, want %.80q", size, out.String(), tt.want)
				}
			}
		})
	}
}

// TestChunkedResponseFraming: a backend's chunked response is read as RFC
// 9112 allows (bare LF line ends, a space before an extension, a control
// character in a trailer) and leaves in haven's own framing; the same bytes
// from a client are refused.
func TestChunkedResponseFraming(t *testing.T) {
	in := "5 ;x\nhello\n6\r\n world\n0\nX-T: a\x01b\n\n"
	var out strings.Builder
	if _, err := copyChunked(&out, bufio.NewReader(strings.NewReader(in)), make([]byte, 64), false, 0, false); err != nil {
		t.Fatalf("response: %v", err)
	}
	if want := "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: a\x01b\r\n\r\n"; out.String() != want {
		t.Errorf("response sent as %q, want %q", out.String(), want)
	}
	if _, err := copyChunked(io.Discard, bufio.NewReader(strings.NewReader(in)), make([]byte, 64), false, 0, true); err == nil {
		t.Error("a request with the same framing was accepted")
	}
	var r response
	if err := parseResponse([]byte("HTTP/1.1 200 OK\r\nX-A: b\x01c\r\n\r\n"), &r); err != nil {
		t.Errorf("a response head with a control character in a value: %v", err)
	}
}

// TestScanChunks: the framing that has already arrived is checked before a
// request leaves for a backend; what has not arrived yet is not judged.
func TestScanChunks(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"5\r\nhello\r\n0\r\n\r\n", nil},
		{"5\r\nhel", nil},
		{"5\r\nhello", nil},
		{"5\r\nhello\r", nil},
		{"5\r\nhello\r\n3", nil},
		{"5\r\nhello\r\n2;x\r\nab\r\n0\r\n", nil},
		{"5\nhello", errChunkSize},          // bare LF after the size
		{"5\r\nhello\n0\r\n", errChunkData}, // bare LF after the data
		{"ffffffffffffffff1\r\n", errChunkSize},
		{"5\r\nhello\r\nzz\r\n", errChunkSize},
		{"5\r\nhelloX\r\n", errChunkData},
		{"5\r\nhello\r\n6\r\n", errBodyTooLarge},
		{strings.Repeat("1", maxChunkLine+1), errChunkLine},
		{strings.Repeat(" ", maxChunkLine), errChunkLine},
		{"5" + strings.Repeat(" ", maxChunkLine) + "\r\n", errChunkLine},
	}
	for _, tt := range tests {
		if err := scanChunks([]byte(tt.in), 10); !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("%.40q: %v, want %v", tt.in, err, tt.want)
		}
	}
}

func TestFindCookie(t *testing.T) {
	hs := [][]byte{[]byte("a=1; HAVEN=xyz; b=2"), []byte("c=3")}
	if got := findCookie(hs, "HAVEN"); got != "xyz" {
		t.Errorf("findCookie = %q", got)
	}
	if got := findCookie(hs, "HAVE"); got != "" {
		t.Errorf("prefix match: %q", got)
	}
}

// FuzzParseRequest checks that no input panics the request parser, and that
// what it accepts is self-consistent.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET http://a.example/x HTTP/1.1\r\nHost:\r\nConnection: Host\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(strings.NewReader(string(data)), 16)
		head, err := readHead(br, nil, 8192)
		if err != nil {
			return
		}
		var r request
		if err := parseRequest(head, &r); err != nil {
			return
		}
		if r.chunked && r.contentLength >= 0 {
			t.Fatalf("accepted both chunked and Content-Length: %q", data)
		}
		if r.minor == 1 && len(r.host) == 0 && !strings.Contains(strings.ToLower(string(head)), "host:") {
			t.Fatalf("accepted an HTTP/1.1 request without Host: %q", data)
		}
		if !isToken(r.method) {
			t.Fatalf("accepted method %q", r.method)
		}
		if bytes.IndexByte(r.target, '#') >= 0 || bytes.IndexByte(r.authority, '@') >= 0 {
			t.Fatalf("accepted target %q", r.target)
		}
		out := (&Balancer{}).appendRequestHead(nil, &clientConn{}, &r, "192.0.2.1:80")
		if n := strings.Count(strings.ToLower(string(out)), "\r\nhost:"); n != 1 {
			t.Fatalf("%q forwarded with %d Host fields: %q", data, n, out)
		}
	})
}

// FuzzCopyChunked checks that what copyChunked accepts it re-encodes into
// canonical framing that carries the same data, and that the check made
// before a request leaves (scanChunks) never refuses what the copy accepts.
func FuzzCopyChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b\nhello\n6 \r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT",
		"ffffffffffffffff1\r\n",
		"2\r\nabc\r\n0\r\n\r\n",
		"0\r\nA: 1\nB:2\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		n, err := copyChunked(&out, bufio.NewReader(bytes.NewReader(data)), make([]byte, 7), false, 0, true)
		if err != nil {
			return
		}
		if err := scanChunks(data, 0); err != nil {
			t.Fatalf("copied %q but the early check refuses it: %v", data, err)
		}
		var again bytes.Buffer
		n2, err := copyChunked(&again, bufio.NewReader(bytes.NewReader(out.Bytes())), make([]byte, 64), false, 0, true)
		if err != nil || n2 != n || !bytes.Equal(again.Bytes(), out.Bytes()) {
			t.Fatalf("re-encoding %q as %q is not canonical: %q, %v", data, out.Bytes(), again.Bytes(), err)
		}
		var d1, d2 bytes.Buffer
		copyChunked(&d1, bufio.NewReader(bytes.NewReader(data)), make([]byte, 5), true, 0, true)
		copyChunked(&d2, bufio.NewReader(bytes.NewReader(out.Bytes())), make([]byte, 5), true, 0, true)
		if !bytes.Equal(d1.Bytes(), d2.Bytes()) || int64(d1.Len()) != n {
			t.Fatalf("%q carries %q, its re-encoding %q", data, d1.Bytes(), d2.Bytes())
		}
	})
}
