package lb

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
)

// This file parses and rewrites HTTP/1.x message heads. haven parses heads
// itself rather than through net/http so that the proxy's hot path does not
// allocate per request and so that every ambiguity a request smuggler could
// use (two Content-Lengths, Content-Length with Transfer-Encoding, obsolete
// line folding, bare CR) is rejected before anything reaches a backend.

// errHeadTooLarge is returned when a head exceeds the configured limit.
var errHeadTooLarge = errors.New("head too large")

// readHead reads one message head (start line and header lines, up to and
// including the empty line) from br and appends it to dst. It returns the
// grown dst. Leading empty lines before a request are skipped (RFC 9112 2.2).
func readHead(br *bufio.Reader, dst []byte, limit int) ([]byte, error) {
	start := len(dst)
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			dst = append(dst, line...)
			if len(dst)-start > limit {
				return dst, errHeadTooLarge
			}
			continue
		}
		if err != nil {
			if len(dst) == start && len(line) == 0 {
				return dst, err // nothing of a head: EOF or an idle timeout
			}
			if isTimeout(err) {
				return dst, errHeadTimeout
			}
			return dst, errTruncated
		}
		partial := len(dst) > start && dst[len(dst)-1] != '\n'
		if !partial && len(dst) == start && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			continue // empty line before the start line
		}
		dst = append(dst, line...)
		if len(dst)-start > limit {
			return dst, errHeadTooLarge
		}
		if !partial && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			return dst, nil
		}
	}
}

var (
	errTruncated   = errors.New("connection closed in the middle of a message head")
	errHeadTimeout = errors.New("timed out in the middle of a message head")
)

// header is one parsed header line, as offsets into the head buffer.
type header struct {
	name, value []byte
}

// httpError is a parse failure that maps to a response status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{400, msg} }

// request is a parsed request head. Slices point into the connection's head
// buffer and are valid until the next request is read.
type request struct {
	method, target []byte
	minor          int // 0 for HTTP/1.0, 1 for HTTP/1.1
	headers        []header

	host          []byte
	hasHost       bool   // a Host header was sent (its value may be empty)
	authority     []byte // of an absolute-form target: replaces Host (RFC 9112 3.2.2)
	path          []byte // of an absolute-form target: what follows the authority
	contentLength int64  // -1 when absent
	chunked       bool
	closeConn     bool // client asked to close after this request
	keepAlive     bool // HTTP/1.0 client asked to keep the connection
	upgrade       []byte
	expectCont    bool
	xff           []byte // existing X-Forwarded-For
	cookie        [][]byte
	connTokens    [][]byte // header names listed in Connection
}

func (r *request) reset() {
	hs, ck, ct := r.headers[:0], r.cookie[:0], r.connTokens[:0]
	*r = request{headers: hs, cookie: ck, connTokens: ct, contentLength: -1}
}

