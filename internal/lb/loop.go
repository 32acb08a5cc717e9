package lb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/lb/balance"
	"github.com/haven-ha/haven/internal/lb/nbio"
)

// The HTTP/1 event loops.
//
// A plain-HTTP balancer serves its connections on a few epoll event loops,
// one per core the process may use, as HAProxy and nginx do, instead of a
// goroutine per connection. Each loop accepts from the listener itself
// (accept4: no getsockname, the socket options inherited from the
// listener, TCP_DEFER_ACCEPT), reads a new connection at once and
// registers it only if its request has not arrived yet (a connection-close client that sent its
// request with the handshake is never registered), and keeps its backend
// connections in a pool of its own. The clock is read once per batch of
// events, and no deadline is armed per read: a scan every tick closes what
// waited too long.
//
// The loops serve the common case: a request whose head, and body if it
// has one (at most maxReplayBody), has arrived, answered by a backend with
// a body of known length (or none). Anything else goes to the goroutine
// path, which serves every case: a connection whose request the loop does
// not take (an upgrade, a chunked or large body, Expect, a malformed head
// to be answered, a queue to wait in), a response with a chunked or
// close-delimited body, and every answer of haven's own (haven's local
// error responses linger, which the goroutine path does). What the loop
// has read goes with the connection: the goroutine path reads it first.
// HAVEN_HTTP_LOOP=off serves every connection on the goroutine path.
//
// While traffic flows a loop waits in epoll_wait itself, as HAProxy's
// threads do, raw: it keeps its processor. Parked on Go's poller instead
// (its epoll set inside the runtime's), it paid a poll of its own set
// before each park, the runtime's polls and a trip through the scheduler
// at each wake: 1.9 epoll_wait per keep-alive request against HAProxy's
// 0.7. Each such loop reserves a processor (nbio.ReserveProcs), so that
// the rest of the process keeps its own. Once a wait has found nothing for
// nbio.BusyWait the loop parks on Go's poller until events come: its set
// is on the runtime's only for that while (there, each event in it would
// wake the runtime's poller too), put there and taken out with raw
// epoll_ctl calls through a set of its own that the runtime's poller
// holds. An idle loop wakes nobody, and its processor is free. Only one
// balancer's loops wait directly (directLoops), or every plain-HTTP
// balancer would add a processor per core; the loops of any other always
// park on Go's poller.

// loopTick is how often a loop looks for timeouts: the loops' timeouts
// fire up to this late.
const loopTick = 50 * time.Millisecond

// yieldEvery is how many turns a busy loop parked through Go's poller
// takes before it yields.
const yieldEvery = 32

// directLoops is held by the balancer whose loops wait directly (a
// variable for the tests, which take it to have loops park through Go's
// poller).
var directLoops atomic.Bool

// loopBufSize is a loop connection's buffer: a request head and its body,
// or a response head.
const loopBufSize = 16 << 10

// httpLoops are a balancer's event loops.
type httpLoops struct {
	loops []*httpLoop
	// served counts requests the loops answered; handed, connections
	// they gave to the goroutine path, by why.
	served atomic.Uint64
	handed [numHandoffReasons]atomic.Uint64
	// running counts the loops until they end; the last gives back what
	// direct loops reserved.
	running atomic.Int32
	release func()
}

// handoffReason is why a loop gave a connection to the goroutine path.
type handoffReason int

// The reasons up to handoffBody are the client's: its request is not
// whole yet, or not one the loop serves (waitsOnClient).
const (
	handoffProxy    handoffReason = iota // a PROXY header to read first
	handoffRequest                       // a request the loop does not serve: an upgrade, Expect, a chunked or large body, a malformed head, limits passed
	handoffHead                          // a head larger than the loop's buffer, or cut short
	handoffBody                          // a body larger than the loop's buffer, cut short, or slow to come
	handoffBackend                       // no backend at hand: the request waits in the queue, for a host name's address, or is answered
	handoffRetry                         // a retry the loop cannot make (the queue, a host-named backend)
	handoffResponse                      // a chunked or close-delimited response, after its head
	handoffAnswer                        // an answer of haven's own (they linger for the client's last bytes)
	numHandoffReasons
)

