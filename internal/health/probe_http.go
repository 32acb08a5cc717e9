package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/config"
)

const (
	defaultBodyLimit = 64 << 10
	// maxHeaderBytes bounds a probe's response head; a health endpoint
	// needs far less, and a broken one must not cost memory.
	maxHeaderBytes = 64 << 10
	userAgent      = "haven-health/1"
)

// httpProber sends one request per probe on a fresh connection and checks
// the status and, if asked, the start of the body. Redirects are not
// followed: a 3xx is the target's answer.
type httpProber struct {
	scheme     string // "http" or "https"; also the error prefix
	port       int
	method     string
	ref        *url.URL // path and query
	host       string   // Host header; "" means the dialled address
	status     []int    // accepted codes; nil means 200-399
	wantStatus string   // status, for errors
	body       string
	re         *regexp.Regexp
	limit      int64
	client     *http.Client
}

func newHTTPProber(scheme string, c *config.HTTPProbe) (*httpProber, error) {
	p := &httpProber{
		scheme: scheme,
		port:   c.Port,
		method: strings.ToUpper(c.Method),
		host:   c.Host,
		status: c.ExpectStatus,
		body:   c.ExpectBody,
		limit:  int64(c.BodyLimit),
	}
	if p.method == "" {
		p.method = http.MethodGet
	}
	if p.limit <= 0 {
		p.limit = defaultBodyLimit
	}
	path := c.Path
	if path == "" {
		path = "/"
	}
	ref, err := url.Parse(path)
	if err != nil || !strings.HasPrefix(path, "/") || ref.Host != "" {
		return nil, fmt.Errorf("%s.path %q is not a path such as /healthz", scheme, path)
	}
	p.ref = ref
	if c.ExpectRegex != "" {
		if p.re, err = regexp.Compile(c.ExpectRegex); err != nil {
			return nil, fmt.Errorf("%s.expect_regex: %w", scheme, err)
		}
	}
	p.wantStatus = describeStatus(p.status)
	p.client = &http.Client{
		Transport: newTransport(scheme, c),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return p, nil
}

// newTransport returns a transport of the probe's own: no proxy from the
// environment, no connection reuse (every probe tests a fresh connect), no
// transparent gzip (the body limit counts the bytes the target sent).
func newTransport(scheme string, c *config.HTTPProbe) *http.Transport {
	tr := &http.Transport{
		DialContext:            (&net.Dialer{}).DialContext,
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	if scheme == "https" {
		verify := c.TLSVerify == nil || *c.TLSVerify
		if verify {
			// Load the system roots now, once per process, so that the
			// first probe's timeout is not spent parsing them.
			x509.SystemCertPool()
		}
		tr.TLSClientConfig = &tls.Config{
			ServerName:         serverName(c),
			InsecureSkipVerify: !verify,
		}
	}
	return tr
}

// serverName is the SNI to send: sni, else the Host header's name, else ""
// (the transport then uses the target's host name; an IP sends none).
func serverName(c *config.HTTPProbe) string {
	if c.SNI != "" {
		return c.SNI
	}
	if h, _, err := net.SplitHostPort(c.Host); err == nil {
		return h
	}
	return c.Host
}

func describeStatus(codes []int) string {
	switch len(codes) {
	case 0:
		return "200-399"
	case 1:
		return strconv.Itoa(codes[0])
	}
	s := make([]string, len(codes))
	for i, c := range codes {
		s[i] = strconv.Itoa(c)
	}
	return "one of " + strings.Join(s, ", ")
}

func (p *httpProber) Probe(ctx context.Context, target string) error {
	def := "80"
	if p.scheme == "https" {
		def = "443"
	}
	addr, err := dialAddr(target, p.port, def)
	if err != nil {
		return fmt.Errorf("%s: %w", p.scheme, err)
	}
	u := *p.ref
	u.Scheme, u.Host = p.scheme, addr
	req, err := http.NewRequestWithContext(ctx, p.method, u.String(), nil)
	if err != nil {
		return p.errorf("%w", err)
	}
	req.Host = p.host
	req.Close = true
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return p.errorf("%w", ctxCause(ctx, httpCause(err)))
	}
	defer resp.Body.Close()
	if !p.statusOK(resp.StatusCode) {
		return p.errorf("status %d, want %s", resp.StatusCode, p.wantStatus)
	}
	return p.checkBody(ctx, resp.Body)
}

// errorf prefixes an error with the request: "http: GET /healthz: ...".
func (p *httpProber) errorf(format string, args ...any) error {
	return fmt.Errorf("%s: %s %s: "+format, append([]any{p.scheme, p.method, p.ref.RequestURI()}, args...)...)
}

func (p *httpProber) statusOK(code int) bool {
	if p.status == nil {
		return code >= 200 && code <= 399
	}
	return slices.Contains(p.status, code)
}

// checkBody reads at most limit bytes, and only when there is something to
// match; the connection is closed after the probe either way.
func (p *httpProber) checkBody(ctx context.Context, r io.Reader) error {
	if p.body == "" && p.re == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(r, p.limit))
	if err != nil {
		return p.errorf("read body: %w", ctxCause(ctx, netCause(err)))
	}
	if p.body != "" && !bytes.Contains(b, []byte(p.body)) {
		return fmt.Errorf("%s: body does not contain %q", p.scheme, p.body)
	}
	if p.re != nil && !p.re.Match(b) {
		return fmt.Errorf("%s: body does not match %q", p.scheme, p.re.String())
	}
	return nil
}

// httpCause shortens the client's errors: "dial 10.0.0.5:80: connection
// refused" rather than `Get "http://10.0.0.5:80/": dial tcp 10.0.0.5:80:
// connect: connection refused`.
func httpCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Addr != nil {
		return fmt.Errorf("dial %s: %w", op.Addr, netCause(op.Err))
	}
	return netCause(err)
}
