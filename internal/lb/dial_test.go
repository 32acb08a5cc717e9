package lb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// dialSend connects to the balancer and sends a line, as a database
// client sends its startup packet before any answer.
func dialSend(t *testing.T, addr, line string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// readLine reads one line, or fails after a generous deadline (a guard
// against a hang, not a measure).
func readLine(c net.Conn) (string, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if buf[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
}

// closed checks that the balancer closed c: EOF, or a reset (the balancer
// closed it with the client's line unread).
func closed(c net.Conn) error {
	got, err := readLine(c)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return fmt.Errorf("read %q, %v; want the connection closed", got, err)
}

// blackhole returns the address of a listener on ip that never accepts and
// whose accept queue is full: the kernel drops every SYN to it, so a
// connect hangs until its own timeout, as to a fenced database node.
func blackhole(t *testing.T, ip string) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(ip).As4()}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	var queued []net.Conn
	t.Cleanup(func() {
		for _, c := range queued {
			c.Close()
		}
	})
	testenv.Poll(t, 10*time.Second, "the blackhole's accept queue full", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true, ""
		}
		queued = append(queued, c)
		return false, fmt.Sprintf("%d connections queued", len(queued))
	})
	return addr
}

// A connection being made to a backend that never answers is cancelled
// when the backend leaves the pool, not left to the connect timeout (a
// minute here): it goes to the backend that replaced it, or is closed when
// none did, or is held until one appears.
func TestDialCancelledWhenBackendLeaves(t *testing.T) {
	for _, tt := range []struct {
		name string
		hold time.Duration
		via  [][]string // the pools the balancer is given after the blackhole's, in turn: a name answers
		want string     // what the client reads: an answer, or "" for its connection closed
	}{
		{"replaced", 0, [][]string{{"b"}}, "b hello"},
		{"emptied", 0, [][]string{nil}, ""},
		{"emptied, held, then replaced", time.Minute, [][]string{nil, {"b"}}, "b hello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hole := blackhole(t, "127.0.0.2")
			tl := startLB(t, "    mode: tcp\n    passive: {consecutive_failures: 0}\n    timeouts: {connect: 1m}\n", "", hole)
			tl.setHold(t, tt.hold)
			c := dialSend(t, tl.addr, "hello")
			testenv.Poll(t, 10*time.Second, "a connection being made to the blackhole", func() (bool, string) {
				n := tl.dialing("b1")
				return n == 1, fmt.Sprintf("%d dials", n)
			})
			for _, names := range tt.via {
				var bs []*config.Backend
				for _, n := range names {
					bs = append(bs, &config.Backend{Name: n, Address: namedEcho(t, n), Weight: new(1)})
				}
				if err := tl.SetBackends(bs); err != nil {
					t.Fatal(err)
				}
				if len(bs) == 0 && tt.hold > 0 {
					tl.waitHeld(t, 1)
				}
			}
			if tt.want == "" {
				if err := closed(c); err != nil {
					t.Fatalf("the connection being made to the removed backend: %v", err)
				}
				return
			}
			if got, err := readLine(c); got != tt.want {
				t.Fatalf("got %q, %v; want %q: the dial to the removed backend was not cancelled", got, err, tt.want)
			}
		})
	}
}

// dialing counts the connections being made to the backend named name.
func (tl *testLB) dialing(name string) int {
	b := tl.pool.Load().find(name)
	if b == nil {
		return 0
	}
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	return len(b.dials)
}

// A connection being made to a backend that is marked down is cancelled
// too, and moves to a backend that is up.
func TestDialCancelledWhenBackendGoesDown(t *testing.T) {
	// Each backend is checked on the same port of its own address, so
	// that closing one listener takes one backend down.
	checkA, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer checkA.Close()
	port := checkA.Addr().(*net.TCPAddr).Port
	checkB, err := net.Listen("tcp", net.JoinHostPort("127.0.0.3", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d on 127.0.0.3 for the second check: %v", port, err)
	}
	defer checkB.Close()
	for _, ln := range []net.Listener{checkA, checkB} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	echoLn, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	echoLn.Close()
	echo := namedEchoAt(t, "b", echoLn.Addr().String())

	checks := fmt.Sprintf("  up:\n    tcp: {port: %d}\n    interval: 100ms\n    timeout: 100ms\n    rise: 1\n    fall: 1\n", port)
	tl := startLB(t, "    mode: tcp\n    check: up\n    passive: {consecutive_failures: 0}\n    timeouts: {connect: 1m}\n", checks, blackhole(t, "127.0.0.2"), echo)
	testenv.Poll(t, 10*time.Second, "both backends up", func() (bool, string) {
		st := tl.Status()
		return st.Backends[0].Health.State.String() == "up" && st.Backends[1].Health.State.String() == "up", fmt.Sprintf("%s, %s", st.Backends[0].Health.State, st.Backends[1].Health.State)
	})
	if err := tl.SetState("b2", Drain); err != nil {
		t.Fatal(err)
	}
	c := dialSend(t, tl.addr, "hello")
	testenv.Poll(t, 10*time.Second, "a connection being made to the blackhole", func() (bool, string) {
		n := tl.dialing("b1")
		return n == 1, fmt.Sprintf("%d dials", n)
	})
	if err := tl.SetState("b2", Ready); err != nil {
		t.Fatal(err)
	}
	checkA.Close() // b1 fails its next probe: down
	if got, err := readLine(c); got != "b hello" {
		t.Fatalf("got %q, %v; want b's answer: the dial to the backend marked down was not cancelled", got, err)
	}
	if st := tl.Status(); st.Backends[0].ConnectFailures != 0 {
		t.Errorf("the cancelled dial counts as %d connect failures of b1; want 0", st.Backends[0].ConnectFailures)
	}
}
