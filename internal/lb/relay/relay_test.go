package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/lb/nbio"
	"github.com/haven-ha/haven/internal/testenv"
)

// pair connects a client through a relay to a server: it returns the
// client's and the server's ends, and the relay between the two middle
// sockets.
func pair(t *testing.T, ls *Loops, idle time.Duration) (client, server *net.TCPConn, p *Pair) {
	t.Helper()
	return pairAfter(t, ls, idle, nil)
}

// pairAfter is pair, calling before with the client's end before the relay
// starts.
func pairAfter(t *testing.T, ls *Loops, idle time.Duration, before func(client *net.TCPConn)) (client, server *net.TCPConn, p *Pair) {
	t.Helper()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	back, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := front.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b, err := net.Dial("tcp", back.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := back.Accept()
	if err != nil {
		t.Fatal(err)
	}
	client, server = c.(*net.TCPConn), s.(*net.TCPConn)
	t.Cleanup(func() { client.Close(); server.Close() })
	client.SetDeadline(time.Now().Add(30 * time.Second))
	server.SetDeadline(time.Now().Add(30 * time.Second))
	if before != nil {
		before(client)
	}
	p, err = ls.Relay(a.(*net.TCPConn), b.(*net.TCPConn), idle)
	if err != nil {
		t.Fatal(err)
	}
	return client, server, p
}

// engines are the two kinds of loops; every test runs on each.
var engines = []struct {
	name  string
	start func(n int) (*Loops, error)
}{{"epoll", New}, {"uring", NewRing}}

// eachEngine runs test once per engine, with a function that starts n
// loops of it (closed when the test ends).
func eachEngine(t *testing.T, test func(t *testing.T, start func(n int) *Loops)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			test(t, func(n int) *Loops {
				t.Helper()
				ls, err := e.start(n)
				if e.name == "uring" && err != nil {
					testenv.Need(t, false, "io_uring loops unavailable: %v", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(ls.Close)
				return ls
			})
		})
	}
}

// wait returns the pair's outcome, failing the test if it does not end.
func wait(t *testing.T, p *Pair) Outcome {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end")
	}
	o, _ := p.Result()
	return o
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestRequestResponse: many small messages each way arrive intact and in
// order, each answer after its request, as keep-alive traffic does; the
// client's half-close reaches the server, which still answers, and its
// close ends the relay as Closed with every byte counted.
func TestRequestResponse(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		ls := start(2)
		client, server, p := pair(t, ls, 0)
		go func() {
			buf := make([]byte, 64)
			for {
				n, err := server.Read(buf)
				if err != nil {
					server.Write([]byte("bye"))
					server.Close()
					return
				}
				server.Write(append([]byte("re:"), buf[:n]...))
			}
		}()
		buf := make([]byte, 64)
		for i := range 2000 {
			msg := []byte{'m', byte('a' + i%26)}
			client.Write(msg)
			n, err := io.ReadAtLeast(client, buf, 5)
			if err != nil || string(buf[:n]) != "re:"+string(msg) {
				t.Fatalf("message %d: %q, %v", i, buf[:n], err)
			}
		}
		client.CloseWrite()
		rest, err := io.ReadAll(client)
		if err != nil || string(rest) != "bye" {
			t.Fatalf("after the half-close: %q, %v; want the server's last answer, then EOF", rest, err)
		}
		if o := wait(t, p); o != Closed {
			t.Errorf("outcome %v, want closed", o)
		}
		if p.AToB != 4000 || p.BToA != 2000*5+3 {
			t.Errorf("counted %d and %d bytes, want 4000 and %d", p.AToB, p.BToA, 2000*5+3)
		}
	})
}

