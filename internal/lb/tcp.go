package lb

import (
	"context"
	"time"

	"github.com/haven-ha/haven/internal/lb/proxyproto"
)

// serveTCP proxies one client connection in TCP mode. A backend that cannot
// be reached is skipped for the next (redispatch); once connected, bytes flow
// both ways with splice(2), which needs both ends to be plain *net.TCPConn:
// nothing may wrap them.
func (lb *Balancer) serveTCP(cc *clientConn) {
	start := time.Now()
	s := lb.settings.Load()
	pk := &cc.pk
	pk.p = lb.pool.Load()
	for tries := 0; tries <= s.retries; tries++ {
		b, err := lb.acquire(context.Background(), pk, cc.hash, "")
		if err != nil {
			lb.log.Debug("tcp: no backend for connection", "client", cc.c.RemoteAddr().String(), "err", err)
			return
		}
		b.m.requests.Add(1)
		ok := lb.proxyTCP(cc, b, s)
		lb.release(b)
		if ok {
			lb.duration.Observe(time.Since(start).Seconds())
			return
		}
		pk.tried = append(pk.tried, b)
		b.m.retries.Add(1)
	}
}

// proxyTCP connects cc to b and relays until both sides are done. It returns
// false only when the backend could not be reached (so another may be tried).
func (lb *Balancer) proxyTCP(cc *clientConn, b *backend, s *settings) bool {
	bconn, err := dialer(s.connectTimeout).Dial("tcp", b.addr)
	if err != nil {
		b.m.connectFailures.Add(1)
		observeFailure(b, "connect: "+err.Error())
		return false
	}
	if b.mon != nil {
		b.mon.ObserveSuccess()
	}
	if s.proxyProtocol != 0 {
		h, err := proxyproto.HeaderFor(cc.c.RemoteAddr(), cc.c.LocalAddr(), s.proxyProtocol)
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
			return true
		}
	}
	if s.shutdownSessions {
		if !b.addSession(cc) {
			// Removed while we connected: the client must reconnect.
			bconn.Close()
			return true
		}
		defer b.dropSession(cc)
	}
	tunnel(cc.c, nil, bconn, nil, s.tunnelTimeout)
	bconn.Close()
	return true
}
