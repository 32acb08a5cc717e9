// Package relay copies bytes both ways between pairs of connected TCP
// sockets on a few epoll event loops, as HAProxy and nginx do, instead of
// two goroutines per pair.
//
// A goroutine-per-connection copy on Go's runtime reads each socket until
// EAGAIN before it may wait (its poller clears readiness before it parks),
// so every message costs a read that returns nothing, and every wait a trip
// through the scheduler. A loop here owns its sockets outright: it waits on
// its own edge-triggered epoll set, treats a read shorter than its buffer
// as "drained" (a later arrival raises a new edge), and writes what it read
// at once; a message costs one read and one write. Pairs are spread over
// the loops, one per core the process may use.
//
// Its system calls are made through package nbio, without the scheduler's
// bookkeeping (see there why).
//
// Relay takes the two sockets over: it duplicates their descriptors and
// closes the net.Conns, which takes them out of the runtime's poller.
package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/lb/nbio"
)

// Outcome is how a relay ended.
type Outcome int

const (
	Closed  Outcome = iota // both directions ended with EOF, each passed on as a half-close
	Failed                 // a read or write failed (a reset, say): both sockets were closed
	Idle                   // nothing moved either way for the idle period
	Aborted                // Abort was called (the backend went away, the balancer stopped)
)

var outcomeNames = [...]string{"closed", "failed", "idle", "aborted"}

func (o Outcome) String() string { return outcomeNames[o] }

// Pair is one relayed pair of sockets.
type Pair struct {
	a, b   side
	loop   engine
	idle   time.Duration
	last   int64 // the loop's clock when bytes last moved, in nanoseconds
	ended  bool  // finished: its descriptors are closed (the loop's own)
	queued bool  // in the loop's busy list

	// A ring loop's (uring.go): the pair's id in its requests, how many
	// of them are in flight, and whether its sockets are closed.
	id       uint64
	inflight int
	released bool
	// fixed: its sockets sit in the ring's file table, a's in slot and
	// b's in the next; files is what the kernel reads to put them there.
	fixed bool
	slot  int32
	files [2]int32

	done    chan struct{}
	outcome Outcome
	err     error
	aborted atomic.Bool
	// Bytes moved from a to b and from b to a; read them after Done.
	AToB, BToA int64
}

// side is one socket of a pair.
type side struct {
	fd       int
	readable bool // an edge said so, and no read since returned EAGAIN or short
	// hup: the peer's FIN (or an error) was reported. A short read then
	// does not mean drained: the EOF behind the last bytes raises no new
	// edge, so reads go on until they return it.
	hup bool
	// urgent: the peer sent urgent data (MSG_OOB, as FTP's ABOR and
	// telnet do). A read stops short at the urgent mark with more
	// queued behind it and no edge to come, so reads go on until EAGAIN.
	urgent bool
	// busy: the pump stopped reading this side after maxReads full
	// reads, with more to read: the loop comes back to it (fairness).
	busy     bool
	writable bool
	eof      bool   // its reads have ended
	shut     bool   // its writing side was shut down (the peer's EOF passed on)
	out      []byte // read from the peer, not yet written to this socket

	// A ring loop's: what it is sending to this socket, from the ring's
	// buffer bid (fromRing) or from spill, where the rest went when the
	// socket was full.
	sending, spill []byte
	bid            uint16
	fromRing       bool
	// What was received for this socket while a send to it was in flight:
	// the ring's buffers, kept for a turn while the send (which does not
	// wait for room) completes, or copied to backlog while it waits.
	queued  []queuedBuf
	backlog []byte
	// A ring loop's receive on this socket: armed while its multishot
	// receive is in flight, cancelling once the loop has asked it to stop.
	armed, cancelling bool
}

// queuedBuf is a ring buffer holding n received bytes.
type queuedBuf struct {
	bid uint16
	n   int32
}

// Done is closed once the relay has ended and both sockets are closed.
func (p *Pair) Done() <-chan struct{} { return p.done }

// Result is how the relay ended, and the error that ended it (Failed).
// Valid after Done.
func (p *Pair) Result() (Outcome, error) { return p.outcome, p.err }

