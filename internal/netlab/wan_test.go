package netlab_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// rtt returns the time a ping from from to to takes, socket set-up
// included: never less than the round trip.
func rtt(t *testing.T, from *netlab.Host, to netip.Addr) time.Duration {
	t.Helper()
	start := time.Now()
	if err := ping(from, to, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// minRTT is the least of count pings' rtt.
func minRTT(t *testing.T, from *netlab.Host, to netip.Addr, count int) time.Duration {
	t.Helper()
	least := time.Duration(1<<63 - 1)
	for range count {
		least = min(least, rtt(t, from, to))
	}
	return least
}

// delayed checks that every one of count pings from from to to takes at
// least twice the one-way delay d.
func delayed(t *testing.T, from *netlab.Host, to netip.Addr, d time.Duration, count int) {
	t.Helper()
	for i := range count {
		if got := rtt(t, from, to); got < 2*d {
			t.Fatalf("ping %d from %s to %s took %v, less than twice the delay %v", i, from, to, got, d)
		}
	}
}

// undelayed checks that the fastest of 10 pings from from to to takes less
// than d: the one-way delay alone would make each take 2d.
func undelayed(t *testing.T, from *netlab.Host, to netip.Addr, d time.Duration) {
	t.Helper()
	if got := minRTT(t, from, to, 10); got >= d {
		t.Fatalf("the fastest of 10 pings from %s to %s took %v; want under %v, it should not be delayed", from, to, got, d)
	}
}

func TestWANDelay(t *testing.T) {
	t.Parallel()
	const d = 50 * time.Millisecond
	n := testnet.Start(t, netlab.Options{
		Hosts:    []string{"n1", "n2"},
		Segment2: []string{"w1"},
		Segment3: []string{"x1"},
		WANDelay: d,
	})
	n1, n2, w1, x1, router := n.Host("n1"), n.Host("n2"), n.Host("w1"), n.Host("x1"), n.Host(netlab.RouterName)
	if x1.Addr != netip.MustParseAddr("198.18.3.11") || x1.Segment != 3 {
		t.Fatalf("x1 has %s on segment %d, want 198.18.3.11 on 3", x1.Addr, x1.Segment)
	}
	reach(t, n1, w1.Addr)
	reach(t, x1, w1.Addr)

	t.Run("between segments", func(t *testing.T) {
		delayed(t, n1, w1.Addr, d, 5)
		delayed(t, w1, n1.Addr, d, 5)
		delayed(t, x1, n1.Addr, d, 3)
		delayed(t, w1, x1.Addr, d, 3)
	})
	t.Run("within a segment and to the router", func(t *testing.T) {
		undelayed(t, n1, n2.Addr, d)
		undelayed(t, w1, router.Addr, d) // 198.18.1.1, the router's own
		undelayed(t, n1, netip.MustParseAddr("198.18.2.1"), d)
	})
	t.Run("udp", func(t *testing.T) {
		for _, size := range []int{60, 512, 1232} {
			udpEcho(t, n1, w1, size, 10, d)
		}
	})
	t.Run("tcp 16MiB", func(t *testing.T) {
		transfer(t, n1, w1, 16<<20)
		transfer(t, x1, n2, 1<<20)
	})
	st := n.WANStats()
	t.Logf("relay: %+v", st)
	if st.Delay != d || st.Packets == 0 || st.Bytes < 16<<20 || st.Dropped != 0 || st.KernelDropped != 0 || st.MaxQueuedBytes == 0 {
		t.Errorf("stats %+v: want delay %v, over 16 MiB forwarded, none dropped", st, d)
	}

	if err := n.SetWANDelay(0); err != nil {
		t.Fatal(err)
	}
	undelayed(t, n1, w1.Addr, d)
	undelayed(t, x1, w1.Addr, d)
	transfer(t, w1, n1, 1<<20)
	if got := n.WANStats(); got.Delay != 0 || got.Packets > st.Packets+20 {
		// Packets held when the delay went may still cross it; nothing else.
		t.Errorf("after SetWANDelay(0), stats %+v; want delay 0 and no more traffic through the relay than %+v", got, st)
	}
	if err := n.SetWANDelay(d / 2); err != nil {
		t.Fatal(err)
	}
	delayed(t, n1, w1.Addr, d/2, 3)
}

func TestWANDelaySetLater(t *testing.T) {
	t.Parallel()
	const d = 30 * time.Millisecond
	testnet.RequireTUN(t)
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}})
	n1, w1 := n.Host("n1"), n.Host("w1")
	reach(t, n1, w1.Addr)
	if st := n.WANStats(); st != (netlab.WANStats{}) {
		t.Fatalf("with no delay, stats %+v; want zero", st)
	}
	undelayed(t, n1, w1.Addr, d)
	if err := n.SetWANDelay(d); err != nil {
		t.Fatal(err)
	}
	delayed(t, n1, w1.Addr, d, 3)
	// WANStats reads the kernel's drops from wan0 in the router.
	if _, err := netlab.KernelDrops(n.Host(netlab.RouterName).Namespace); err != nil {
		t.Fatalf("the kernel's drops of wan0: %v", err)
	}
}

