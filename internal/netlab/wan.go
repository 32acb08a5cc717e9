package netlab

// The WAN relay delays the packets that the router forwards between
// segments, where netem is not available (a kernel without sch_netem, or
// without nfqueue for a userspace verdict). It works with a TUN device and
// policy routing in the router's namespace:
//
//   - a TUN device, wan0, opened by the process that called New; a table,
//     wanTable, whose only route sends 198.18.0.0/15 to wan0;
//   - for each pair of segments i and j, a rule: packets that came in on
//     the router's interface of segment i, addressed to segment j, look up
//     wanTable. So the kernel forwards them into wan0, and the process
//     reads them;
//   - a reader goroutine stamps each packet with its due time and queues
//     it; a writer goroutine writes each packet back into wan0 at its due
//     time, in order. The kernel takes it as a packet that came in on wan0,
//     which no rule matches: the main table forwards it to its segment.
//
// Packets to the router's own addresses match the local table, which comes
// before every rule, and the router's own packets come in on no interface:
// neither is delayed. Neither are packets between hosts of one segment,
// which never reach the router. A packet that crosses the relay is
// forwarded twice, so its TTL drops by 2, and reverse path filtering is off
// in the router, since the written-back packets come in on wan0.
//
// The device is opened with IFF_VNET_HDR and TCP segmentation offload: a
// TCP sender's 64 KiB segments cross the relay whole, with the virtio
// header that describes them, and the relay writes the header back
// unchanged, so the kernel splits them only where it would without the
// relay. This keeps the relay's cost per byte small.
//
// The queue holds at most wanQueueBytes of buffers (2 KiB for a packet of
// up to 2 KiB, 64 KiB for a larger one); a packet that does not fit is
// dropped and counted, as a router's full buffer would drop it. The writer
// sleeps with nanosleep, so a packet is held for its delay plus up to the
// kernel's timer slack (50µs) more, never less, when the machine has a core
// free to run it. Packets leave in the order they came, whatever their
// jitter.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	wanDevice = "wan0"
	wanTable  = "100" // routing table of the packets to delay
	wanPref   = "100" // priority of the rules that choose it
	// wanQueueBytes bounds the packets held at once: 32 MiB is 256 Mbit/s
	// held for a second, more than TCP's default buffers keep in flight.
	wanQueueBytes = 32 << 20
	// wanTxQueue is the kernel's queue of packets for the relay to read.
	wanTxQueue = "4096"
	// vnetHdrLen is the size of struct virtio_net_hdr before each packet.
	vnetHdrLen = 10
	// wanMaxPacket is the largest packet the relay reads: a 64 KiB TCP
	// segment with its header.
	wanMaxPacket = vnetHdrLen + 65535
	// wanSleepStep is the longest the writer sleeps without looking
	// whether the relay stopped.
	wanSleepStep = 50 * time.Millisecond
)

// WANStats counts what the WAN relay did since the Net was made.
type WANStats struct {
	// Delay is the current delay: 0 when packets between segments do not
	// pass through the relay.
	Delay time.Duration
	// Packets and Bytes count the packets the relay wrote back to be
	// forwarded; a TCP segment of up to 64 KiB counts once.
	Packets, Bytes uint64
	// Dropped counts the packets the relay dropped: its queue was full, or
	// the kernel refused the packet when it was written back.
	Dropped uint64
	// KernelDropped counts the packets the kernel dropped because the
	// relay did not read them fast enough: wan0's queue of wanTxQueue
	// packets, or its queueing discipline's as long, was full.
	KernelDropped uint64
	// Queued is the number of packets held now, and MaxQueuedBytes the
	// most bytes of buffers held at once (2 KiB for each packet of up to
	// 2 KiB, 64 KiB for each larger one), at most 32 MiB.
	Queued         int
	MaxQueuedBytes int
}

// SetWANDelay sets the one-way delay of every packet the router forwards
// from one segment to another, as Options.WANDelay does, and keeps the
// jitter of Options.WANJitter, or d when that is smaller, as the spread.
// Packets already held keep their due time and order; packets that follow
// are held for the new delay, but never leave before those. 0 takes the
// relay out of the path: packets go through plain kernel forwarding again,
// and those still held are forwarded when due. It fails when the Net has
// only one segment.
func (n *Net) SetWANDelay(d time.Duration) error {
	if err := n.setWANDelay(d); err != nil {
		return fmt.Errorf("netlab: set wan delay to %v: %w", d, err)
	}
	return nil
}

