package lb

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/health"
)

// AdminState is an operator's wish for a backend, independent of its health.
type AdminState int32

// Admin states. Ready takes traffic when healthy; Drain takes no new
// requests or connections but lets in-flight ones finish and keeps being
// health-checked; Maint is Drain plus closing idle pooled connections, for a
// backend about to be stopped.
const (
	Ready AdminState = iota
	Drain
	Maint
)

func (s AdminState) String() string {
	switch s {
	case Drain:
		return "drain"
	case Maint:
		return "maint"
	}
	return "ready"
}

// ParseAdminState parses "ready", "enable", "drain" or "maint".
func ParseAdminState(s string) (AdminState, bool) {
	switch s {
	case "ready", "enable":
		return Ready, true
	case "drain":
		return Drain, true
	case "maint":
		return Maint, true
	}
	return 0, false
}

// backend is one server behind a balancer. A backend outlives reloads that
// keep its address, so its health state, counters and pooled connections
// survive a SIGHUP.
type backend struct {
	name, addr string
	cookie     string // sticky-session value: an opaque id, not the address
	// ap is addr for the event loops' non-blocking connect; invalid when
	// addr names a host (only the goroutine path resolves names).
	ap netip.AddrPort

	weight  atomic.Int32
	maxConn atomic.Int32
	admin   atomic.Int32
	removed atomic.Bool

	mon       *health.Monitor
	upSince   atomic.Int64 // unix nanos of the last transition to up, for slow start
	slowStart atomic.Int64 // the balancer's slow-start period, in nanoseconds

	inflight atomic.Int64 // requests (HTTP) or connections (TCP) in progress
	m        backendMetrics

	poolMu sync.Mutex
	idle   []*backendConn
	// sessions are the TCP-mode client connections tunnelled to the
	// backend, tracked only when the balancer shuts sessions down.
	sessions map[*clientConn]struct{}
	// dials are the TCP-mode connections being made to the backend, each
	// with the cancel of its dial: a backend that leaves the pool or goes
	// down cancels them, so that their clients move on at once instead of
	// waiting out the connect timeout on a server that may never answer
	// (a fenced former primary drops every packet).
	dials map[*clientConn]context.CancelFunc
}

// startDial records cc's dial to b; it reports false when b has already
// left the pool or is down (the caller must not dial).
func (b *backend) startDial(cc *clientConn, cancel context.CancelFunc) bool {
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	if b.removed.Load() || b.state() == health.Down {
		return false
	}
	if b.dials == nil {
		b.dials = make(map[*clientConn]context.CancelFunc)
	}
	b.dials[cc] = cancel
	return true
}

func (b *backend) endDial(cc *clientConn) {
	b.poolMu.Lock()
	delete(b.dials, cc)
	b.poolMu.Unlock()
}

// cancelDials cancels the dials in progress to b and returns how many. The
// caller has marked b removed or down first, so that no dial starts after.
func (b *backend) cancelDials() int {
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	n := len(b.dials)
	for _, cancel := range b.dials {
		cancel()
	}
	clear(b.dials)
	return n
}

// addSession records a tunnelled client connection; it reports false
// when the backend has already left the pool (the caller must not start).
func (b *backend) addSession(cc *clientConn) bool {
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	if b.removed.Load() {
		return false
	}
	if b.sessions == nil {
		b.sessions = make(map[*clientConn]struct{})
	}
	b.sessions[cc] = struct{}{}
	return true
}

func (b *backend) dropSession(cc *clientConn) {
	b.poolMu.Lock()
	delete(b.sessions, cc)
	b.poolMu.Unlock()
}

// Weight implements balance.Backend: the configured weight, ramped up during
// slow start.
func (b *backend) Weight() int {
	ss := time.Duration(b.slowStart.Load())
	if ss == 0 {
		return int(b.weight.Load())
	}
	return b.effectiveWeight(time.Now(), ss)
}

func (b *backend) effectiveWeight(now time.Time, slowStart time.Duration) int {
	w := int(b.weight.Load())
	if slowStart <= 0 || w == 0 {
		return w
	}
	since := b.upSince.Load()
	if since == 0 {
		return w
	}
	el := now.Sub(time.Unix(0, since))
	if el >= slowStart {
		return w
	}
	ramped := int(int64(w) * int64(el) / int64(slowStart))
	return max(ramped, 1)
}

// Load implements balance.Backend.
func (b *backend) Load() int64 { return b.inflight.Load() }

// Key implements balance.Backend.
func (b *backend) Key() string { return b.addr }

func (b *backend) state() health.State {
	if b.mon == nil {
		return health.Unknown
	}
	return b.mon.State()
}

// full reports whether the backend is at its connection cap.
func (b *backend) full() bool {
	m := b.maxConn.Load()
	return m > 0 && b.inflight.Load() >= int64(m)
}

// backendConn is a connection to a backend with its read buffer. It is
// pooled between requests when the backend keeps it alive.
type backendConn struct {
	c        net.Conn
	br       *bufio.Reader
	b        *backend
	reused   bool
	idleFrom time.Time
}

const (
	maxIdlePerBackend = 256
	idleConnTimeout   = 30 * time.Second
)

// getIdle returns a pooled connection, or nil.
func (b *backend) getIdle(now time.Time) *backendConn {
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	for n := len(b.idle); n > 0; n = len(b.idle) {
		bc := b.idle[n-1]
		b.idle = b.idle[:n-1]
		if now.Sub(bc.idleFrom) < idleConnTimeout {
			bc.reused = true
			return bc
		}
		bc.close()
	}
	return nil
}

// putIdle pools bc for reuse, or closes it when the pool is full or the
// backend is going away.
func (b *backend) putIdle(bc *backendConn, now time.Time) {
	if b.removed.Load() || AdminState(b.admin.Load()) == Maint {
		bc.close()
		return
	}
	b.poolMu.Lock()
	if len(b.idle) >= maxIdlePerBackend {
		b.poolMu.Unlock()
		bc.close()
		return
	}
	bc.idleFrom = now
	b.idle = append(b.idle, bc)
	b.poolMu.Unlock()
}

// closeIdle closes pooled connections idle since before cutoff (all of them
// for the zero time).
func (b *backend) closeIdle(cutoff time.Time) {
	b.poolMu.Lock()
	keep := b.idle[:0]
	var drop []*backendConn
	for _, bc := range b.idle {
		if cutoff.IsZero() || bc.idleFrom.Before(cutoff) {
			drop = append(drop, bc)
		} else {
			keep = append(keep, bc)
		}
	}
	clear(b.idle[len(keep):])
	b.idle = keep
	b.poolMu.Unlock()
	for _, bc := range drop {
		bc.close()
	}
}

var brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func (bc *backendConn) close() {
	bc.c.Close()
	if bc.br != nil {
		bc.br.Reset(nil)
		brPool.Put(bc.br)
		bc.br = nil
	}
}

// alive reports whether a pooled connection still looks open: a non-blocking
// peek that sees EOF or an error means the backend closed it while it was
// idle. It costs one system call, so it is used only before sending a request
// that could not be retried safely.
func (bc *backendConn) alive() bool {
	if bc.br.Buffered() > 0 {
		return false // unsolicited bytes: the connection is out of step
	}
	sc, ok := bc.c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		_ = n
		alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return alive
}