// TestWANJitterKeepsOrder sends numbered datagrams across a delay with as
// much jitter as delay, and checks that they arrive in order.
func TestWANJitterKeepsOrder(t *testing.T) {
	t.Parallel()
	const d = 20 * time.Millisecond
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}, WANDelay: d, WANJitter: d})
	n1, w1 := n.Host("n1"), n.Host("w1")
	reach(t, n1, w1.Addr)
	sink, err := w1.ListenPacket("udp4", netip.AddrPortFrom(w1.Addr, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.(*net.UDPConn).SetReadBuffer(4 << 20)
	conn, err := n1.DialContext(testContext(t), "udp4", sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const count = 500
	got := make(chan []int, 1)
	go func() {
		var seqs []int
		buf := make([]byte, 200)
		for len(seqs) == 0 || seqs[len(seqs)-1] != count-1 {
			sink.SetReadDeadline(time.Now().Add(5 * time.Second))
			size, _, err := sink.ReadFrom(buf)
			if err != nil {
				break
			}
			seqs = append(seqs, int(binary.BigEndian.Uint32(buf[:size])))
		}
		got <- seqs
	}()
	for i := range count {
		msg := binary.BigEndian.AppendUint32(make([]byte, 0, 100), uint32(i))
		if _, err := conn.Write(msg[:100]); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // spread them over the jitter
		}
	}
	seqs := <-got
	// A busy machine may drop some in the sockets' buffers; none may pass
	// another.
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("datagram %d arrived after %d", seqs[i], seqs[i-1])
		}
	}
	if len(seqs) < count/2 {
		t.Fatalf("%d of %d datagrams arrived (relay %+v)", len(seqs), count, n.WANStats())
	}
	t.Logf("%d of %d datagrams arrived, in order", len(seqs), count)
}