// Abort closes both sockets as soon as the loop gets to it.
func (p *Pair) Abort() {
	if p.aborted.CompareAndSwap(false, true) {
		p.loop.submit(p)
	}
}

// Loops is a set of event loops.
type Loops struct {
	loops   []engine
	next    atomic.Uint32
	started atomic.Uint64
	release func() // gives back what the loops reserved (NewRing), after Close
}

// engine is one event loop: on epoll (loop) or on io_uring (ringLoop).
type engine interface {
	// submit hands the loop a new pair, or an abort of one of its pairs;
	// false: the loop has stopped.
	submit(*Pair) bool
	// stop stops the loop; its pairs are aborted.
	stop()
}

// Len is how many loops there are.
func (ls *Loops) Len() int { return len(ls.loops) }

// Started is how many relays began.
func (ls *Loops) Started() uint64 { return ls.started.Load() }

// New starts n event loops on epoll (n < 1: one per nbio.Procs).
func New(n int) (*Loops, error) {
	return startLoops(n, func() (engine, error) {
		l, err := newLoop()
		if err != nil {
			return nil, err
		}
		go l.run()
		return l, nil
	})
}

// startLoops starts n loops with start (n < 1: one per nbio.Procs), or
// none if one fails.
func startLoops(n int, start func() (engine, error)) (*Loops, error) {
	if n < 1 {
		n = nbio.Procs()
	}
	ls := &Loops{}
	for range n {
		l, err := start()
		if err != nil {
			ls.Close()
			return nil, err
		}
		ls.loops = append(ls.loops, l)
	}
	return ls, nil
}

// Close stops the loops; relays still running are aborted.
func (ls *Loops) Close() {
	for _, l := range ls.loops {
		l.stop()
	}
	if ls.release != nil {
		ls.release()
		ls.release = nil
	}
}

// Relay starts copying between a and b until both directions have ended
// (each EOF passed on as a half-close), either fails, or nothing moved for
// idle (0: no bound). It takes a and b over: they are closed whatever
// happens, and the caller waits on the returned Pair.
func (ls *Loops) Relay(a, b *net.TCPConn, idle time.Duration) (*Pair, error) {
	fa, err := takeOver(a)
	if err != nil {
		b.Close()
		return nil, err
	}
	fb, err := takeOver(b)
	if err != nil {
		unix.Close(fa)
		return nil, err
	}
	l := ls.loops[int(ls.next.Add(1))%len(ls.loops)]
	// Both may already be readable (the client's first bytes) and are
	// writable: a first pump finds out, as the edges of a new
	// registration would.
	p := &Pair{a: side{fd: fa, readable: true, writable: true}, b: side{fd: fb, readable: true, writable: true},
		loop: l, idle: idle, done: make(chan struct{})}
	// Counted before the loop has it: once submitted, the pair may have
	// relayed everything and ended before this goroutine runs again.
	ls.started.Add(1)
	if !l.submit(p) {
		ls.started.Add(^uint64(0))
		unix.Close(fa)
		unix.Close(fb)
		return nil, errors.New("relay: the event loops are stopped")
	}
	return p, nil
}

// takeOver duplicates c's descriptor (non-blocking, as the runtime set it)
// and closes c, which removes it from the runtime's poller.
func takeOver(c *net.TCPConn) (int, error) {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("relay: dup: %w", derr)
	}
	return fd, nil
}

// loop is one event loop: an epoll set, an eventfd to wake it, and the
// pairs it owns.
type loop struct {
	inbox
	epfd int
	// ep is epfd as a file of the runtime's poller: the loop parks on it
	// until its set has events, instead of blocking a thread in
	// epoll_wait (which has the runtime's monitor hand the thread's
	// processor to another thread, and back, at every wait).
	ep *os.File

	sides map[int]*Pair // by descriptor
	pairs map[*Pair]struct{}
	// busy are the pairs a pump left with bytes to read (maxReads);
	// spare is the last list's array, for reuse.
	busy, spare []*Pair
	buf         []byte
	now         int64
}