func (n *Net) setWANDelay(d time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.usable(); err != nil {
		return err
	}
	if n.router == nil {
		return errors.New("the net has one segment: there is no router to delay")
	}
	if d < 0 {
		return errors.New("the delay is negative")
	}
	ctx := context.Background()
	if n.wan == nil {
		if d == 0 {
			return nil
		}
		r, err := n.newRelay(ctx)
		if err != nil {
			return err
		}
		n.wan = r
	}
	r := n.wan
	switch {
	case d > 0 && !r.routed:
		r.delay.Store(int64(d))
		if err := n.routeWAN(ctx, "add"); err != nil {
			return err
		}
		r.routed = true
	case d == 0 && r.routed:
		if err := n.routeWAN(ctx, "del"); err != nil {
			return err
		}
		r.routed = false
	}
	r.delay.Store(int64(d))
	return nil
}

// WANStats returns what the WAN relay has done; all zero before the first
// delay above 0. KernelDropped stays 0 if wan0's counters cannot be read.
func (n *Net) WANStats() WANStats {
	n.mu.Lock()
	r, closed := n.wan, n.closed
	n.mu.Unlock()
	if r == nil {
		return WANStats{}
	}
	st := r.stats()
	if !closed {
		st.KernelDropped, _ = kernelDrops(n.router.Namespace)
	}
	return st
}

// kernelDrops reads the transmit drops of wan0 in namespace ns: its own
// and its queueing discipline's.
func kernelDrops(ns string) (uint64, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	link, err := nl.LinkByName(wanDevice)
	if err != nil {
		return 0, err
	}
	st := link.Attrs().Statistics
	if st == nil {
		return 0, errors.New("no statistics")
	}
	drops := st.TxDropped
	qdiscs, err := nl.QdiscList(link)
	if err != nil {
		return 0, err
	}
	for _, q := range qdiscs {
		if qs := q.Attrs().Statistics; qs != nil && qs.Queue != nil {
			drops += uint64(qs.Queue.Drops)
		}
	}
	return drops, nil
}

// newRelay opens wan0 in the router, routes wanTable into it and starts the
// relay's goroutines. Its rules are not there yet: routeWAN adds them.
func (n *Net) newRelay(ctx context.Context) (*relay, error) {
	var tun *os.File
	err := n.router.Do(func() error {
		// The written-back packets come in on wan0, their sources are
		// behind other interfaces. rp_filter of all and wan0's own both
		// count: default makes wan0's 0.
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+conf+"/rp_filter", []byte("0"), 0); err != nil {
				return fmt.Errorf("rp_filter: %w", err)
			}
		}
		var err error
		tun, err = openTUN(wanDevice)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wan relay: %w", err)
	}
	script := fmt.Sprintf("link set %s mtu %d txqueuelen %s up\nroute add 198.18.0.0/15 dev %s table %s\n",
		wanDevice, n.mtu, wanTxQueue, wanDevice, wanTable)
	if _, err := output(ctx, script, "ip", "-n", n.router.Namespace, "-batch", "-"); err != nil {
		tun.Close()
		return nil, fmt.Errorf("wan relay: %w", err)
	}
	r := &relay{
		tun:    tun,
		jitter: n.jitter,
		wake:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
	}
	r.wg.Go(r.read)
	r.wg.Go(r.write)
	return r, nil
}

// routeWAN adds ("add") or deletes ("del") the rules that send the packets
// between segments through wan0.
func (n *Net) routeWAN(ctx context.Context, op string) error {
	var b strings.Builder
	for _, from := range n.segs {
		for _, to := range n.segs {
			if from != to {
				fmt.Fprintf(&b, "rule %s pref %s iif %s to 198.18.%d.0/24 lookup %s\n", op, wanPref, routerIface(from), to, wanTable)
			}
		}
	}
	if _, err := output(ctx, b.String(), "ip", "-n", n.router.Namespace, "-batch", "-"); err != nil {
		return fmt.Errorf("wan relay rules: %w", err)
	}
	return nil
}

// openTUN creates the TUN device name in the current thread's namespace,
// with virtio headers and TCP offloads, and returns it non-blocking, so
// that its reads wait in Go's poller. The device lives as long as the file.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	offloads := unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_TSO_ECN
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s offloads: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}

