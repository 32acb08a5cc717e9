package relay

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/lb/nbio"
)

// The ring loops relay on io_uring instead of epoll. Each turn submits
// every receive and send the last completions called for, and waits for
// the next completions, in one io_uring_enter: a message costs about one
// system call shared by the turn, where the epoll loops pay a read, a
// write and their part of a wait (measured in docs/BENCHMARKS.md).
//
// A loop waits in io_uring_enter itself, on a thread of its own, with a
// raw call that keeps its processor: waiting through the scheduler
// instead (handing the processor back while the thread blocks) measured
// no better than the epoll loops. So that the rest of the process keeps
// its processors, NewRing raises GOMAXPROCS by one per loop
// (nbio.ReserveProcs). The runtime's preemption signal still reaches a waiting
// loop (the wait returns EINTR), so a garbage collection's stop waits no
// longer than the signal.

// A loop's receive buffers, provided to the kernel (bufRing): it picks one
// when bytes arrive, and the loop gives it back once the bytes are sent
// on, or copied aside when the receiving socket is full. So a buffer is
// held for about one turn, and a connection waiting for bytes holds none.
// The receives of more sides than ringBufCount in one turn wait for the
// next (ENOBUFS). HAProxy's buffers are 16 KiB too.
const (
	ringBufSize  = 16 << 10
	ringBufGroup = 1
)

// ringBufCount is how many buffers each loop provides (a power of two; a
// variable for the tests).
var ringBufCount = 512

// ringEntries sizes the submission queue; the kernel makes the completion
// queue twice as large and keeps completions that overflow it (NODROP).
const ringEntries = 1024

// scanEvery is how often a ring loop wakes, with nothing to do, to close
// idle pairs.
const scanEvery = int64(time.Second)

// A raw wait that found nothing in nbio.BusyWait is followed by scheduled
// ones (the processor is handed back while the thread blocks) until a
// completion comes.

// user data of a request: the pair's id, which side, which operation.
const (
	udRecv   = 1
	udSend   = 2
	udCancel = 3
	udFiles  = 4 // a change to the file table; it completes only on failure
	udOp     = 7 // the operation's bits
	udSideB  = 1 << 3
	udShift  = 4
	udWake   = 0 // the read of the wake-up eventfd (pair ids start at 1)
)

// ringFileSlots bounds each loop's file table: a pair takes two slots
// while it runs, and the pairs beyond half of it use their descriptors.
// The kernel's table takes 8 bytes a slot. (A variable for the tests.)
var ringFileSlots uint64 = 1 << 15

// NewRing starts n ring loops (n < 1: one per nbio.Procs) and raises
// GOMAXPROCS by n. It fails, and starts none, where io_uring or a feature
// the loops need (Linux 6.1) is missing or refused (a container's seccomp
// profile, kernel.io_uring_disabled): use New then.
func NewRing(n int) (*Loops, error) {
	ls, err := startLoops(n, func() (engine, error) { return startRingLoop() })
	if err != nil {
		return nil, err
	}
	ls.release = nbio.ReserveProcs(len(ls.loops))
	return ls, nil
}

// ringLoop is one ring loop: the ring, an eventfd to wake it, the pairs
// it owns.
type ringLoop struct {
	inbox
	r     *ring
	evbuf *[8]byte      // the wake-up read's buffer, on the heap: the kernel writes it
	done  chan struct{} // closed when the loop has returned
	tid   int           // the loop's thread, for tests and diagnostics (/proc/self/task/tid)
	recvs atomic.Int64  // receives armed, for tests

	pairs  map[uint64]*Pair // by id, until every request of the pair has completed
	nextID uint64
	now    int64 // the clock at the turn's start: nanoseconds since the loop started

	bufs *bufRing
	// Free pairs of slots of the ring's file table (the first of each),
	// and the next never used; fileSlots is 0 where the kernel refused a
	// table, and every pair then uses its descriptors.
	freeSlots []int32
	nextSlot  int32
	fileSlots int32
	// starved are sides whose receive found no buffer free (ENOBUFS):
	// they receive again after the turn, its buffers given back.
	starved []starvedSide
}

