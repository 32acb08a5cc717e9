package lb

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// fixedBackend answers every request on a connection with the same small
// response, as fast as it can: it measures the proxy, not the backend.
func fixedBackend(b testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n")
	return tcpBackend(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			// Read one request head.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) <= 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

func benchLB(b *testing.B, body string) string {
	backend := fixedBackend(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg, check := parseBalancer(&testing.T{}, balancerYAML(ln.Addr().String(), body, "", backend))
	bal, err := New(cfg, check, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { bal.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// BenchmarkHTTPKeepAlive measures one proxied request on a keep-alive
// connection: its cost and its allocations (the hot path should have none).
func BenchmarkHTTPKeepAlive(b *testing.B) {
	addr := benchLB(b, "")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	br := bufio.NewReader(c)
	buf := make([]byte, 4096)
	readResp := func() {
		n := 0
		for {
			k, err := br.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += k
			if strings.HasSuffix(string(buf[:n]), "hello, world\n") {
				return
			}
		}
	}
	c.Write(req) // warm the backend pool
	readResp()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		readResp()
	}
}

// BenchmarkTCPEcho measures a small exchange through TCP mode.
func BenchmarkTCPMode(b *testing.B) {
	addr := benchLB(b, "    mode: tcp\n")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.Write(req)
		n := 0
		for n < 78 {
			k, err := c.Read(buf[n:])
			if err != nil && err != io.EOF {
				b.Fatal(err)
			}
			n += k
		}
	}
}