// TestBulkWithSlowReader: 16 MiB each way arrive intact while the client
// reads slowly, so that the relay's writes fill the socket and it must hold
// back; the server's side does the same.
func TestBulkWithSlowReader(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		ls := start(1)
		client, server, p := pair(t, ls, 0)
		data := make([]byte, 16<<20)
		rand.Read(data)
		want := sha256.Sum256(data)
		go func() { // the server echoes everything, then closes
			buf := make([]byte, 32<<10)
			for {
				n, err := server.Read(buf)
				if _, werr := server.Write(buf[:n]); werr != nil || err != nil {
					break
				}
			}
			server.CloseWrite()
		}()
		go func() {
			for off := 0; off < len(data); off += 1 << 20 {
				client.Write(data[off : off+1<<20])
			}
			client.CloseWrite()
		}()
		var got bytes.Buffer
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			n, err := client.Read(buf)
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i%64 == 0 {
				time.Sleep(time.Millisecond) // a slow reader
			}
		}
		if got.Len() != len(data) || sha256.Sum256(got.Bytes()) != want {
			t.Fatalf("echoed %d bytes, want %d identical", got.Len(), len(data))
		}
		if o := wait(t, p); o != Closed {
			t.Errorf("outcome %v, want closed", o)
		}
	})
}

// TestUrgentData: bytes queued behind urgent data (MSG_OOB: FTP's ABOR,
// telnet) are relayed, although the read before them stops short at the
// urgent mark and no new edge comes for them. The urgent byte itself is not
// relayed (out of band, as before).
func TestUrgentData(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		ls := start(1)
		client, server, _ := pair(t, ls, 0)
		time.Sleep(50 * time.Millisecond) // the relay has taken its first events and waits
		// On one processor the loop cannot run between the two sends: both
		// are queued when it reads, behind one edge.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		rc, _ := client.SyscallConn()
		rc.Write(func(fd uintptr) bool {
			unix.Sendto(int(fd), []byte("abc!"), unix.MSG_OOB, nil) // '!' is the urgent byte
			unix.Sendto(int(fd), []byte("def"), 0, nil)
			return true
		})
		server.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 0, 6)
		buf := make([]byte, 16)
		for len(got) < 6 {
			n, err := server.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("the server got %q, then %v: the bytes after the urgent mark were not relayed", got, err)
			}
		}
		if string(got) != "abcdef" {
			t.Errorf("the server got %q, want abcdef", got)
		}
	})
}

// TestReset: a server that resets its connection ends the relay as Failed,
// and the client's connection is closed too.
func TestReset(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		ls := start(1)
		client, server, p := pair(t, ls, 0)
		client.Write([]byte("x"))
		server.Read(make([]byte, 1))
		server.SetLinger(0)
		server.Close()
		if o := wait(t, p); o != Failed {
			t.Errorf("outcome %v, want failed", o)
		}
		if _, err := client.Read(make([]byte, 1)); err == nil {
			t.Error("the client's connection is still open")
		}
	})
}

// TestIdleAndAbort: a pair with no traffic for its idle period ends as
// Idle; Abort ends another at once; both close the client's connection.
func TestIdleAndAbort(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		ls := start(1)
		client, _, p := pair(t, ls, 200*time.Millisecond)
		if o := wait(t, p); o != Idle {
			t.Errorf("outcome %v, want idle", o)
		}
		if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("idle pair: the client read %v, want EOF", err)
		}
		client2, _, p2 := pair(t, ls, 0)
		p2.Abort()
		p2.Abort() // twice: harmless
		if o := wait(t, p2); o != Aborted {
			t.Errorf("outcome %v, want aborted", o)
		}
		if _, err := client2.Read(make([]byte, 1)); err == nil {
			t.Error("aborted pair: the client's connection is still open")
		}
	})
}

// TestNoDescriptorLeft: after many relays end every way, and the loops
// stop with relays running, the process has no more descriptors open than
// before.
func TestNoDescriptorLeft(t *testing.T) {
	eachEngine(t, func(t *testing.T, start func(int) *Loops) {
		before := openFDs(t)
		ls := start(2)
		var ends []*net.TCPConn
		for i := range 50 {
			client, server, p := pair(t, ls, 0)
			ends = append(ends, client, server)
			if i%2 == 0 {
				client.Close()
				server.Close()
			} else {
				p.Abort()
			}
			wait(t, p)
		}
		var running []*Pair
		for range 5 {
			client, server, p := pair(t, ls, 0)
			ends = append(ends, client, server)
			running = append(running, p)
		}
		ls.Close()
		for _, p := range running {
			if o := wait(t, p); o != Aborted {
				t.Errorf("a relay running when the loops stopped: %v, want aborted", o)
			}
		}
		for _, c := range ends {
			c.Close()
		}
		// The loops close their epoll and eventfd descriptors as they return.
		deadline := time.Now().Add(5 * time.Second)
		for openFDs(t) > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if after := openFDs(t); after > before {
			t.Errorf("%d descriptors open after, %d before", after, before)
		}
	})
}