// waitsOnClient reports whether the connection is handed over with its
// client's request to read on.
func (r handoffReason) waitsOnClient() bool { return r <= handoffBody }

var handoffReasonNames = [numHandoffReasons]string{"proxy", "request", "head", "body", "backend", "retry", "response", "answer"}

// startLoops starts the event loops on ln, or returns nil when the
// balancer's connections are to be served by goroutines: TLS, TCP mode,
// HAVEN_HTTP_LOOP=off, or a listener the loops cannot share.
func (lb *Balancer) startLoops(ln net.Listener) *httpLoops {
	if lb.mode == "tcp" || lb.tls != nil {
		return nil
	}
	if os.Getenv("HAVEN_HTTP_LOOP") == "off" {
		lb.log.Info("http: serving with a goroutine per connection (HAVEN_HTTP_LOOP=off)")
		return nil
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		lb.log.Warn("http: event loops unavailable, serving with goroutines", "err", err)
		return nil
	}
	ls := &httpLoops{}
	// One per processor, less those other loops hold.
	n := nbio.Procs()
	direct := directLoops.CompareAndSwap(false, true)
	for range n {
		l, err := newHTTPLoop(lb, ls, rc, direct)
		if err != nil {
			lb.log.Warn("http: event loops unavailable, serving with goroutines", "err", err)
			for _, l := range ls.loops {
				l.closeFDs()
			}
			if direct {
				directLoops.Store(false)
			}
			return nil
		}
		ls.loops = append(ls.loops, l)
	}
	ls.release = func() {}
	if direct {
		unreserve := nbio.ReserveProcs(n)
		ls.release = func() {
			unreserve()
			directLoops.Store(false)
		}
	}
	ls.running.Store(int32(n))
	for _, l := range ls.loops {
		lb.wg.Add(1) // until the loop has closed its last connection
		go l.run()
	}
	lb.log.Debug("http: serving on event loops", "loops", n, "direct", direct)
	return ls
}

// httpLoops returns the balancer's event loops; nil: none.
func (lb *Balancer) httpLoops() *httpLoops {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.loops
}

// closing tells the loops the balancer is stopping: they stop accepting,
// close their idle connections and end once the others are done.
func (ls *httpLoops) closing() {
	for _, l := range ls.loops {
		l.post(func(l *httpLoop) { l.closing = true })
	}
}

// abort closes every connection the loops still have.
func (ls *httpLoops) abort() {
	for _, l := range ls.loops {
		l.post(func(l *httpLoop) { l.closing, l.aborting = true, true })
	}
}

// httpLoop is one event loop: an epoll set, an eventfd to wake it, its
// copy of the listener, and the connections it owns.
type httpLoop struct {
	lb *Balancer
	ls *httpLoops
	// A direct loop waits in epoll_wait itself while traffic flows; quiet:
	// its last raw wait found nothing, and it parks on Go's poller.
	direct, quiet    bool
	epfd, evfd, lnfd int
	// ep is a set on the runtime's poller: epfd for a loop that is not
	// direct; for a direct one parkfd, which holds epfd while it parks
	// (parked). rc is ep's.
	ep     *os.File
	rc     syscall.RawConn
	parkfd int
	parked bool
	parks  atomic.Uint64 // how often a direct loop parked, for tests

	mu   sync.Mutex
	msgs []func(*httpLoop)

	closing, aborting bool // the balancer is stopping; and its grace is over

	clients map[int32]*hconn
	fresh   []*hconn // accepted in this batch, not read yet
	// dead are descriptors to close after the batch: closed at once, a
	// number could come back from socket() or accept4() in the same batch
	// and take the closed one's events still in it.
	dead     []int
	backends map[int32]*bconn
	idle     map[*backend][]*bconn // pooled backend connections
	free     [][]byte              // loopBufSize buffers for reuse
	buf      []byte                // the loop's read buffer for bodies

	now      int64 // the clock at the start of the batch, in nanoseconds
	nowT     time.Time
	lastScan int64
	// acceptPaused: accept failed for want of descriptors or memory; the
	// listener is out of the set until this time.
	acceptPaused int64
}

