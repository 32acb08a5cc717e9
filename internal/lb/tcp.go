package lb

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/lb/proxyproto"
	"github.com/haven-ha/haven/internal/lb/relay"
)

// serveTCP proxies one client connection in TCP mode. A backend that cannot
// be reached is skipped for the next (redispatch); once connected, bytes flow
// both ways on the relay's event loops, which take both sockets over and
// need them to be plain *net.TCPConn: nothing may wrap them. With a hold, a connection that finds no usable
// backend, or that every usable backend refused, waits for one (see
// hold.go) instead of being closed.
func (lb *Balancer) serveTCP(cc *clientConn) {
	start := time.Now()
	var e logEntry
	e.reset(start)
	if lb.alog.Load() != nil {
		defer func() {
			// The log as it is at the end: a reload (logrotate)
			// during a long connection reopened it.
			if l := lb.alog.Load(); l != nil {
				l.Write(e.appendTCP(nil, l, lb.name, cc.remote(), time.Now()))
			}
		}()
	}
	s := lb.settings.Load()
	pk := &cc.pk
	var hd *hold
	defer func() { hd.end(holdExpired) }() // a no-op once ended otherwise
	failures := 0
	for {
		// Taken before the pool is read: a change in between wakes the wait.
		changed := lb.holds.next()
		pk.p = lb.pool.Load()
		var b *backend
		err := errRetriesSpent
		if failures <= s.retries {
			var waited time.Duration
			b, waited, err = lb.acquire(context.Background(), pk, cc.hash, "")
			e.queued(waited)
		}
		if err != nil {
			switch {
			case errors.Is(err, errQueueFull):
				e.ended('P', 'Q')
			case errors.Is(err, errQueueWait):
				e.ended('s', 'Q')
			}
			if (errors.Is(err, errNoBackend) || errors.Is(err, errRetriesSpent)) && s.hold > 0 && !lb.closing.Load() {
				if hd == nil {
					if hd = lb.holds.begin(s.hold, s.queueSize); hd == nil {
						lb.log.Debug("tcp: too many connections held for a backend: closing", "client", cc.remote().String(), "held", s.queueSize)
						return
					}
				}
				if hd.wait(changed, failures > 0) {
					// A new look: the backends that refused get another try.
					pk.tried, failures = pk.tried[:0], 0
					continue
				}
			}
			lb.log.Debug("tcp: no backend for connection", "client", cc.remote().String(), "err", err, "held", hd != nil)
			e.ended('S', 'C')
			return
		}
		if hd != nil && peerClosed(cc.c) {
			// The client gave up while held: no backend should see it.
			lb.release(b)
			hd.end(holdGone)
			return
		}
		b.m.requests.Add(1)
		e.backend, e.retries = b.name, failures
		r := lb.proxyTCP(cc, b, s, hd, &e)
		lb.release(b)
		switch r {
		case tcpDone:
			lb.duration.Observe(time.Since(start).Seconds())
			return
		case tcpCancelled:
			// The backend left the pool or went down while we connected:
			// not its failure, and not one of the retries.
			pk.tried = append(pk.tried, b)
		case tcpFailed:
			pk.tried = append(pk.tried, b)
			b.m.retries.Add(1)
			failures++
		}
	}
}

// tcpResult is how proxyTCP ended.
type tcpResult int

const (
	tcpDone      tcpResult = iota // connected (whatever happened next)
	tcpFailed                     // the backend could not be reached: try another
	tcpCancelled                  // the backend left the pool or went down during the dial
)