type starvedSide struct {
	p *Pair
	s *side
}

// startRingLoop starts a loop on a thread of its own and returns once
// its ring is set up (the ring must be made on the thread that submits).
func startRingLoop() (*ringLoop, error) {
	evfd, err := newEventfd()
	if err != nil {
		return nil, err
	}
	l := &ringLoop{inbox: inbox{evfd: evfd}, evbuf: new([8]byte), done: make(chan struct{}), pairs: map[uint64]*Pair{}, nextID: 1}
	ready := make(chan error, 1)
	go l.run(ready)
	if err := <-ready; err != nil {
		unix.Close(evfd)
		return nil, err
	}
	return l, nil
}

func (l *ringLoop) stop() {
	l.signalStop()
	<-l.done
}

func (l *ringLoop) run(ready chan<- error) {
	runtime.LockOSThread() // the ring's single issuer; never unlocked: the thread ends with the loop
	defer close(l.done)
	r, err := newRing(ringEntries)
	if err != nil {
		ready <- fmt.Errorf("relay: %w", err)
		return
	}
	bufs, err := newBufRing(r, ringBufGroup, ringBufCount, ringBufSize)
	if err != nil {
		r.close()
		ready <- fmt.Errorf("relay: %w", err)
		return
	}
	l.r, l.bufs, l.tid = r, bufs, unix.Gettid()
	if n := fileTableSize(); r.registerFiles(n) == nil {
		l.fileSlots = int32(n)
	}
	ready <- nil
	l.armWake()
	// The loop's clock is monotonic time since it started: one read of
	// the clock a turn (time.Now reads it twice, for the wall clock too).
	start := time.Now()
	l.now = int64(time.Since(start))
	lastScan := l.now
	stopping, quiet := false, false
	for {
		wait := max(scanEvery-(l.now-lastScan), int64(time.Millisecond))
		if !quiet {
			wait = min(wait, int64(nbio.BusyWait))
		}
		if err := r.enter(true, wait, quiet); err != nil {
			panic(fmt.Sprintf("relay: io_uring_enter: %v", err)) // EBADF, EFAULT, EINVAL: a bug here
		}
		l.now = int64(time.Since(start))
		n := r.completions(func(c ringCQE) {
			if c.userData == udWake {
				if !l.takeIncoming() && !stopping {
					stopping = true
					l.abortAll()
				}
				if !stopping {
					l.armWake()
				}
				return
			}
			l.complete(c)
		})
		quiet = n == 0
		starved := l.starved
		l.starved = nil
		for _, st := range starved {
			if from, to := st.p.sides(st.s == &st.p.b); !st.p.ended {
				l.next(st.p, from, to)
			}
		}
		l.bufs.publish()
		if stopping && len(l.pairs) == 0 {
			l.closeDown()
			return
		}
		if l.now-lastScan >= scanEvery {
			lastScan = l.now
			l.closeIdle()
		}
	}
}

// armWake reads the eventfd: the read completes when another goroutine
// writes it (submit, stop).
func (l *ringLoop) armWake() {
	s := l.r.get()
	s.opcode, s.fd, s.addr, s.len, s.userData = opRead, int32(l.evfd), uint64(uintptr(unsafe.Pointer(l.evbuf))), 8, udWake
}

// takeIncoming starts new pairs and carries out aborts; false: the loop
// is to stop.
func (l *ringLoop) takeIncoming() bool {
	in, stopped := l.take()
	for _, p := range in {
		if p.id != 0 || p.ended || p.aborted.Load() || stopped {
			l.finish(p, Aborted, nil) // an abort, of a pair running, ended or not started yet
			continue
		}
		p.id = l.nextID
		l.nextID++
		l.pairs[p.id] = p
		p.last = l.now
		l.install(p)
		l.recv(p, &p.a)
		l.recv(p, &p.b)
	}
	return !stopped
}

// fileTableSize is how many slots a loop's file table has: no more than
// the process may have descriptors open.
func fileTableSize() uint32 {
	n := ringFileSlots
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		n = min(n, lim.Cur)
	}
	return uint32(n &^ 1)
}