func newHTTPLoop(lb *Balancer, ls *httpLoops, rc interface{ Control(func(uintptr)) error }, direct bool) (*httpLoop, error) {
	l := &httpLoop{lb: lb, ls: ls, direct: direct, epfd: -1, evfd: -1, lnfd: -1, parkfd: -1,
		clients: map[int32]*hconn{}, backends: map[int32]*bconn{}, idle: map[*backend][]*bconn{},
		buf: make([]byte, 64<<10)}
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	var derr error
	if err := rc.Control(func(fd uintptr) {
		// Accepted sockets inherit TCP_NODELAY from the listener: no
		// setsockopt per connection. TCP_DEFER_ACCEPT (HAProxy's
		// defer-accept, nginx's deferred) has the kernel hand over a
		// connection once its request has arrived, or after a second
		// without one: the loop then reads it once, instead of waking for
		// the handshake, finding nothing (EAGAIN), registering it and waking
		// again for the request. A third less CPU per connection-close
		// request, measured; a client that connects and says nothing meets
		// client_header a second later.
		if derr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); derr == nil {
			derr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
		}
		if derr == nil {
			// TCP_QUICKACK off, as HAProxy's HTTP listeners: accepted
			// sockets start with delayed acknowledgements, and a new
			// connection's request is acknowledged by its response instead
			// of a packet of its own (11 packets per connection-close
			// request instead of 12, by tcpdump). Best effort: a listener
			// handed over by an older agent may be MPTCP, which refuses it.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
			l.lnfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		}
	}); err != nil || derr != nil {
		l.closeFDs()
		return nil, fmt.Errorf("listener: %w", errors.Join(err, derr))
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.evfd)}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	// Each loop waits on the listener; EPOLLEXCLUSIVE wakes one of them per
	// connection, not all.
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lnfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.lnfd)}); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	onPoller := l.epfd
	if direct {
		if l.parkfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
			l.closeFDs()
			return nil, fmt.Errorf("epoll_create1: %w", err)
		}
		onPoller = l.parkfd
	}
	// Non-blocking, for Go's poller.
	if err := unix.SetNonblock(onPoller, true); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	l.ep = os.NewFile(uintptr(onPoller), "http-epoll")
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.closeFDs()
		return nil, fmt.Errorf("epoll set: %w", err)
	}
	return l, nil
}