// proxyTCP connects cc to b and relays until both sides are done. A held
// connection's hold ends, served, once the backend has answered.
func (lb *Balancer) proxyTCP(cc *clientConn, b *backend, s *settings, hd *hold, e *logEntry) tcpResult {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !b.startDial(cc, cancel) {
		return tcpCancelled
	}
	t0 := time.Now()
	bconn, err := dialer(s.connectTimeout).DialContext(ctx, "tcp", b.addr)
	b.endDial(cc)
	if err == nil {
		e.tc = time.Since(t0)
		b.m.connectTime.observe(e.tc)
	}
	if err != nil {
		if ctx.Err() != nil {
			return tcpCancelled
		}
		b.m.connectFailures.Add(1)
		observeFailure(b, "connect: "+err.Error())
		return tcpFailed
	}
	if b.mon != nil {
		b.mon.ObserveSuccess()
	}
	if s.shutdownSessions {
		if !b.addSession(cc) {
			// Removed while we connected; nothing was sent yet.
			bconn.Close()
			return tcpCancelled
		}
		defer b.dropSession(cc)
	}
	hd.end(holdServed)
	if s.proxyProtocol != 0 {
		h, err := proxyproto.HeaderFor(cc.remote(), cc.local(), s.proxyProtocol)
		if err == nil {
			var arr [232]byte // the largest v1 header, and v2 without TLVs
			var buf []byte
			if s.proxyProtocol == 1 {
				buf, err = h.AppendV1(arr[:0])
			} else {
				buf, err = h.AppendV2(arr[:0])
			}
			if err == nil {
				bconn.SetWriteDeadline(time.Now().Add(s.connectTimeout))
				_, err = bconn.Write(buf)
				bconn.SetWriteDeadline(time.Time{})
			}
		}
		if err != nil {
			bconn.Close()
			lb.log.Warn("tcp: cannot send PROXY header", "backend", b.name, "err", err)
			return tcpDone
		}
	}
	lb.relayTCP(cc, bconn, s.tunnelTimeout)
	return tcpDone
}

// relayTCP copies bytes both ways between the client and its backend until
// both are done: on the event loops (relay) unless HAVEN_TCP_RELAY is
// "goroutines", or they could not start. Both connections are closed when
// it returns.
func (lb *Balancer) relayTCP(cc *clientConn, bconn net.Conn, idle time.Duration) {
	defer bconn.Close()
	a, aok := cc.c.(*net.TCPConn)
	b, bok := bconn.(*net.TCPConn)
	loops := tcpRelays(lb.log)
	if !aok || !bok || loops == nil {
		tunnel(cc.c, nil, bconn, nil, idle)
		return
	}
	p, err := loops.Relay(a, b, idle)
	if err != nil {
		// Closed by shutdown_sessions before the relay began, or out of
		// descriptors: both connections are closed.
		if !cc.aborted.Load() {
			lb.log.Warn("tcp: cannot relay the connection: closed", "client", cc.remote().String(), "err", err)
		}
		return
	}
	cc.relay.Store(p)
	if cc.aborted.Load() {
		p.Abort() // closed while the relay began: abort saw no relay yet
	}
	<-p.Done()
}

var (
	relaysOnce sync.Once
	relays     *relay.Loops
	// relayKind is what TCP mode relays with, once the first relay chose:
	// io_uring, epoll or goroutines (haven_lb_tcp_relay_info).
	relayKind atomic.Value
)

// tcpRelays returns the process's event loops for TCP mode, started on
// first use (one per GOMAXPROCS) and shared by its balancers: loops on
// io_uring (relay.NewRing), on epoll where io_uring is missing or refused
// or HAVEN_TCP_RELAY=epoll asks for them; nil when HAVEN_TCP_RELAY=
// goroutines asks for a pair of goroutines per connection, or no loops
// could start (the log says why, once).
func tcpRelays(log *slog.Logger) *relay.Loops {
	relaysOnce.Do(func() {
		var kind string
		relays, kind = chooseRelays(os.Getenv("HAVEN_TCP_RELAY"), relay.NewRing, relay.New, log)
		relayKind.Store(kind)
	})
	return relays
}

// chooseRelays starts the loops HAVEN_TCP_RELAY (choice) asks for, with
// newRing and newEpoll, falling back from io_uring to epoll to
// goroutines (nil) as each is refused; it returns them and their kind.
func chooseRelays(choice string, newRing, newEpoll func(int) (*relay.Loops, error), log *slog.Logger) (*relay.Loops, string) {
	switch choice {
	case "", "epoll", "goroutines":
	default:
		log.Warn("tcp mode: HAVEN_TCP_RELAY is neither epoll nor goroutines: relaying on the default, io_uring (unset it, or set one of those two)",
			"HAVEN_TCP_RELAY", choice)
	}
	if choice == "goroutines" {
		log.Info("tcp mode: relaying with goroutines (HAVEN_TCP_RELAY=goroutines)")
		return nil, "goroutines"
	}
	if choice != "epoll" {
		ls, err := newRing(0)
		if err == nil {
			log.Info("tcp mode: relaying on io_uring loops", "loops", ls.Len())
			return ls, "io_uring"
		}
		log.Warn("tcp mode: io_uring loops unavailable: relaying on epoll loops", "err", err)
	}
	ls, err := newEpoll(0)
	if err != nil {
		log.Warn("tcp mode: the event loops could not start: relaying with goroutines", "err", err)
		return nil, "goroutines"
	}
	return ls, "epoll"
}
