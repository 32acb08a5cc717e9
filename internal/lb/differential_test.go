package lb

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The balancer parses HTTP/1 heads itself, for speed; a proxy whose parser
// reads a request differently from the server behind it is how requests are
// smuggled. FuzzDifferentialNetHTTP reads every input with haven's parser and
// with Go's net/http (http.ReadRequest plus the checks net/http's server adds
// to it), and fails when both accept a request but read it differently
// (method, target, Host, header fields, body framing, body, or where the next
// request begins), or when haven accepts a request that net/http refuses.
// `make fuzz` runs it; go test runs its seeds, which include every request
// of the edge-case table and every finding (testdata/fuzz holds those the
// fuzzer wrote).
//
// What it found, each now refused by haven as net/http refuses it: control
// characters other than HTAB in a field value; a Host value with bytes no
// host may have (a space); a '%' not followed by two hex digits in the
// target; a target "*0" (asterisk-form is "*" alone); in chunked framing a
// bare LF as a line end (after a size, after chunk data, in trailers:
// CVE-2025-22871's ambiguity) and a space between a size and its extension.

// parsedRequest is one request as a parser read it.
type parsedRequest struct {
	Method, Target, Host string
	// Header holds the fields by canonical name, in order, without Host,
	// Content-Length and Transfer-Encoding: net/http moves those into the
	// request's own fields, and the framing is compared on its own.
	Header  map[string][]string
	Chunked bool
	Length  int64 // the body's length when not chunked
	Body    string
	// Consumed is how many bytes of the input the request took, head and
	// body: where the next pipelined request begins.
	Consumed int
}

var framingFields = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true}

// parseWithHaven reads one request as the balancer does: readHead, then
// parseRequest, then the body by the framing it found.
func parseWithHaven(data []byte) (*parsedRequest, error) {
	rd := bytes.NewReader(data)
	br := bufio.NewReaderSize(rd, 64) // small: heads span several buffers
	head, err := readHead(br, nil, 64<<10)
	if err != nil {
		return nil, err
	}
	var r request
	if err := parseRequest(head, &r); err != nil {
		return nil, err
	}
	p := &parsedRequest{Method: string(r.method), Target: string(r.target), Host: string(r.host),
		Header: map[string][]string{}, Chunked: r.chunked, Length: max(r.contentLength, 0)}
	if r.authority != nil {
		p.Host = string(r.authority)
	}
	for _, h := range r.headers {
		name := textproto.CanonicalMIMEHeaderKey(string(h.name))
		if !framingFields[name] {
			p.Header[name] = append(p.Header[name], string(h.value))
		}
	}
	var body bytes.Buffer
	buf := make([]byte, 100)
	switch {
	case r.chunked:
		_, err = copyChunked(&body, br, buf, true, 0, true)
	case r.contentLength > 0:
		_, err = copyN(&body, br, r.contentLength, buf)
	}
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	p.Body = body.String()
	p.Consumed = len(data) - br.Buffered() - rd.Len()
	return p, nil
}

// parseWithNetHTTP reads one request as a net/http server does.
func parseWithNetHTTP(data []byte) (*parsedRequest, error) {
	rd := bytes.NewReader(data)
	br := bufio.NewReader(rd)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	// What net/http's server checks after reading a request (server.go,
	// conn.readRequest). http.ReadRequest drops the Host fields, which the
	// server counts first: read them as it does.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
	tp.ReadLine()
	fields, _ := tp.ReadMIMEHeader() // read once already without an error
	hosts, haveHost := fields["Host"]
	switch {
	case req.ProtoMajor != 1:
		return nil, fmt.Errorf("unsupported protocol %s", req.Proto)
	case req.ProtoAtLeast(1, 1) && len(hosts) == 0 && req.Method != "CONNECT":
		return nil, fmt.Errorf("missing required Host header (present: %v)", haveHost)
	case len(hosts) > 1:
		return nil, fmt.Errorf("too many Host headers")
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		return nil, fmt.Errorf("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("invalid header value %q", v)
			}
		}
	}
	p := &parsedRequest{Method: req.Method, Target: req.RequestURI, Host: req.Host, Header: map[string][]string{},
		Chunked: len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked", Length: max(req.ContentLength, 0)}
	for k, vv := range req.Header {
		if !framingFields[k] {
			p.Header[k] = vv
		}
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	p.Body = string(body)
	p.Consumed = len(data) - br.Buffered() - rd.Len()
	return p, nil
}

// differ compares haven's and net/http's reading of data, and says what
// is wrong ("" when nothing is).
func differ(data []byte) string {
	if len(data) > 0 && (data[0] == '\r' || data[0] == '\n') {
		// Both servers skip empty lines before a request; http.ReadRequest,
		// below the server's loop, does not. Compare what follows them.
		data = bytes.TrimLeft(data, "\r\n")
	}
	h, herr := parseWithHaven(data)
	if herr != nil {
		return "" // haven refuses: nothing reaches a backend
	}
	n, nerr := parseWithNetHTTP(data)
	if nerr != nil {
		return fmt.Sprintf("haven accepts what net/http refuses (%.200v):\nhaven read %.400v", nerr, fmt.Sprintf("%+v", *h))
	}
	if h.Chunked {
		n.Length = 0 // net/http says -1: unknown
	}
	if !reflect.DeepEqual(h, n) {
		return fmt.Sprintf("read differently:\nhaven    %.400v\nnet/http %.400v", fmt.Sprintf("%+v", *h), fmt.Sprintf("%+v", *n))
	}
	return ""
}

func FuzzDifferentialNetHTTP(f *testing.F) {
	for _, tc := range edgeCases() {
		f.Add([]byte(tc.raw + tc.then))
	}
	for _, s := range []string{
		"GET /a?b=c HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*\r\nAccept: text/html\r\n\r\nGET /next HTTP/1.1\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
		"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX:\tv\t\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if msg := differ(data); msg != "" {
			t.Fatalf("%.400q\n%s", data, msg)
		}
	})
}