// TestRingFewBuffers: with two receive buffers for eight busy pairs, the
// receives that find none wait for one (ENOBUFS) rather than fail, and
// every byte arrives intact; two pairs whose readers have stopped hold no
// buffer while their sockets are full, so the others keep moving.
func TestRingFewBuffers(t *testing.T) {
	defer func(n int) { ringBufCount = n }(ringBufCount)
	ringBufCount = 2
	ls, err := NewRing(1)
	testenv.Need(t, err == nil, "io_uring loops unavailable: %v", err)
	t.Cleanup(ls.Close)

	// Two pairs whose servers never read: the clients' bytes fill the
	// sockets' buffers and the rest waits in the relay.
	for range 2 {
		stalled, _, _ := pair(t, ls, 0)
		go stalled.Write(make([]byte, 8<<20))
	}

	type result struct {
		i   int
		err error
	}
	results := make(chan result, 8)
	for i := range 8 {
		client, server, _ := pair(t, ls, 0)
		go func() { io.Copy(server, server); server.CloseWrite() }() // echo
		go func() {
			data := make([]byte, 1<<20)
			rand.Read(data)
			go func() { client.Write(data); client.CloseWrite() }()
			got, err := io.ReadAll(client)
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("echoed %d bytes, want the %d sent", len(got), len(data))
			}
			results <- result{i, err}
		}()
	}
	for range 8 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("pair %d: %v", r.i, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the busy pairs stopped moving: a full socket or a missing buffer held them")
		}
	}
}

// TestRingReceiveStaysArmed: keep-alive traffic through a ring loop arms
// each socket's receive about once, not once per message: 2,000 requests
// and answers, each message its own arrival, take a handful of receives
// where one-shot receives took 4,000 (and the kernel a poll for each).
func TestRingReceiveStaysArmed(t *testing.T) {
	ls, err := NewRing(1)
	testenv.Need(t, err == nil, "io_uring loops unavailable: %v", err)
	t.Cleanup(ls.Close)
	client, server, _ := pair(t, ls, 0)
	go io.Copy(server, server) // echo
	buf := make([]byte, 8)
	for i := range 2000 {
		client.Write([]byte{byte(i)})
		if _, err := io.ReadFull(client, buf[:1]); err != nil || buf[0] != byte(i) {
			t.Fatalf("message %d: %v, %v", i, buf[:1], err)
		}
	}
	if n := ls.loops[0].(*ringLoop).recvs.Load(); n > 20 {
		t.Errorf("the loop armed %d receives for 2,000 messages each way; want a few (it stays armed)", n)
	}
}

// TestRingIdleLoopSleeps: a ring loop with nothing to do sleeps instead
// of being preempted by the runtime every 10 ms, as a raw wait is (about
// 100 context switches a second, for nothing). It counts the loop's own
// thread: the process's other threads (the runtime's, the test's) switch
// as often as a busy machine makes them.
func TestRingIdleLoopSleeps(t *testing.T) {
	ls, err := NewRing(1)
	testenv.Need(t, err == nil, "io_uring loops unavailable: %v", err)
	t.Cleanup(ls.Close)
	client, server, _ := pair(t, ls, 0)
	client.Write([]byte("x"))
	server.Read(make([]byte, 1))
	time.Sleep(100 * time.Millisecond) // the loop finds nothing more and waits
	tid := ls.loops[0].(*ringLoop).tid
	before := contextSwitches(t, tid)
	time.Sleep(2 * time.Second)
	if n := contextSwitches(t, tid) - before; n > 50 {
		t.Errorf("the loop's thread switched context %d times in 2 s with an idle relay; want at most 50 (about 4 waits of a second; a preempted raw wait makes about 200)", n)
	}
}