func (l *httpLoop) closeFDs() {
	for _, fd := range []int{l.lnfd, l.evfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	l.lnfd, l.evfd = -1, -1
	l.closeEpoll()
}

// closeEpoll closes the loop's epoll sets: the one on Go's poller (ep, if
// made) and, for a direct loop, epfd besides.
func (l *httpLoop) closeEpoll() {
	onPoller := l.epfd
	if l.direct {
		onPoller = l.parkfd
		if l.epfd >= 0 {
			unix.Close(l.epfd)
		}
	}
	if l.ep != nil {
		l.ep.Close()
	} else if onPoller >= 0 {
		unix.Close(onPoller)
	}
	l.ep, l.epfd, l.parkfd = nil, -1, -1
}

var eventOne = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// post runs fn on the loop.
func (l *httpLoop) post(fn func(*httpLoop)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.evfd < 0 {
		return // the loop has ended
	}
	if len(l.msgs) == 0 {
		unix.Write(l.evfd, eventOne) // under the lock: the loop's end closes evfd under it
	}
	l.msgs = append(l.msgs, fn)
}

func (l *httpLoop) takeMessages() {
	var b [8]byte
	unix.Read(l.evfd, b[:])
	l.mu.Lock()
	msgs := l.msgs
	l.msgs = nil
	l.mu.Unlock()
	for _, fn := range msgs {
		fn(l)
	}
}

func (l *httpLoop) clock() {
	l.nowT = time.Now()
	l.now = l.nowT.UnixNano()
}

// run is the loop; it ends once the balancer is stopping and the loop's
// last connection is gone.
func (l *httpLoop) run() {
	defer l.lb.wg.Done()
	defer l.end()
	events := make([]unix.EpollEvent, 256)
	l.clock()
	l.lastScan = l.now
	if !l.direct {
		l.ep.SetReadDeadline(l.nowT.Add(loopTick))
	}
	for turn := 1; ; turn++ {
		var n int
		if l.direct {
			n = l.waitDirect(events)
		} else {
			if turn%yieldEvery == 0 {
				// The loop's system calls do not let the scheduler run
				// other goroutines (package nbio): a busy loop lets them
				// run now and then rather than only when the runtime
				// preempts it (10 ms). A direct loop holds a processor of
				// its own.
				runtime.Gosched()
			}
			n = l.waitParked(events)
		}
		for _, ev := range events[:n] {
			l.dispatch(ev)
		}
		l.readFresh()
		if l.now-l.lastScan >= int64(loopTick) {
			l.scan()
		}
		l.closeDead()
		if l.closing {
			l.stopAccepting()
			if l.aborting {
				for _, h := range l.clients {
					l.fail(h, 'K', 'D')
				}
			}
			if len(l.clients) == 0 {
				return
			}
		}
	}
}

// waitDirect waits for events, until the next scan at most, and returns
// how many came: in a raw epoll_wait while traffic flows, parked on Go's
// poller once quiet.
func (l *httpLoop) waitDirect(events []unix.EpollEvent) int {
	if l.quiet {
		return l.waitQuiet(events)
	}
	wait := min(l.untilScan(), nbio.BusyWait)
	n, err := nbio.EpollWait(l.epfd, events, int((wait+time.Millisecond-1)/time.Millisecond), true)
	switch err {
	case nil:
	case unix.EINTR: // a signal: the runtime's preemption
		n = 0
	default:
		panic(fmt.Sprintf("http loop: epoll_wait: %v", err)) // EBADF, EFAULT or EINVAL: a bug here
	}
	l.clock()
	l.quiet = n == 0
	return n
}

// waitQuiet parks a direct loop on Go's poller until events come or the
// next scan is due: its set goes into parkfd, on the runtime's poller, and
// out again once events came. The calls are raw: one through the
// scheduler wakes its monitor from its deep sleep (an idle process's), to
// look every 20 µs for a while.
func (l *httpLoop) waitQuiet(events []unix.EpollEvent) int {
	if !l.parked {
		if err := parkAdd(l.parkfd, l.epfd); err != nil {
			// ENOMEM (or ENOSPC, max_user_watches): wait through the
			// scheduler this time, and try again at the next wait.
			n, _ := nbio.EpollWait(l.epfd, events, int(l.untilScan()/time.Millisecond), false)
			l.clock()
			l.quiet = n <= 0
			return max(n, 0)
		}
		l.parked = true
		l.parks.Add(1)
		l.ep.SetReadDeadline(l.nowT.Add(l.untilScan()))
	}
	n := l.waitParked(events)
	if n > 0 {
		// Cannot fail: epfd is in parkfd, both open.
		nbio.EpollCtl(l.parkfd, unix.EPOLL_CTL_DEL, l.epfd, nil)
		l.parked, l.quiet = false, false
	}
	return n
}

// untilScan is how long the loop may wait before its next scan is due (a
// millisecond at least).
func (l *httpLoop) untilScan() time.Duration {
	return max(loopTick-time.Duration(l.now-l.lastScan), time.Millisecond)
}

// parkAdd puts a direct loop's set, epfd, into its parkfd (a variable for
// the tests, which make it fail).
var parkAdd = func(parkfd, epfd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(epfd)}
	return nbio.EpollCtl(parkfd, unix.EPOLL_CTL_ADD, epfd, &ev)
}