// install puts p's sockets in two slots of the file table, so that its
// requests use the files the table holds. The change is queued ahead of
// p's first receives and the kernel makes it when it comes to it, before
// it looks at them. With no slot free, p uses its descriptors.
func (l *ringLoop) install(p *Pair) {
	var base int32
	switch {
	case len(l.freeSlots) > 0:
		base = l.freeSlots[len(l.freeSlots)-1]
		l.freeSlots = l.freeSlots[:len(l.freeSlots)-1]
	case l.nextSlot+2 <= l.fileSlots:
		base = l.nextSlot
		l.nextSlot += 2
	default:
		return
	}
	p.files = [2]int32{int32(p.a.fd), int32(p.b.fd)}
	l.updateFiles(p, base, &p.files)
	p.slot, p.fixed = base, true
}

// uninstall empties p's slots, closing the table's reference to its
// sockets, and frees them for the pairs to come (their changes are
// queued after this one).
func (l *ringLoop) uninstall(p *Pair) {
	if !p.fixed {
		return
	}
	l.updateFiles(p, p.slot, &noFiles)
	l.freeSlots = append(l.freeSlots, p.slot)
	p.fixed = false
}

// noFiles is what a pair's two slots are set to when it ends: empty.
var noFiles = [2]int32{-1, -1}

// updateFiles queues setting the slots from base to files (which the
// kernel reads when it comes to the request). A success posts nothing.
func (l *ringLoop) updateFiles(p *Pair, base int32, files *[2]int32) {
	e := l.r.get()
	e.opcode, e.flags, e.addr, e.len, e.off = opFilesUpdate, sqeCQESkipSuccess, uint64(uintptr(unsafe.Pointer(&files[0]))), 2, uint64(base)
	e.userData = p.userData(&p.a, udFiles)
}

// target is what requests on side s of p name: its slot in the file
// table (a's first, b's next), or its descriptor.
func (p *Pair) target(s *side) (fd int32, fixed bool) {
	switch {
	case !p.fixed:
		return int32(s.fd), false
	case s == &p.b:
		return p.slot + 1, true
	}
	return p.slot, true
}

// sides returns side b (or a) of p, and the other side.
func (p *Pair) sides(b bool) (s, other *side) {
	if b {
		return &p.b, &p.a
	}
	return &p.a, &p.b
}

// recv arms s's multishot receive: until it ends (an EOF, an error, no
// buffer free, a cancel), the kernel picks a buffer for the bytes of each
// arrival and posts them, so the loop does not arm a receive, and the
// kernel a poll, for every message (which HAProxy's epoll, its sockets
// registered once, does not either).
func (l *ringLoop) recv(p *Pair, s *side) {
	e := l.r.get()
	e.opcode, e.flags, e.bufIndex = opRecv, sqeBufferSelect, l.bufs.group
	name(e, p, s)
	e.ioprio = recvMultishot
	e.userData = p.userData(s, udRecv)
	p.inflight++
	s.armed = true
	l.recvs.Add(1)
}

// pause stops s's receive while the socket its bytes go to is full, so
// that a fast sender cannot fill the ring's buffers or memory with bytes
// a slow reader is not taking; the flow starts again once they are sent
// (next).
func (l *ringLoop) pause(p *Pair, s *side) {
	if !s.armed || s.cancelling {
		return
	}
	s.cancelling = true
	e := l.r.get()
	e.opcode, e.addr = opAsyncCancel, p.userData(s, udRecv)
	e.userData = p.userData(s, udCancel)
	p.inflight++
}

// send sends b to s; with dontWait, the send takes what the socket has
// room for now, and fails with EAGAIN rather than wait for room.
func (l *ringLoop) send(p *Pair, s *side, b []byte, dontWait bool) {
	s.sending = b
	e := l.r.get()
	e.opcode, e.addr, e.len = opSend, uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b))
	name(e, p, s)
	e.opFlags = unix.MSG_NOSIGNAL
	if dontWait {
		e.opFlags |= unix.MSG_DONTWAIT
	}
	e.userData = p.userData(s, udSend)
	p.inflight++
}

