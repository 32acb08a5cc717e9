package lb

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/lb/proxyproto"
	"github.com/haven-ha/haven/internal/testenv"
)

// The proxy in front (trusted) dials from 127.0.0.2, a stranger from
// 127.0.0.3; both reach the balancer on 127.0.0.1.
const (
	trustedProxy = "127.0.0.2"
	stranger     = "127.0.0.9"
)

// dialFrom opens a connection to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// proxyHeader encodes a PROXY header for a client at 198.18.5.7:4567 that
// connected to dst.
func proxyHeader(t *testing.T, version int, dst string) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: version, Command: proxyproto.Proxy,
		Source: netip.MustParseAddrPort("198.18.5.7:4567"), Destination: netip.MustParseAddrPort(dst)}
	var b []byte
	var err error
	if version == 1 {
		b, err = h.AppendV1(nil)
	} else {
		b, err = h.AppendV2(nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer reads one HTTP response from c and returns its body, or the error
// that ended the connection instead.
func answer(c net.Conn) (string, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), err
}

// TestAcceptProxyHTTP: behind a trusted proxy, the backend sees the client
// the PROXY header names (v1 and v2, the header and the request in one
// segment or the header split across two), on every request of a
// keep-alive connection; a connection from an untrusted source, or a
// trusted one without a valid header, is closed with no answer and counted.
func TestAcceptProxyHTTP(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(backend.Close)
	// A short header timeout, so that a header never completed is counted
	// as a timeout soon (see "proxy closes in the middle of a header").
	lb := startLB(t, "    accept_proxy_from: ["+trustedProxy+", 198.51.100.0/24]\n    timeouts: {client_header: 2s}\n", "", strings.TrimPrefix(backend.URL, "http://"))
	const req = "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n"

	for _, tc := range []struct {
		name    string
		version int
		split   int // write the header's first split bytes, pause, then the rest (0: header and request in one write)
	}{
		{"v1 with the request", 1, 0},
		{"v2 with the request", 2, 0},
		{"v1 split", 1, 9},
		{"v2 split", 2, 14},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, trustedProxy, lb.addr)
			h := proxyHeader(t, tc.version, lb.addr)
			if tc.split > 0 {
				c.Write(h[:tc.split])
				time.Sleep(50 * time.Millisecond)
				c.Write(append(h[tc.split:], req...))
			} else {
				c.Write(append(h, req...))
			}
			for i := range 2 {
				if i > 0 {
					io.WriteString(c, req)
				}
				got, err := answer(c)
				if err != nil || got != "200 198.18.5.7" {
					t.Fatalf("request %d: %q, %v; want 200 with X-Forwarded-For 198.18.5.7", i+1, got, err)
				}
			}
		})
	}

	refused := func(name, src string, first []byte) {
		t.Run(name, func(t *testing.T) {
			c := dialFrom(t, src, lb.addr)
			c.Write(first)
			if got, err := answer(c); err == nil {
				t.Fatalf("answered %q: the connection must be refused", got)
			}
		})
	}
	refused("untrusted source with a header", stranger, append(proxyHeader(t, 2, lb.addr), req...))
	refused("untrusted source without one", stranger, []byte(req))
	refused("trusted source without a header", trustedProxy, []byte(req))
	refused("trusted source, malformed v1", trustedProxy, []byte("PROXY TCP4 198.18.5.7 127.0.0.1 04567 80\r\n"+req))
	t.Run("proxy closes in the middle of a header", func(t *testing.T) {
		c := dialFrom(t, trustedProxy, lb.addr)
		c.Write(proxyHeader(t, 2, lb.addr)[:10])
		c.(*net.TCPConn).CloseWrite()
		if got, err := answer(c); err == nil {
			t.Fatalf("answered %q", got)
		}
		// Refused for the FIN (invalid), not left waiting for the rest
		// until client_header (timeout).
		testenv.Poll(t, 20*time.Second, "the refusal counted", func() (bool, string) {
			inv, to := lb.proxyRefused[proxyInvalid].Load(), lb.proxyRefused[proxyTimeout].Load()
			return inv+to == 3, fmt.Sprint(inv, " invalid, ", to, " timeout")
		})
	})

	for reason, want := range map[int]uint64{proxyUntrusted: 2, proxyInvalid: 3, proxyTimeout: 0} {
		if got := lb.proxyRefused[reason].Load(); got != want {
			t.Errorf("refused as %s: %d, want %d", proxyReasonNames[reason], got, want)
		}
	}
}

// TestAcceptProxyTCP: in TCP mode the client a trusted proxy named is the
// one haven passes on in its own PROXY header to the backend, and the
// client's first bytes, sent with the header, reach the backend intact.
func TestAcceptProxyTCP(t *testing.T) {
	backend := tcpBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			fmt.Fprintf(c, "no header: %v", err)
			return
		}
		data, _ := io.ReadAll(br)
		fmt.Fprintf(c, "%s %s %s", h.Source, h.Destination, data)
	})
	lb := startLB(t, "    mode: tcp\n    proxy_protocol: v1\n    accept_proxy_from: [127.0.0.2/31]\n", "", backend)
	c := dialFrom(t, trustedProxy, lb.addr)
	c.Write(append(proxyHeader(t, 2, "198.18.0.1:443"), "hello"...))
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if want := "198.18.5.7:4567 198.18.0.1:443 hello"; string(got) != want {
		t.Errorf("backend saw %q, want %q", got, want)
	}

	c = dialFrom(t, stranger, lb.addr)
	c.Write(append(proxyHeader(t, 2, "198.18.0.1:443"), "hello"...))
	c.(*net.TCPConn).CloseWrite()
	if got, _ := io.ReadAll(c); len(got) > 0 {
		t.Errorf("a connection from outside accept_proxy_from reached the backend, which answered %q", got)
	}
	if n := lb.proxyRefused[proxyUntrusted].Load(); n != 1 {
		t.Errorf("refused as untrusted: %d, want 1", n)
	}
}

// TestAcceptProxyTLS: the PROXY header comes before the TLS handshake, and
// the client it names is the one HTTP/2 and HTTP/1.1 requests over TLS
// forward in X-Forwarded-For.
func TestAcceptProxyTLS(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(backend.Close)
	cert, key := writeCert(t, t.TempDir(), "shop.test")
	lb := startLB(t, "    tls: {cert: "+cert+", key: "+key+"}\n    accept_proxy_from: ["+trustedProxy+"]\n", "", strings.TrimPrefix(backend.URL, "http://"))
	for _, proto := range []string{"h2", "http/1.1"} {
		t.Run(proto, func(t *testing.T) {
			var protos http.Protocols
			protos.SetHTTP1(proto == "http/1.1")
			protos.SetHTTP2(proto == "h2")
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
				Protocols:       &protos,
				DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
					c := dialFrom(t, trustedProxy, addr)
					_, err := c.Write(proxyHeader(t, 2, addr))
					return c, err
				},
			}
			t.Cleanup(tr.CloseIdleConnections)
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + lb.addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := map[string]int{"h2": 2, "http/1.1": 1}[proto]; string(body) != "198.18.5.7" || resp.ProtoMajor != want {
				t.Errorf("X-Forwarded-For %q over %s, want 198.18.5.7 over %s", body, resp.Proto, proto)
			}
		})
	}
}