// waitParked polls for events, parked on the runtime's poller until some
// come or the next scan is due, and returns how many came.
func (l *httpLoop) waitParked(events []unix.EpollEvent) int {
	n := 0
	var werr error
	err := l.rc.Read(func(uintptr) bool {
		n, werr = nbio.EpollPoll(l.epfd, events)
		return n > 0 || (werr != nil && werr != unix.EINTR)
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		werr = errors.Join(err, werr)
	}
	if werr != nil {
		panic(fmt.Sprintf("http loop: epoll_wait: %v", werr)) // EBADF, EFAULT or EINVAL: a bug here
	}
	l.clock()
	if err != nil {
		// Until it is moved, an expired deadline fails every wait.
		l.ep.SetReadDeadline(l.nowT.Add(loopTick))
		return 0
	}
	return max(n, 0)
}

func (l *httpLoop) dispatch(ev unix.EpollEvent) {
	fd := ev.Fd
	switch {
	case int(fd) == l.evfd:
		l.takeMessages()
		if l.closing {
			l.closeIdleClients()
		}
	case int(fd) == l.lnfd:
		l.accept()
	default:
		hup := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		readable := hup || ev.Events&unix.EPOLLIN != 0
		writable := ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0
		if h := l.clients[fd]; h != nil {
			h.readable = h.readable || readable
			h.hup = h.hup || hup
			h.writable = h.writable || writable
			l.clientReady(h)
		} else if bc := l.backends[fd]; bc != nil {
			bc.readable = bc.readable || readable
			bc.hup = bc.hup || hup
			bc.writable = bc.writable || writable
			l.backendReady(bc)
		}
	}
}

// accept takes the connections waiting on the listener, a bounded number
// per turn so that a flood of them does not hold up the others.
func (l *httpLoop) accept() {
	for range 64 {
		if l.lnfd < 0 {
			return
		}
		fd, ap, err := accept4(l.lnfd)
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
			continue
		default:
			// Out of descriptors or memory: take the listener out of the
			// set for a while rather than spin on it (it stays readable).
			l.lb.log.Warn("accept failed", "err", err, "retry_in", time.Second)
			l.acceptPaused = l.now + int64(time.Second)
			unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lnfd, nil)
			return
		}
		l.lb.accepted.Add(1)
		l.lb.clients.Add(1)
		h := l.newConn(fd, ap)
		l.clients[int32(fd)] = h
		if l.lb.settings.Load().acceptProxy != nil {
			// The PROXY header is peeked on the goroutine path.
			l.handOff(h, handoffProxy, true)
			continue
		}
		// Read it after the batch's other events: a client sends its
		// request right after the handshake, which is then there, and the
		// connection needs no registration to be answered.
		h.readable, h.fresh = true, true
		l.fresh = append(l.fresh, h)
	}
}

// closeLater closes fd after the batch (it leaves the epoll set then:
// no other descriptor refers to its socket).
func (l *httpLoop) closeLater(fd int) { l.dead = append(l.dead, fd) }

func (l *httpLoop) closeDead() {
	for _, fd := range l.dead {
		nbio.Close(fd)
	}
	l.dead = l.dead[:0]
}

// readFresh reads the connections accepted in the last batch.
func (l *httpLoop) readFresh() {
	for i, h := range l.fresh {
		l.fresh[i] = nil
		h.fresh = false
		if l.clients[int32(h.fd)] == h {
			l.clientReady(h)
		}
	}
	l.fresh = l.fresh[:0]
}

// accept4 accepts a connection, non-blocking, and returns its peer's
// address. (unix.Accept4 asks for each IPv4 socket's protocol, one more
// system call per connection, to tell L2TP apart.)
func accept4(lnfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	fd, err := nbio.Accept4(lnfd, &rsa)
	if err != nil {
		return -1, netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), ntohs(sa.Port))
	}
	return fd, ap, nil
}

func ntohs(p uint16) uint16 { return p>>8 | p<<8 }