// parseRequest parses a request head produced by readHead.
func parseRequest(head []byte, r *request) error {
	r.reset()
	line, rest := cutLine(head)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return badRequest("malformed request line")
	}
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 == sp1 {
		return badRequest("malformed request line")
	}
	r.method, r.target = line[:sp1], line[sp1+1:sp2]
	if !isToken(r.method) {
		return badRequest("invalid method")
	}
	if string(r.method) == "CONNECT" {
		return &httpError{405, "CONNECT is not supported"}
	}
	if len(r.target) == 0 || !validTarget(r.target) {
		return badRequest("invalid request target")
	}
	if r.target[0] == 'h' {
		var ok bool
		if r.authority, r.path, ok = splitAbsolute(r.target); !ok {
			return badRequest("invalid authority in request target")
		}
	}
	switch string(line[sp2+1:]) {
	case "HTTP/1.1":
		r.minor = 1
	case "HTTP/1.0":
		r.minor = 0
	default:
		if bytes.HasPrefix(line[sp2+1:], []byte("HTTP/")) {
			return &httpError{505, "unsupported HTTP version"}
		}
		return badRequest("malformed HTTP version")
	}
	hosts := 0
	var err error
	r.headers, err = parseHeaders(rest, r.headers, true, func(h header) error {
		switch {
		case eqFold(h.name, "host"):
			hosts++
			r.host, r.hasHost = h.value, true
			if !validAuthority(h.value) {
				return badRequest("invalid Host header")
			}
		case eqFold(h.name, "content-length"):
			if r.contentLength, err = mergeLength(r.contentLength, h.value); err != nil {
				return err
			}
		case eqFold(h.name, "transfer-encoding"):
			if r.chunked || !eqFold(h.value, "chunked") {
				return &httpError{501, "unsupported transfer-encoding (only a single chunked is accepted)"}
			}
			r.chunked = true
		case eqFold(h.name, "connection"):
			r.connTokens = splitTokens(h.value, r.connTokens)
		case eqFold(h.name, "upgrade"):
			r.upgrade = h.value
		case eqFold(h.name, "expect"):
			r.expectCont = eqFold(h.value, "100-continue")
		case eqFold(h.name, "x-forwarded-for"):
			r.xff = h.value
		case eqFold(h.name, "cookie"):
			r.cookie = append(r.cookie, h.value)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if r.chunked && r.contentLength >= 0 {
		return badRequest("both Content-Length and Transfer-Encoding")
	}
	if r.chunked && r.minor == 0 {
		return badRequest("Transfer-Encoding in an HTTP/1.0 request")
	}
	if hosts > 1 || (hosts == 0 && r.minor == 1) {
		return badRequest("an HTTP/1.1 request needs exactly one Host header")
	}
	r.closeConn, r.keepAlive = hasToken(r.connTokens, "close"), hasToken(r.connTokens, "keep-alive")
	if r.upgrade != nil && !r.hasConnToken("upgrade") {
		r.upgrade = nil // Upgrade without Connection: upgrade is not an upgrade
	}
	return nil
}

func (r *request) hasConnToken(name string) bool { return hasToken(r.connTokens, name) }

// persistent reports whether the client connection may carry another request.
func (r *request) persistent() bool {
	if r.minor == 0 {
		return r.keepAlive && !r.closeConn
	}
	return !r.closeConn
}

// hasBody reports whether a body follows the request head.
func (r *request) hasBody() bool { return r.chunked || r.contentLength > 0 }

// response is a parsed response head from a backend.
type response struct {
	status        int
	minor         int
	headers       []header
	statusLine    []byte
	contentLength int64
	chunked       bool
	closeConn     bool
	keepAlive     bool
	connTokens    [][]byte
}

func parseResponse(head []byte, r *response) error {
	hs, ct := r.headers[:0], r.connTokens[:0]
	*r = response{headers: hs, connTokens: ct, contentLength: -1}
	line, rest := cutLine(head)
	r.statusLine = line
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errors.New("malformed status line")
	}
	switch line[7] {
	case '0':
		r.minor = 0
	case '1':
		r.minor = 1
	default:
		return errors.New("unsupported HTTP version in response")
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || code > 999 || (len(line) > 12 && line[12] != ' ') {
		return errors.New("malformed status code")
	}
	r.status = code
	r.headers, err = parseHeaders(rest, r.headers, false, func(h header) error {
		switch {
		case eqFold(h.name, "content-length"):
			if r.contentLength, err = mergeLength(r.contentLength, h.value); err != nil {
				return err
			}
		case eqFold(h.name, "transfer-encoding"):
			// Anything but chunked as the last coding is delimited by close.
			r.chunked = hasSuffixFold(h.value, "chunked")
			if !r.chunked {
				r.closeConn = true
			}
		case eqFold(h.name, "connection"):
			r.connTokens = splitTokens(h.value, r.connTokens)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if r.chunked {
		r.contentLength = -1
	}
	r.closeConn = r.closeConn || hasToken(r.connTokens, "close")
	r.keepAlive = hasToken(r.connTokens, "keep-alive")
	return nil
}

// bodyless reports whether a response to method carries no body whatever its
// headers say (RFC 9112 6.3).
func (r *response) bodyless(method []byte) bool {
	return string(method) == "HEAD" || r.status/100 == 1 || r.status == 204 || r.status == 304
}

// hasToken reports whether tokens (a parsed Connection header) include
// name, given in lower case.
func hasToken(tokens [][]byte, name string) bool {
	for _, t := range tokens {
		if eqFold(t, name) {
			return true
		}
	}
	return false
}

// parseHeaders parses header lines (each ending in \n, the block ending with
// an empty line), appending to hs and calling fn for each; strict as for
// parseField.
func parseHeaders(b []byte, hs []header, strict bool, fn func(header) error) ([]header, error) {
	for len(b) > 0 {
		var line []byte
		line, b = cutLine(b)
		if len(line) == 0 {
			break
		}
		h, err := parseField(line, strict)
		if err != nil {
			return hs, err
		}
		if err := fn(h); err != nil {
			return hs, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// parseField parses one header or trailer field line, without its line
// end: a token, a colon, and a value without CR, LF or NUL; strict (a
// client's), without any other control character but HTAB either.
func parseField(line []byte, strict bool) (header, error) {
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		return header{}, badRequest("obsolete line folding in header")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return header{}, badRequest("malformed header line")
	}
	name := line[:colon]
	if !isToken(name) {
		return header{}, badRequest("invalid header name")
	}
	value := trimOWS(line[colon+1:])
	for _, c := range value {
		if c == '\r' || c == '\n' || c == 0 || (strict && ((c < ' ' && c != '\t') || c == 0x7f)) {
			// CR, LF and NUL (RFC 9110 5.5), and from a client every
			// other control character, which no field value may hold
			// either and which net/http refuses too.
			return header{}, badRequest("invalid character in header value")
		}
	}
	return header{name: name, value: value}, nil
}

// cutLine returns the first line of b without its line ending, and the rest.
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func mergeLength(prev int64, v []byte) (int64, error) {
	n, ok := parseLength(v)
	if !ok {
		return 0, badRequest("invalid Content-Length")
	}
	if prev >= 0 && prev != n {
		return 0, badRequest("conflicting Content-Length headers")
	}
	return n, nil
}

// parseLength parses a non-negative decimal with no sign or spaces.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func splitTokens(v []byte, dst [][]byte) [][]byte {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var t []byte
		if i < 0 {
			t, v = v, nil
		} else {
			t, v = v[:i], v[i+1:]
		}
		if t = trimOWS(t); len(t) > 0 {
			dst = append(dst, t)
		}
	}
	return dst
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// eqFold reports whether b equals the lower-case ASCII string s, ignoring case.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func hasSuffixFold(b []byte, s string) bool {
	b = trimOWS(b)
	return len(b) >= len(s) && eqFold(b[len(b)-len(s):], s)
}

// tokenTable marks the RFC 9110 tchar bytes.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

// validTarget rejects control characters, spaces, bytes above 0x7e, a
// fragment ('#': a client never sends one, RFC 9110 7.1), and in the path a
// '%' that does not begin a percent-encoded byte: servers that decode the
// path (net/http among them) refuse it, and a request a backend would refuse
// is refused here, before it is sent. The query is not decoded by servers
// until an application asks, and browsers send a bare '%' in it (?q=100%).
func validTarget(b []byte) bool {
	inPath := true
	for i, c := range b {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
		if c == '?' {
			inPath = false
		}
		if inPath && c == '%' && (i+2 >= len(b) || unhex(b[i+1]) < 0 || unhex(b[i+2]) < 0) {
			return false
		}
	}
	return b[0] == '/' || string(b) == "*" || bytes.HasPrefix(b, []byte("http://")) || bytes.HasPrefix(b, []byte("https://"))
}

// splitAbsolute splits an absolute-form target (http:// or https://, as
// validTarget admits) into its authority and the rest (path and query,
// possibly empty). The authority must be a host with an optional port: no
// user information, not empty.
func splitAbsolute(target []byte) (authority, rest []byte, ok bool) {
	_, after, _ := bytes.Cut(target, []byte("://"))
	end := bytes.IndexAny(after, "/?")
	if end < 0 {
		end = len(after)
	}
	authority, rest = after[:end], after[end:]
	if len(authority) == 0 || !validAuthority(authority) {
		return nil, nil, false
	}
	return authority, rest, true
}

// validAuthority reports whether b holds only the bytes of host [":"
// port]; b may be empty (an empty Host header).
func validAuthority(b []byte) bool {
	for _, c := range b {
		if !authorityTable[c] {
			return false
		}
	}
	return true
}

// authorityTable marks the bytes of host [":" port] (RFC 3986 3.2.2):
// unreserved, percent-encoded, sub-delims, ':' and the brackets of an IP
// literal; not '@' (user information).
var authorityTable = func() (t [256]bool) {
	t = tokenTable
	for _, c := range "!$&'()*+,;=:[]%-._~" {
		t[c] = true
	}
	for _, c := range "#^`|" {
		t[c] = false
	}
	return t
}()
