package lb

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/clock"
)

// Holding a TCP connection (pgbouncer's PAUSE, made automatic).
//
// A pool with no usable backend is usually brief for the database's
// router: a failover empties the primary's pool for about a lease, then
// fills it with the new primary. Closing the connections that arrive in
// between turns a failover into client errors; holding them turns it into
// a slow connect. A held connection waits for the pool to change (a
// reload, SetBackends, a health or admin transition), looks again, and
// after the hold time is closed as it would have been at once. The number
// of held connections is bounded, so that a long outage costs at most that
// many sockets and goroutines.
//
// A connection that every usable backend refused (a primary whose
// PostgreSQL died but which has not left the pool yet, or one restarting
// in place, which never leaves it) is held the same way, whatever
// retries.count says: the refusal is the failover's first sign, not an
// answer to the client. It also looks again every holdRetry, trying the
// backends that refused it once more, since a backend that comes back in
// place changes nothing in the pool.
//
// The client's first bytes (PostgreSQL's startup packet) stay in the
// socket's receive buffer while it is held, and go to the backend with the
// rest once it is spliced: nothing is read or buffered by haven.

// holdOutcome is how a hold ended; each has a counter.
type holdOutcome int

const (
	holdServed  holdOutcome = iota // a backend appeared and took the connection
	holdExpired                    // the hold time ran out (or the balancer stopped)
	holdGone                       // the client left while held
	holdRefused                    // the hold was full: closed at once
	numHoldOutcomes
)

var holdOutcomeNames = [numHoldOutcomes]string{"served", "expired", "gone", "refused"}

// holdRetry is how often a held connection tries again the backends that
// refused it.
const holdRetry = 250 * time.Millisecond

// holder holds a balancer's connections while its pool has no usable
// backend. Its clock is the balancer's, so tests decide when a hold ends.
type holder struct {
	clk clock.Clock

	mu      sync.Mutex
	changed chan struct{} // closed at the next change of the pool
	stopped bool

	waiting  atomic.Int64
	outcomes [numHoldOutcomes]atomic.Uint64
}

func newHolder(clk clock.Clock) *holder {
	return &holder{clk: clk, changed: make(chan struct{})}
}

// next returns a channel that is closed at the next change. A caller takes
// it before it looks at the pool, so that a change between the look and
// the wait is not missed.
func (h *holder) next() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

// signal wakes every held connection, to look at the pool again.
func (h *holder) signal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// stop wakes every held connection for the last time: the balancer is
// stopping, and waits end at once from now on.
func (h *holder) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped {
		h.stopped = true
		close(h.changed)
	}
}

// hold is one connection's wait for a backend. It starts when the
// connection first finds no backend and lasts until its deadline, however
// many times the pool changes in between.
type hold struct {
	h     *holder
	timer clock.Timer
	ended bool
}

// begin starts holding a connection for d, or returns nil when limit
// connections are already held (counted as refused).
func (h *holder) begin(d time.Duration, limit int) *hold {
	// The deadline is set before the hold is counted: a test that sees it
	// counted may move a fake clock past it.
	hd := &hold{h: h, timer: h.clk.NewTimer(d)}
	if n := h.waiting.Add(1); n > int64(limit) {
		h.waiting.Add(-1)
		hd.timer.Stop()
		h.outcomes[holdRefused].Add(1)
		return nil
	}
	return hd
}

// wait blocks until changed is closed, or holdRetry has passed when retry
// is set (true: look at the pool again), or until the hold's time is up
// or the balancer stops (false).
func (hd *hold) wait(changed <-chan struct{}, retry bool) bool {
	var again <-chan time.Time
	if retry {
		t := hd.h.clk.NewTimer(holdRetry)
		defer t.Stop()
		again = t.C()
	}
	select {
	case <-changed:
		return !hd.h.isStopped()
	case <-again:
		return !hd.h.isStopped()
	case <-hd.timer.C():
		return false
	}
}

func (h *holder) isStopped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped
}

// end releases the connection's place with its outcome; only the first
// call counts.
func (hd *hold) end(o holdOutcome) {
	if hd == nil || hd.ended {
		return
	}
	hd.ended = true
	hd.timer.Stop()
	hd.h.waiting.Add(-1)
	hd.h.outcomes[o].Add(1)
}

// peerClosed reports whether the client has closed its side of c (or reset
// it): a held client that gave up, whose connection no backend should see
// (PostgreSQL forks a process for every connection). It cannot tell a
// client that only shut down its sending side and still waits for an
// answer; the protocols the hold is for never do that.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}