func (l *httpLoop) newConn(fd int, ap netip.AddrPort) *hconn {
	cc := &clientConn{lb: l.lb}
	cc.pk.init()
	cc.ip = ap.Addr().Unmap()
	cc.hash = balance.HashAddr(cc.ip)
	cc.client = net.TCPAddrFromAddrPort(ap)
	s := l.lb.settings.Load()
	return &hconn{fd: fd, cc: cc, writable: true, headStart: l.now, deadline: l.now + int64(s.headerTimeout)}
}

func (l *httpLoop) stopAccepting() {
	if l.lnfd >= 0 {
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lnfd, nil)
		unix.Close(l.lnfd)
		l.lnfd = -1
	}
}

// closeIdleClients closes the connections waiting for a request with
// nothing of one read: the balancer is stopping.
func (l *httpLoop) closeIdleClients() {
	for _, h := range l.clients {
		if h.state == waitRequest && len(h.in) == 0 && !h.fresh {
			l.closeClient(h)
		}
	}
}

// scan enforces the timeouts, every loopTick, and once a second closes
// pooled backend connections that idled too long or whose backend left.
func (l *httpLoop) scan() {
	second := l.now/int64(time.Second) != l.lastScan/int64(time.Second)
	l.lastScan = l.now
	for _, h := range l.clients {
		l.checkTimeout(h)
	}
	if !second {
		return
	}
	if l.acceptPaused != 0 && l.now >= l.acceptPaused && l.lnfd >= 0 {
		l.acceptPaused = 0
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lnfd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(l.lnfd)})
	}
	cutoff := l.now - int64(idleConnTimeout)
	for b, list := range l.idle {
		gone := b.removed.Load() || AdminState(b.admin.Load()) == Maint
		keep := list[:0]
		for _, bc := range list {
			if gone || bc.idleFrom < cutoff {
				l.closeBackend(bc)
			} else {
				keep = append(keep, bc)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(l.idle, b)
		} else {
			l.idle[b] = keep
		}
	}
}

// end closes what the loop still holds: its pooled backend connections
// and its descriptors.
func (l *httpLoop) end() {
	for _, h := range l.clients {
		l.fail(h, 'K', 'D')
	}
	for _, list := range l.idle {
		for _, bc := range list {
			l.closeBackend(bc)
		}
	}
	l.idle = nil
	l.closeDead()
	l.stopAccepting()
	l.mu.Lock()
	unix.Close(l.evfd)
	l.evfd = -1
	l.mu.Unlock()
	l.closeEpoll()
	if l.ls.running.Add(-1) == 0 {
		l.ls.release()
	}
}

// register adds fd to the set once; edge-triggered, for reads and writes.
func (l *httpLoop) register(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	return nbio.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

func (l *httpLoop) getBuf() []byte {
	if n := len(l.free); n > 0 {
		b := l.free[n-1]
		l.free = l.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, loopBufSize)
}

func (l *httpLoop) putBuf(b []byte) {
	if cap(b) == loopBufSize && len(l.free) < 1024 {
		l.free = append(l.free, b[:0])
	}
}

// readInto reads from fd into the free part of *buf. It reports whether fd
// may have more to read: false once a read came back short (the socket is
// drained: its next bytes raise a new edge) unless hup says an EOF is
// behind them, or EAGAIN. eof: the peer closed its side.
func readInto(fd int, buf *[]byte, hup bool) (more, eof bool, err error) {
	b := *buf
	for {
		n, err := nbio.Read(fd, b[len(b):cap(b)])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false, false, nil
		case err != nil:
			return false, false, err
		case n == 0:
			return false, true, nil
		}
		*buf = b[:len(b)+n]
		return len(*buf) == cap(b) || hup, false, nil
	}
}

// loopAddr is addr for the loops' connect(2); invalid when it is not an IP
// address and port.
func loopAddr(addr string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Addr().Zone() != "" {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// sockaddr is ap for connect(2): a new one each time, since connect writes
// into it.
func sockaddr(ap netip.AddrPort) (family int, sa unix.Sockaddr) {
	if a := ap.Addr(); a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