// name makes e a request on the socket of side s of p.
func name(e *ringSQE, p *Pair, s *side) {
	fd, fixed := p.target(s)
	e.fd = fd
	if fixed {
		e.flags |= sqeFixedFile
	}
}

// userData is what identifies a request of op on side s of p.
func (p *Pair) userData(s *side, op uint64) uint64 {
	ud := p.id<<udShift | op
	if s == &p.b {
		ud |= udSideB
	}
	return ud
}

// complete carries on from one completion.
func (l *ringLoop) complete(c ringCQE) {
	bid, hasBuf := uint16(c.flags>>cqeBufferShift), c.flags&cqeFBuffer != 0
	p := l.pairs[c.userData>>udShift]
	if p == nil {
		if hasBuf {
			l.bufs.put(bid)
		}
		return
	}
	if c.userData&udOp == udFiles { // failed: the pair's requests fail on empty slots
		if c.res < 0 {
			l.finish(p, Failed, fmt.Errorf("relay: io_uring: put the sockets in the file table: %w", unix.Errno(-c.res)))
		}
		return
	}
	more := c.flags&cqeFMore != 0
	if !more {
		p.inflight--
	}
	s, other := p.sides(c.userData&udSideB != 0)
	switch c.userData & udOp {
	case udRecv:
		if !more {
			s.armed, s.cancelling = false, false
		}
		l.received(p, s, other, c.res, bid, hasBuf)
	case udSend:
		l.sent(p, s, other, c.res)
	}
	if p.ended && p.inflight == 0 {
		l.release(p)
	}
}

// received carries on from a receive on s: its bytes are sent on to
// other from the kernel's buffer, without waiting for room, or queued
// behind the send to other in flight; its end is passed on as a
// half-close once everything before it is sent.
func (l *ringLoop) received(p *Pair, s, other *side, res int32, bid uint16, hasBuf bool) {
	if hasBuf && (p.ended || res <= 0) {
		l.bufs.put(bid)
	}
	switch {
	case p.ended:
	case res == -int32(unix.ENOBUFS):
		l.starved = append(l.starved, starvedSide{p, s})
	case res == -int32(unix.ECANCELED): // paused
		l.next(p, s, other)
	case res < 0:
		l.finish(p, Failed, unix.Errno(-res))
	case res == 0:
		s.eof = true
		l.next(p, s, other)
	case !hasBuf:
		l.finish(p, Failed, fmt.Errorf("relay: io_uring: a receive of %d bytes came without a buffer", res))
	default:
		p.last = l.now
		b := l.bufs.buf(bid)[:res]
		switch {
		case other.sending == nil:
			other.fromRing, other.bid = true, bid
			l.send(p, other, b, true)
		case other.spill != nil: // waiting for room: keep a copy, give the buffer back
			if other.backlog == nil {
				other.backlog = getBuf()
			}
			other.backlog = append(other.backlog, b...)
			l.bufs.put(bid)
		default:
			other.queued = append(other.queued, queuedBuf{bid, res})
		}
	}
}

// next carries on the flow from s to other unless a send to other is in
// flight (its completion carries on): what was queued for other, then s's
// end, or s receiving again.
func (l *ringLoop) next(p *Pair, s, other *side) {
	switch {
	case other.sending != nil:
	case len(other.queued) > 0:
		q := other.queued[0]
		other.queued = other.queued[1:]
		other.fromRing, other.bid = true, q.bid
		l.send(p, other, l.bufs.buf(q.bid)[:q.n], true)
	case len(other.backlog) > 0:
		other.spill, other.backlog = other.backlog, nil
		l.send(p, other, other.spill, false)
	case s.eof:
		l.passEOF(p, other)
	case !s.armed:
		l.recv(p, s)
	}
}

// passEOF shuts down other's writing side: the end of the bytes from its
// peer. Once both are shut, the pair is closed.
func (l *ringLoop) passEOF(p *Pair, other *side) {
	if other.shut {
		return
	}
	other.shut = true
	if err := nbio.Shutdown(other.fd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
		l.finish(p, Failed, err)
	} else if p.a.shut && p.b.shut {
		l.finish(p, Closed, nil)
	}
}