const bufSize = 64 << 10

// maxReads bounds the full reads of one side per turn (1 MiB), so that a
// bulk transfer between two fast peers does not hold up the loop's other
// pairs.
const maxReads = 16

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("relay: epoll_create1: %w", err)
	}
	evfd, err := newEventfd()
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("relay: epoll_ctl: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to the runtime's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("relay: epoll set: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "relay-epoll")
	return &loop{inbox: inbox{evfd: evfd}, epfd: epfd, ep: ep, sides: map[int]*Pair{}, pairs: map[*Pair]struct{}{}, buf: make([]byte, bufSize)}, nil
}

func (l *loop) stop() { l.signalStop() }

// run is the loop. It wakes at least every second to close idle pairs and,
// should a wake-up through the nested epoll ever be lost, to take new
// pairs.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	lastScan := time.Now().UnixNano()
	rc, err := l.ep.SyscallConn()
	if err != nil {
		panic(fmt.Sprintf("relay: %v", err)) // an *os.File always has one
	}
	l.ep.SetReadDeadline(time.Now().Add(time.Second))
	for turn := 1; ; turn++ {
		if turn%32 == 0 {
			// Its system calls do not let the scheduler run other
			// goroutines (package nbio): a busy loop lets them run now and
			// then rather than only when the runtime preempts it (10 ms).
			runtime.Gosched()
		}
		n := 0
		var werr error
		if len(l.busy) > 0 {
			// Pairs wait with bytes to move: look for events without
			// parking.
			n, werr = nbio.EpollPoll(l.epfd, events)
			if werr == unix.EINTR {
				werr = nil
			}
		} else {
			err := rc.Read(func(fd uintptr) bool {
				n, werr = nbio.EpollPoll(int(fd), events)
				return n > 0 || (werr != nil && werr != unix.EINTR)
			})
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Until it is moved, an expired deadline fails every wait.
				l.ep.SetReadDeadline(time.Now().Add(time.Second))
				n = 0
				if !l.takeIncoming() {
					l.shutdown()
					return
				}
			} else if err != nil {
				werr = errors.Join(err, werr)
			}
		}
		if werr != nil {
			panic(fmt.Sprintf("relay: epoll_wait: %v", werr)) // EBADF, EFAULT or EINVAL: a bug here
		}
		l.now = time.Now().UnixNano()
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == l.evfd {
				if !l.takeIncoming() {
					l.shutdown()
					return
				}
				continue
			}
			p := l.sides[fd]
			if p == nil {
				continue // closed earlier in this batch
			}
			s := &p.a
			if fd == p.b.fd {
				s = &p.b
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				s.readable = true
			}
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				s.hup = true
			}
			if ev.Events&unix.EPOLLPRI != 0 {
				s.readable, s.urgent = true, true
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				s.writable = true
			}
			l.pump(p)
		}
		// The pairs cut short for fairness, after the events: the
		// others had their turn.
		again := l.busy
		l.busy = l.spare[:0]
		for i, p := range again {
			again[i] = nil
			p.queued = false
			if !p.ended {
				p.a.busy, p.b.busy = false, false
				l.pump(p) // may queue it again
			}
		}
		l.spare = again[:0]
		if l.now-lastScan >= int64(time.Second) {
			lastScan = l.now
			l.closeIdle()
		}
	}
}

// takeIncoming registers new pairs and carries out aborts. It reports
// false when the loop is to stop.
func (l *loop) takeIncoming() bool {
	var b [8]byte
	unix.Read(l.evfd, b[:])
	in, stopped := l.take()
	for _, p := range in {
		_, running := l.pairs[p]
		if running || p.ended || p.aborted.Load() {
			l.finish(p, Aborted, nil) // an abort, of a pair running, ended or not started yet
			continue
		}
		if err := l.add(p); err != nil {
			l.finish(p, Failed, err)
			continue
		}
		l.pump(p)
	}
	return !stopped
}