// contextSwitches is how many times thread tid of this process has
// switched context, voluntarily or not.
func contextSwitches(t *testing.T, tid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasSuffix(f[0], "ctxt_switches:") {
			v, _ := strconv.Atoi(f[1])
			n += v
		}
	}
	return n
}

// TestRingRefused: where the kernel refuses the ring (here a flag it does
// not know, as a kernel older than 6.1 refuses DEFER_TASKRUN), NewRing
// fails, saying so, and leaves nothing behind: no descriptor, no
// processor reserved. The caller then uses the epoll loops.
func TestRingRefused(t *testing.T) {
	defer func(f uint32) { ringFlags = f }(ringFlags)
	ringFlags |= 1 << 31
	before, procs := openFDs(t), runtime.GOMAXPROCS(0)
	ls, err := NewRing(2)
	if err == nil {
		ls.Close()
		t.Fatal("NewRing started loops on a ring the kernel must refuse")
	}
	if !strings.Contains(err.Error(), "io_uring_setup") {
		t.Errorf("error %q does not say that io_uring_setup failed", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after the refusal, %d before", after, before)
	}
	if runtime.GOMAXPROCS(0) != procs || nbio.ReservedProcs() != 0 {
		t.Errorf("GOMAXPROCS %d (was %d), %d reserved; want neither changed", runtime.GOMAXPROCS(0), procs, nbio.ReservedProcs())
	}
}

// TestRingFileTable: a ring loop puts each pair's sockets in its file
// table while the pair runs, and takes them out when it ends, so the
// table never keeps a socket open (the client sees the end) and its slots
// serve the pairs after; the pairs that find the table full use their
// descriptors and relay all the same.
func TestRingFileTable(t *testing.T) {
	defer func(n uint64) { ringFileSlots = n }(ringFileSlots)
	ringFileSlots = 4 // two pairs
	ls, err := NewRing(1)
	testenv.Need(t, err == nil, "io_uring loops unavailable: %v", err)
	t.Cleanup(ls.Close)
	l := ls.loops[0].(*ringLoop)

	type conns struct {
		client, server *net.TCPConn
		p              *Pair
	}
	echo := func(c conns, msg string) {
		t.Helper()
		c.client.Write([]byte(msg))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c.server, buf); err != nil || string(buf) != msg {
			t.Fatalf("the server read %q, %v; want %q", buf, err, msg)
		}
		c.server.Write(buf)
		if _, err := io.ReadFull(c.client, buf); err != nil || string(buf) != msg {
			t.Fatalf("the client read %q, %v; want %q", buf, err, msg)
		}
	}
	var cs []conns
	for i := range 3 {
		client, server, p := pair(t, ls, 0)
		cs = append(cs, conns{client, server, p})
		echo(cs[i], fmt.Sprint("through pair ", i))
	}
	if n := ringFiles(t, l.r.fd); n != 4 {
		t.Errorf("the table holds %d sockets with three pairs running and room for two pairs; want 4", n)
	}
	for _, c := range cs {
		c.p.Abort()
		wait(t, c.p)
		if _, err := c.client.Read(make([]byte, 1)); err == nil {
			t.Error("an aborted pair's client connection is still open")
		}
	}
	// Taken out at the loop's next turn.
	testenv.Poll(t, 5*time.Second, "the table empty once every pair ended", func() (bool, string) {
		n := ringFiles(t, l.r.fd)
		return n == 0, fmt.Sprint(n, " sockets")
	})
	client, server, p := pair(t, ls, 0)
	echo(conns{client, server, p}, "in a freed slot")
	if n := ringFiles(t, l.r.fd); n != 2 {
		t.Errorf("the table holds %d sockets with one pair running; want 2", n)
	}
}

// ringFiles counts the files in the file table of the ring with
// descriptor fd: its fdinfo lists each as "slot: socket:[inode]".
func ringFiles(t *testing.T, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	return len(tableEntry.FindAll(b, -1))
}

var tableEntry = regexp.MustCompile(`(?m)^\s*\d+: socket:\[\d+\]$`)