// udpEcho sends count datagrams of size bytes from from to an echo server
// on to, one at a time, and checks each answer and that each round trip
// took at least 2d.
func udpEcho(t *testing.T, from, to *netlab.Host, size, count int, d time.Duration) {
	t.Helper()
	pc, err := to.ListenPacket("udp4", netip.AddrPortFrom(to.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	conn, err := from.DialContext(testContext(t), "udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg, buf := make([]byte, size), make([]byte, 2048)
	for i := range count {
		rand.Read(msg)
		start := time.Now()
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d bytes: %v", i, size, err)
		}
		if took := time.Since(start); took < 2*d {
			t.Fatalf("datagram %d of %d bytes came back in %v, less than twice the delay %v", i, size, took, d)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("datagram %d of %d bytes came back as %d different bytes", i, size, n)
		}
	}
}

// transfer sends size random bytes over TCP from from to to and checks
// that they arrive whole: to answers with their SHA-256.
func transfer(t *testing.T, from, to *netlab.Host, size int) {
	t.Helper()
	ctx := testContext(t)
	l, err := to.Listen("tcp4", netip.AddrPortFrom(to.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		c.Write(h.Sum(nil))
	}()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	c, err := from.DialContext(ctx, "tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("%d bytes from %s to %s: the receiver's SHA-256 is %x, want %x", size, from, to, got, want)
	}
	t.Logf("%d bytes from %s to %s in %v", size, from, to, time.Since(start).Round(time.Millisecond))
}

func TestCutSegmentAndRestoreSegment(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{
		Hosts:    []string{"n1"},
		Segment2: []string{"w1", "w2"},
		Segment3: []string{"x1"},
		WANDelay: 5 * time.Millisecond,
	})
	n1, w1, w2, x1, router := n.Host("n1"), n.Host("w1"), n.Host("w2"), n.Host("x1"), n.Host(netlab.RouterName)
	for _, h := range []*netlab.Host{n1, w2, x1} {
		reach(t, w1, h.Addr)
	}

	if err := n.CutSegment(2); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*netlab.Host{n1, x1} {
		blocked(t, h, w1.Addr)
		blocked(t, h, w2.Addr)
	}
	blocked(t, w1, w2.Addr)
	blocked(t, w1, router.Addr)
	blocked(t, router, w1.Addr)
	reach(t, n1, x1.Addr)
	reach(t, x1, n1.Addr)

	// A host cut on its own stays cut when its segment comes back.
	if err := n.CutLink(w2); err != nil {
		t.Fatal(err)
	}
	if err := n.RestoreSegment(2); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, w1.Addr)
	reach(t, w1, x1.Addr)
	blocked(t, n1, w2.Addr)
	if err := n.RestoreLink(w2); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, w2.Addr)

	// HealAll restores a cut segment; RestoreLink does not.
	if err := n.CutSegment(3); err != nil {
		t.Fatal(err)
	}
	blocked(t, n1, x1.Addr)
	if err := n.RestoreLink(x1); err != nil {
		t.Fatal(err)
	}
	blocked(t, n1, x1.Addr)
	if err := n.HealAll(); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, x1.Addr)
	reach(t, w1, x1.Addr)

	for _, seg := range []int{0, 4} {
		if err := n.CutSegment(seg); err == nil {
			t.Errorf("CutSegment(%d) succeeded on a net with segments 1 to 3", seg)
		}
	}
}

// tunFiles counts the test process's open TUN devices.
func tunFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && target == "/dev/net/tun" {
			count++
		}
	}
	return count
}

// TestCloseRemovesTheRelay does not run in parallel: it counts the TUN
// devices that the whole test process holds.
func TestCloseRemovesTheRelay(t *testing.T) {
	testnet.Require(t)
	testnet.RequireTUN(t)
	ctx := testContext(t)
	before := tunFiles(t)
	n, err := netlab.New(ctx, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}, Segment3: []string{"x1"}, WANDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	router := n.Host(netlab.RouterName)
	if out, err := exec.CommandContext(ctx, "ip", "-n", router.Namespace, "link", "show", "wan0").CombinedOutput(); err != nil {
		t.Fatalf("the router has no wan0: %v: %s", err, out)
	}
	if got := tunFiles(t); got != before+1 {
		t.Fatalf("%d TUN devices open, want %d", got, before+1)
	}
	if got := namespaces(t, n.Name()+"-"); len(got) != 5 {
		t.Fatalf("namespaces %v, want switch, router and 3 hosts", got)
	}
	// Traffic held in the relay when it closes.
	reach(t, n.Host("n1"), n.Host("w1").Addr)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := namespaces(t, n.Name()+"-"); len(got) != 0 {
		t.Fatalf("after Close, namespaces %v remain", got)
	}
	if got := tunFiles(t); got != before {
		t.Fatalf("after Close, %d TUN devices open, want %d", got, before)
	}
	if err := n.SetWANDelay(time.Millisecond); err == nil {
		t.Fatal("SetWANDelay after Close succeeded")
	}
}

func TestSetWANDelayNeedsARouter(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}})
	if err := n.SetWANDelay(time.Millisecond); err == nil || !strings.Contains(err.Error(), "no router") {
		t.Fatalf("SetWANDelay on one segment: %v, want an error that says there is no router", err)
	}
	n2 := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}})
	if err := n2.SetWANDelay(-time.Millisecond); err == nil {
		t.Fatal("SetWANDelay(-1ms) succeeded")
	}
}