func (l *loop) add(p *Pair) error {
	l.pairs[p] = struct{}{}
	p.last = l.now
	for _, s := range []*side{&p.a, &p.b} {
		l.sides[s.fd] = p
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLPRI | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			return fmt.Errorf("relay: epoll_ctl: %w", err)
		}
	}
	return nil
}

// pump moves what it can both ways and ends the pair when both directions
// are over or one failed.
func (l *loop) pump(p *Pair) {
	moved1, err := l.copy(&p.a, &p.b)
	if err == nil {
		var moved2 int
		moved2, err = l.copy(&p.b, &p.a)
		p.BToA += int64(moved2)
		if moved2 > 0 {
			p.last = l.now
		}
	}
	p.AToB += int64(moved1)
	if moved1 > 0 {
		p.last = l.now
	}
	switch {
	case err != nil:
		l.finish(p, Failed, err)
	case p.a.eof && p.b.eof && p.a.shut && p.b.shut:
		l.finish(p, Closed, nil)
	case (p.a.busy || p.b.busy) && !p.queued:
		p.queued = true
		l.busy = append(l.busy, p)
	}
}

// copy moves bytes from src to dst: first what dst could not take before,
// then fresh reads until src is drained or dst is full. A read shorter than
// the buffer means src is drained: the next arrival raises a new edge.
func (l *loop) copy(src, dst *side) (moved int, err error) {
	if len(dst.out) > 0 {
		if !dst.writable {
			return 0, nil
		}
		n, err := nbio.WriteSome(dst.fd, dst.out)
		if err != nil {
			return 0, err
		}
		moved += n
		if n < len(dst.out) {
			dst.out = dst.out[:copy(dst.out, dst.out[n:])]
			dst.writable = false
			return moved, nil
		}
		putBuf(dst.out)
		dst.out = nil
	}
	for reads := 0; src.readable && !src.eof; reads++ {
		if reads == maxReads {
			src.busy = true // more to read: the loop comes back after the others
			break
		}
		n, err := nbio.Read(src.fd, l.buf)
		if err == unix.EAGAIN {
			src.readable, src.urgent = false, false
			break
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return moved, err
		}
		if n == 0 {
			src.eof = true
			break
		}
		w := 0
		if dst.writable {
			if w, err = nbio.WriteSome(dst.fd, l.buf[:n]); err != nil {
				return moved, err
			}
		}
		moved += w
		if w < n {
			// dst is full: keep the rest and read no more from src
			// until dst has taken it.
			dst.out = append(getBuf(), l.buf[w:n]...)
			dst.writable = false
			return moved, nil
		}
		if n < len(l.buf) && !src.hup && !src.urgent {
			src.readable = false
		}
	}
	if src.eof && len(dst.out) == 0 && !dst.shut {
		dst.shut = true
		if err := nbio.Shutdown(dst.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
			return moved, err
		}
	}
	return moved, nil
}

// bufs hold what a full socket could not take yet.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

func getBuf() []byte { return (*bufs.Get().(*[]byte))[:0] }

func putBuf(b []byte) {
	b = b[:0]
	bufs.Put(&b)
}

// finish closes a pair's sockets and tells its owner.
func (l *loop) finish(p *Pair, o Outcome, err error) {
	if p.ended {
		return // an abort that came after the end
	}
	p.ended = true
	delete(l.pairs, p)
	for _, s := range []*side{&p.a, &p.b} {
		if l.sides[s.fd] == p {
			delete(l.sides, s.fd)
		}
		nbio.Close(s.fd) // also leaves the epoll set
		if s.out != nil {
			putBuf(s.out)
			s.out = nil
		}
	}
	p.outcome, p.err = o, err
	close(p.done)
}

func (l *loop) closeIdle() {
	for p := range l.pairs {
		if p.idle > 0 && l.now-p.last >= int64(p.idle) {
			l.finish(p, Idle, nil)
		}
	}
}

// shutdown aborts every pair and releases the loop's descriptors.
func (l *loop) shutdown() {
	for p := range l.pairs {
		l.finish(p, Aborted, nil)
	}
	for _, p := range l.inbox.close() {
		l.finish(p, Aborted, nil)
	}
	l.ep.Close()
}