// relay holds packets read from the TUN device until their due time and
// writes them back, in order.
type relay struct {
	tun    *os.File
	jitter time.Duration
	delay  atomic.Int64 // nanoseconds
	routed bool         // the rules are in place; under Net.mu

	mu      sync.Mutex
	queue   []held // in due order
	bytes   int    // capacity of the buffers in queue
	maxHeld int
	lastDue time.Time // of the packet read last, for the reader only

	wake     chan struct{} // the queue was empty and has a packet
	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	packets, bytesOut, dropped atomic.Uint64
}

type held struct {
	due time.Time
	buf *[]byte // from a pool, the packet in (*buf)[:size]
	len int
}

// Two sizes of buffer: most packets are small (acknowledgements, DNS,
// packets of one MTU), a few are TCP segments of up to 64 KiB.
const smallPacket = 2048

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallPacket); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, wanMaxPacket); return &b }}
)

func getBuf(size int) *[]byte {
	if size <= smallPacket {
		return smallBufs.Get().(*[]byte)
	}
	return largeBufs.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if cap(*b) <= smallPacket {
		smallBufs.Put(b)
	} else {
		largeBufs.Put(b)
	}
}

// read reads packets from the device and queues them with their due time
// until the device is closed.
func (r *relay) read() {
	scratch := make([]byte, wanMaxPacket)
	for {
		size, err := r.tun.Read(scratch)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return // closed by stop, or the device is gone
		}
		now := time.Now()
		due := now.Add(r.hold())
		if due.Before(r.lastDue) {
			due = r.lastDue // never ahead of the packet before it
		}
		buf := getBuf(size)
		copy(*buf, scratch[:size])
		r.mu.Lock()
		if r.bytes+cap(*buf) > wanQueueBytes {
			r.mu.Unlock()
			putBuf(buf)
			r.dropped.Add(1)
			continue
		}
		r.lastDue = due
		r.queue = append(r.queue, held{due: due, buf: buf, len: size})
		r.bytes += cap(*buf)
		r.maxHeld = max(r.maxHeld, r.bytes)
		first := len(r.queue) == 1
		r.mu.Unlock()
		if first {
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
	}
}

// hold returns how long to hold the next packet: the delay, spread by the
// jitter, or by the delay if that is smaller.
func (r *relay) hold() time.Duration {
	d := time.Duration(r.delay.Load())
	if j := min(r.jitter, d); j > 0 {
		d += time.Duration(rand.Int64N(2*int64(j)+1)) - j
	}
	return d
}

// write writes each queued packet back to the device at its due time, until
// stop.
func (r *relay) write() {
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.mu.Unlock()
			select {
			case <-r.wake:
				continue
			case <-r.quit:
				return
			}
		}
		h := r.queue[0]
		r.mu.Unlock()
		if !r.sleepUntil(h.due) {
			return
		}
		r.mu.Lock()
		r.queue[0] = held{}
		r.queue = r.queue[1:]
		r.bytes -= cap(*h.buf)
		r.mu.Unlock()
		if _, err := r.tun.Write((*h.buf)[:h.len]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.dropped.Add(1)
		} else {
			r.packets.Add(1)
			r.bytesOut.Add(uint64(h.len - vnetHdrLen))
		}
		putBuf(h.buf)
	}
}

// sleepUntil sleeps until due and reports whether the relay still runs.
// Go's timers wake up to a millisecond late, twice per round trip; a
// nanosleep on the goroutine's thread wakes within the kernel's timer
// slack, 50µs. It sleeps in steps of at most wanSleepStep to notice stop.
func (r *relay) sleepUntil(due time.Time) bool {
	for {
		select {
		case <-r.quit:
			return false
		default:
		}
		wait := time.Until(due)
		if wait <= 0 {
			return true
		}
		ts := unix.NsecToTimespec(int64(min(wait, wanSleepStep)))
		for unix.Nanosleep(&ts, &ts) == unix.EINTR {
		}
	}
}

// stop ends the goroutines and closes the device, which removes it. The
// packets still held are lost, as in a router switched off.
func (r *relay) stop() {
	r.stopOnce.Do(func() {
		close(r.quit)
		r.tun.Close()
		r.wg.Wait()
	})
}

func (r *relay) stats() WANStats {
	r.mu.Lock()
	queued, maxHeld := len(r.queue), r.maxHeld
	r.mu.Unlock()
	return WANStats{
		Delay:          time.Duration(r.delay.Load()),
		Packets:        r.packets.Load(),
		Bytes:          r.bytesOut.Load(),
		Dropped:        r.dropped.Load(),
		Queued:         queued,
		MaxQueuedBytes: maxHeld,
	}
}