// TestWANQueueIsBounded floods the relay with more datagrams than its
// queue holds for the delay: the excess is dropped and counted, the queue
// stays within its bound, and what it holds is delivered.
func TestWANQueueIsBounded(t *testing.T) {
	t.Parallel()
	// A long delay: nothing leaves the queue while the burst fills it,
	// for as long as a loaded machine needs to send it (CI once sent only
	// 37298 datagrams in 2.5s, the kernel dropping most, and the queue
	// never filled).
	const d = 20 * time.Second
	testnet.RequireTUN(t)
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}})
	n1, w1 := n.Host("n1"), n.Host("w1")
	reach(t, n1, w1.Addr)
	if err := n.SetWANDelay(d); err != nil {
		t.Fatal(err)
	}
	sink, err := w1.ListenPacket("udp4", netip.AddrPortFrom(w1.Addr, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	conn, err := n1.DialContext(testContext(t), "udp4", sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Each datagram takes a 2 KiB buffer in the queue: send until the
	// relay drops some, for at most four times what fits and half the
	// delay. (The kernel drops some too when the relay reads slower than
	// the burst comes.)
	limit := 4 * netlab.WANQueueBytes / 2048
	msg := make([]byte, 100)
	start := time.Now()
	sent := 0
	for ; sent < limit && time.Since(start) < d/2; sent++ {
		conn.Write(msg) // a full socket buffer may refuse some: fine
		if sent%1000 == 0 {
			if n.WANStats().Dropped > 0 {
				break
			}
		}
	}
	st := n.WANStats()
	t.Logf("%d datagrams sent in %v; relay %+v", sent, time.Since(start), st)
	if st.Dropped == 0 || st.MaxQueuedBytes > netlab.WANQueueBytes {
		t.Fatalf("relay %+v after %d datagrams: want drops by the relay, and at most %d bytes held", st, sent, netlab.WANQueueBytes)
	}
	// Out of the path, the relay still delivers what it holds.
	if err := n.SetWANDelay(0); err != nil {
		t.Fatal(err)
	}
	undelayed(t, n1, w1.Addr, time.Second)
	testenv.Poll(t, 3*d, "the relay delivering what it holds", func() (bool, string) {
		st := n.WANStats()
		return st.Queued == 0, fmt.Sprintf("%+v", st)
	})
}

func TestCutWANAndRestoreWAN(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{
		Hosts:    []string{"n1", "n2"},
		Segment2: []string{"w1"},
		Segment3: []string{"x1"},
	})
	n1, n2, w1, x1 := n.Host("n1"), n.Host("n2"), n.Host("w1"), n.Host("x1")
	reach(t, n1, w1.Addr)
	reach(t, n1, x1.Addr)

	if err := n.CutWAN(1); err != nil {
		t.Fatal(err)
	}
	blocked(t, n1, w1.Addr)
	blocked(t, x1, n2.Addr)
	blocked(t, n1, netip.MustParseAddr("198.18.1.1"))
	reach(t, n1, n2.Addr)
	reach(t, w1, x1.Addr)
	reach(t, w1, netip.MustParseAddr("198.18.2.1"))

	// Cutting and restoring the router's link leaves the WAN cut.
	router := n.Host(netlab.RouterName)
	if err := n.CutLink(router); err != nil {
		t.Fatal(err)
	}
	blocked(t, w1, x1.Addr)
	if err := n.RestoreLink(router); err != nil {
		t.Fatal(err)
	}
	reach(t, w1, x1.Addr)
	blocked(t, n1, w1.Addr)

	if err := n.RestoreWAN(1); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, w1.Addr)
	reach(t, x1, n2.Addr)

	if err := n.CutWAN(3); err != nil {
		t.Fatal(err)
	}
	blocked(t, n1, x1.Addr)
	if err := n.HealAll(); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, x1.Addr)
	if err := n.CutWAN(4); err == nil {
		t.Error("CutWAN(4) succeeded on a net with segments 1 to 3")
	}
}