// sent carries on from a send to s, of bytes other received: the rest is
// sent again, from memory of its own when the socket was full (with what
// was queued behind it), so that the kernel's buffers go back at once,
// and other's receive pauses until it is sent; all sent, the flow goes on.
func (l *ringLoop) sent(p *Pair, s, other *side, res int32) {
	n := 0
	switch {
	case p.ended:
		l.dropSending(s)
		return
	case res >= 0:
		n = int(res)
	case res != -int32(unix.EAGAIN): // EAGAIN: the socket had no room (MSG_DONTWAIT)
		l.dropSending(s)
		l.finish(p, Failed, unix.Errno(-res))
		return
	}
	if n > 0 {
		p.last = l.now
		if s == &p.b {
			p.AToB += int64(n)
		} else {
			p.BToA += int64(n)
		}
	}
	rest := s.sending[n:]
	switch {
	case len(rest) == 0:
		l.dropSending(s)
		l.next(p, other, s)
	case s.fromRing:
		s.spill = append(getBuf(), rest...)
		l.bufs.put(s.bid)
		s.fromRing = false
		for _, q := range s.queued {
			s.spill = append(s.spill, l.bufs.buf(q.bid)[:q.n]...)
			l.bufs.put(q.bid)
		}
		s.queued = s.queued[:0]
		l.send(p, s, s.spill, false)
		l.pause(p, other)
	default:
		l.send(p, s, rest, false)
	}
}

// dropSending lets go of what s was being sent: the kernel's buffer, or
// the memory the rest was copied to.
func (l *ringLoop) dropSending(s *side) {
	if s.fromRing {
		l.bufs.put(s.bid)
		s.fromRing = false
	}
	if s.spill != nil {
		putBuf(s.spill)
		s.spill = nil
	}
	s.sending = nil
}

// dropQueued lets go of what was received for s and not sent.
func (l *ringLoop) dropQueued(s *side) {
	for _, q := range s.queued {
		l.bufs.put(q.bid)
	}
	s.queued = nil
	if s.backlog != nil {
		putBuf(s.backlog)
		s.backlog = nil
	}
}

// finish ends a pair: its requests in flight are cancelled, and once
// every one has completed its sockets are closed and its owner told.
func (l *ringLoop) finish(p *Pair, o Outcome, err error) {
	if p.ended {
		return // an abort that came after the end
	}
	p.ended = true
	p.outcome, p.err = o, err
	if p.inflight == 0 {
		l.release(p)
		return
	}
	for _, s := range []*side{&p.a, &p.b} {
		fd, fixed := p.target(s)
		e := l.r.get()
		e.opcode, e.fd, e.opFlags = opAsyncCancel, fd, cancelFD|cancelAll
		if fixed {
			e.opFlags |= cancelFDFixed
		}
		e.userData = p.userData(s, udCancel)
		p.inflight++
	}
}

// release closes a pair's sockets, once no request of it is in flight,
// and tells its owner.
func (l *ringLoop) release(p *Pair) {
	if p.released {
		return
	}
	p.released = true
	delete(l.pairs, p.id)
	l.uninstall(p)
	for _, s := range []*side{&p.a, &p.b} {
		nbio.Close(s.fd)
		l.dropSending(s) // nothing in flight: nobody reads it any more
		l.dropQueued(s)
	}
	close(p.done)
}

func (l *ringLoop) closeIdle() {
	for _, p := range l.pairs {
		if p.idle > 0 && !p.ended && l.now-p.last >= int64(p.idle) {
			l.finish(p, Idle, nil)
		}
	}
}

func (l *ringLoop) abortAll() {
	for _, p := range l.pairs {
		l.finish(p, Aborted, nil)
	}
}

// closeDown releases the loop's ring and eventfd, once its pairs are
// gone; pairs submitted after the stop are aborted.
func (l *ringLoop) closeDown() {
	l.r.close() // cancels the wake-up read
	l.bufs.unmap()
	for _, p := range l.inbox.close() {
		l.finish(p, Aborted, nil) // not started: nothing in flight
	}
}
