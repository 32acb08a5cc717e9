package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/certs"
)

// TestAuthenticatedReads: with authenticate_reads, a read off loopback
// needs the read token or the write token; the read token never allows a
// change; the probes that load balancers use stay open.
func TestAuthenticatedReads(t *testing.T) {
	s := newServer(t, Options{Addr: "0.0.0.0:9900", TokenFile: writeToken(t, "writer\n"), ReadTokenFile: writeToken(t, "reader\n"), AuthenticateReads: true})
	calls := mutating(s)
	s.HandleProbe("GET /primary", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	base := serve(t, s)

	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/status", "", 401},
		{"GET", "/api/v1/status", "guess", 401},
		{"GET", "/api/v1/status", "reader", 200},
		{"GET", "/api/v1/status", "writer", 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/primary", "", 200},
		{"POST", "/api/v1/things/a/poke", "reader", 401},
		{"POST", "/api/v1/things/a/poke", "writer", 200},
	} {
		if r := call(t, tc.method, base+tc.path, tc.token); r.status != tc.want {
			t.Errorf("%s %s with token %q = %d %s, want %d", tc.method, tc.path, tc.token, r.status, r.body, tc.want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the changing handler ran %d times, want once (the write token's)", n)
	}
	if _, err := New(Options{Addr: "0.0.0.0:9900", AuthenticateReads: true}); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("authenticate_reads without a token: %v", err)
	}
}

// TestTLS: with TLS the admin API answers HTTPS with the node's
// certificate, which a client holding the cluster's CA verifies, and
// refuses plain HTTP.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(dir, "test", []certs.Node{{Name: "lb1", Addresses: []string{"127.0.0.1"}}}, certs.Options{}); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "lb1.pem"), filepath.Join(dir, "lb1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Options{Addr: "127.0.0.1:9900", TLS: &tls.Config{Certificates: []tls.Certificate{pair}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()

	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET https://%s/healthz with the CA: %v", addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("GET https://%s/healthz = %d, TLS %v", addr, resp.StatusCode, resp.TLS != nil)
	}
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + addr + "/healthz"); err == nil {
		t.Error("a client without the cluster's CA accepted the certificate")
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/healthz"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Error("plain HTTP was served on the TLS listener")
	}
}

// TestTokenCookieReadsOnly: a browser sends the read token in a cookie
// (it cannot set a header on a page or its event stream); the cookie
// opens reads, never a change, even with the write token in it; and a
// change sent from another site's page is refused whatever the token.
func TestTokenCookieReadsOnly(t *testing.T) {
	s := newServer(t, Options{Addr: "0.0.0.0:9900", TokenFile: writeToken(t, "writer\n"), ReadTokenFile: writeToken(t, "reader\n"), AuthenticateReads: true})
	calls := mutating(s)
	base := serve(t, s)
	send := func(method, path, cookie, token, origin string) int {
		req, _ := http.NewRequest(method, base+path, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: TokenCookie, Value: cookie})
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	host := strings.TrimPrefix(base, "http://")
	for _, tc := range []struct {
		method, path, cookie, token, origin string
		want                                int
	}{
		{"GET", "/api/v1/status", "reader", "", "", 200},
		{"GET", "/api/v1/status", "guess", "", "", 401},
		{"POST", "/api/v1/things/a/poke", "writer", "", "", 401},
		{"POST", "/api/v1/things/a/poke", "", "writer", "http://evil.example", 403},
		{"POST", "/api/v1/things/a/poke", "", "writer", "http://" + host, 200},
	} {
		if got := send(tc.method, tc.path, tc.cookie, tc.token, tc.origin); got != tc.want {
			t.Errorf("%s %s cookie %q token %q origin %q = %d, want %d", tc.method, tc.path, tc.cookie, tc.token, tc.origin, got, tc.want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the changing handler ran %d times, want once (the header's token from the agent's own page)", n)
	}
}

// TestLoopbackRefusesRebinding: a loopback admin port takes changes
// without a token, but only addressed to loopback: a page on a name made
// to resolve to 127.0.0.1 (DNS rebinding) sends a Host and an Origin that
// agree with each other, and is refused.
func TestLoopbackRefusesRebinding(t *testing.T) {
	s := newServer(t, Options{Addr: "127.0.0.1:9900"})
	calls := mutating(s)
	base := serve(t, s)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	for host, want := range map[string]int{
		"127.0.0.1:" + port:         200,
		"localhost:" + port:         200,
		"[::1]:" + port:             200,
		"evil.example:" + port:      403,
		"198.18.1.11:" + port:       403,
		"127.0.0.1.evil.example:80": 403,
	} {
		req, _ := http.NewRequest("POST", base+"/api/v1/things/a/poke", nil)
		req.Host = host
		req.Header.Set("Origin", "http://"+host)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the changing handler ran %d times, want 3 (the loopback hosts)", n)
	}
}
