package lb

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/lb/proxyproto"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestWebSocketUpgrade: an Upgrade request is switched and bytes flow both
// ways through the balancer.
func TestWebSocketUpgrade(t *testing.T) {
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	})
	lb := startLB(t, "", "", b.addr())
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("status line %q, want 101", status)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	io.WriteString(c, "hello\n")
	got, err := br.ReadString('\n')
	if err != nil || got != "echo:hello\n" {
		t.Errorf("through the tunnel: %q, %v", got, err)
	}
}

// TestChunkedBodies: a chunked request body and a chunked response pass
// through intact, on a reused keep-alive connection; an HTTP/1.0 client
// gets the response de-chunked.
func TestChunkedBodies(t *testing.T) {
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", itoa64(int64(len(body))))
		w.(http.Flusher).Flush() // forces a chunked response
		w.Write(body)
	})
	lb := startLB(t, "", "", b.addr())
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil || string(body) != "hello world" || resp.Header.Get("X-Len") != "11" {
			t.Errorf("request %d: body %q (%v), X-Len %s", i, body, err, resp.Header.Get("X-Len"))
		}
		if len(resp.TransferEncoding) == 0 {
			t.Errorf("request %d: response not chunked: %v", i, resp.Header)
		}
	}
	got := rawExchange(t, lb.addr, "POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
	if !strings.HasSuffix(got, "\r\n\r\nabc") || strings.Contains(strings.ToLower(got), "transfer-encoding") {
		t.Errorf("HTTP/1.0 client got %q, want a de-chunked body", got)
	}
}

// TestExpectContinue: haven answers 100-continue itself and forwards the body.
func TestExpectContinue(t *testing.T) {
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	})
	lb := startLB(t, "", "", b.addr())
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("got %q, want 100 Continue before the body is sent", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "data")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "data" {
		t.Errorf("body %q", body)
	}
}

func itoa64(n int64) string { return big.NewInt(n).String() }

// writeCert writes a self-signed certificate for name into dir.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestTLSAndHTTP2: TLS is terminated, HTTP/2 is negotiated by ALPN and
// forwarded, HTTP/1.1 over TLS uses the fast path, and a replaced
// certificate is served without a restart.
func TestTLSAndHTTP2(t *testing.T) {
	b := newCountingBackend(t, "b1", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	})
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "one.test")
	lb := startLB(t, "    tls: {cert: "+cert+", key: "+key+"}\n", "", b.addr())
	serverName := func() string {
		c, err := tls.Dial("tcp", lb.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	var onlyH2 http.Protocols
	onlyH2.SetHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: &onlyH2}}
	resp, err := h2.Get("https://" + lb.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "https" {
		t.Errorf("h2: proto %s body %q, want HTTP/2 and X-Forwarded-Proto https", resp.Proto, body)
	}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err = h1.Get("https://" + lb.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || string(body) != "https" {
		t.Errorf("h1 over TLS: proto %s body %q", resp.Proto, body)
	}
	if cn := serverName(); cn != "one.test" {
		t.Fatalf("certificate %q, want one.test", cn)
	}
	// Replace the files: the new certificate is picked up on a later handshake.
	time.Sleep(10 * time.Millisecond) // a different modification time
	writeCert(t, dir, "two.test")
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(cert, future, future)
	testenv.Poll(t, 5*time.Second, "the new certificate", func() (bool, string) {
		cn := serverName()
		return cn == "two.test", cn
	})
}

// TestTCPMode: bytes pass both ways on the relay's event loops, a
// half-close from the client reaches the backend while the backend can
// still answer, an unreachable backend is skipped, and PROXY protocol v2
// tells the backend the client's address.
func TestTCPMode(t *testing.T) {
	headers := make(chan *proxyproto.Header, 4)
	backend := tcpBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err != nil {
			return
		}
		headers <- h
		data, _ := io.ReadAll(br) // until the client's half-close
		c.Write([]byte("got:" + string(data)))
	})
	var before uint64
	if ls := tcpRelays(slog.Default()); ls != nil {
		before = ls.Started()
	}
	dead := freeAddr(t) // nothing listens here
	lb := startLB(t, "    mode: tcp\n    proxy_protocol: v2\n    algorithm: roundrobin\n    passive: {consecutive_failures: 0}\n", "", dead, backend)
	for i := range 3 {
		c, err := net.Dial("tcp", lb.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "got:ping" {
			t.Fatalf("connection %d: %q, %v (half-close must let the backend answer)", i, got, err)
		}
		h := <-headers
		if h.Source.Addr().String() != "127.0.0.1" || h.Destination.String() != lb.addr {
			t.Errorf("PROXY header %+v, want source 127.0.0.1 and destination %s", h, lb.addr)
		}
	}
	// The bytes went through the event loops, not a fallback (unless the
	// environment asked for goroutines).
	if os.Getenv("HAVEN_TCP_RELAY") != "goroutines" {
		ls := tcpRelays(slog.Default())
		if ls == nil || ls.Started()-before < 3 {
			t.Errorf("relays %v: the 3 connections were not relayed on the event loops", ls)
		}
	}
}

// TestTCPModeBulk: a large transfer both ways (the relay's full reads and
// partial writes) arrives intact, and the echo of it too.
func TestTCPModeBulk(t *testing.T) {
	backend := tcpBackend(t, func(c net.Conn) {
		io.Copy(c, c) // echo until the client half-closes
		c.(*net.TCPConn).CloseWrite()
	})
	lb := startLB(t, "    mode: tcp\n", "", backend)
	c, err := net.Dial("tcp", lb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 8<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	var got bytes.Buffer
	if _, err := io.Copy(&got, c); err != nil {
		t.Fatal(err)
	}
	if got.Len() != len(data) || sha256.Sum256(got.Bytes()) != want {
		t.Errorf("echoed %d bytes, want %d identical bytes", got.Len(), len(data))
	}
}
