package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// idleResult is the memory a target holds for many idle client connections.
type idleResult struct {
	Want, Open   int
	Failed       int
	FirstErr     string
	RSSBeforeKiB int64
	RSSAfterKiB  int64
}

// perConnKiB is the RSS growth per open connection.
func (r idleResult) perConnKiB() float64 {
	if r.Open == 0 {
		return 0
	}
	return float64(r.RSSAfterKiB-r.RSSBeforeKiB) / float64(r.Open)
}

// idleRequest is one keep-alive request; every idle connection carries one
// completed exchange so that the proxy holds a full HTTP session for it.
const idleRequest = "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: haven-bench-idle\r\n\r\n"

// idleConns opens n keep-alive connections to addr, makes one request on
// each, holds them all open, and measures the RSS of the process tree rooted
// at pid before and with them. Source addresses are spread over 127.0.0.10+
// so that no source address needs more than 2,000 ephemeral ports.
func idleConns(ctx context.Context, addr string, n int, pid int) idleResult {
	res := idleResult{Want: n, RSSBeforeKiB: treeRSS(pid)}
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()

	conns := make([]net.Conn, n)
	var mu sync.Mutex
	sem := make(chan struct{}, 64) // bounded concurrency of the opening phase
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := openIdle(ctx, addr, net.IPv4(127, 0, 0, byte(10+i/2000)))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				if res.FirstErr == "" {
					res.FirstErr = err.Error()
				}
				return
			}
			conns[i] = c
			res.Open++
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				// Reset rather than close: 10,000 client-side TIME_WAIT
				// sockets would slow every later bind(2) of the load
				// generators.
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
			}
		}
	}()
	// Let the proxy finish any lazy allocation, then sample twice and keep
	// the larger figure.
	t := time.NewTimer(time.Second)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	res.RSSAfterKiB = max(treeRSS(pid), res.RSSAfterKiB)
	// Count the connections the proxy still holds: a read that times out at
	// once means the connection is open and idle.
	var alive int
	var amu sync.Mutex
	for _, c := range conns {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					amu.Lock()
					alive++
					amu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if alive < res.Open {
		if res.FirstErr == "" {
			res.FirstErr = fmt.Sprintf("%d of %d connections closed by the server while idle", res.Open-alive, res.Open)
		}
		res.Failed += res.Open - alive
		res.Open = alive
	}
	res.RSSAfterKiB = max(treeRSS(pid), res.RSSAfterKiB)
	return res
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h), which the
// syscall package does not name.
const ipBindAddressNoPort = 24

// bindNoPort defers the choice of the source port from bind(2) to
// connect(2): bind's own search for a free port is slow once thousands of
// ports are taken, connect's is not.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func openIdle(ctx context.Context, addr string, src net.IP) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}, Control: bindNoPort}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, idleRequest); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		return nil, fmt.Errorf("idle: %s, close=%v", resp.Status, resp.Close)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
