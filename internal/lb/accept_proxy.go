package lb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/lb/proxyproto"
)

// This file reads the PROXY protocol header that a proxy in front of a
// listener (a cloud load balancer, another haven, HAProxy with send-proxy)
// sends ahead of its client's bytes (balancers.NAME.accept_proxy_from).

// maxProxyHeader bounds the header haven reads: a v1 line is at most 107
// bytes; a v2 header is 16 bytes of fixed part, the addresses and TLVs,
// which cloud load balancers keep to a few hundred bytes.
const maxProxyHeader = 4096

// Reasons a connection is refused before its first byte reaches a backend;
// each is a label of haven_lb_proxy_refused_total.
const (
	proxyUntrusted = iota // from a source not in accept_proxy_from
	proxyInvalid          // no valid header (a client that does not speak the protocol, or a malformed one)
	proxyTimeout          // no complete header within timeouts.client_header
	proxyReasons
)

var proxyReasonNames = [proxyReasons]string{"untrusted", "invalid", "timeout"}

// acceptProxy refuses a connection from an untrusted source, reads the
// PROXY header of a trusted one, and makes the header's client the
// connection's client. It reports whether to serve the connection.
func (lb *Balancer) acceptProxy(cc *clientConn, s *settings) bool {
	if !trusts(s.acceptProxy, cc.ip) {
		lb.proxyRefused[proxyUntrusted].Add(1)
		lb.log.Debug("refused a connection from a source not in accept_proxy_from", "client", cc.remote().String())
		return false
	}
	tc, ok := cc.c.(*net.TCPConn)
	if !ok {
		return false // listeners are TCP
	}
	h, err := readProxyHeader(tc, time.Now().Add(s.headerTimeout))
	if err != nil {
		reason := proxyInvalid
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason = proxyTimeout
		}
		lb.proxyRefused[reason].Add(1)
		lb.log.Debug("refused a connection without a valid PROXY header", "proxy", cc.remote().String(), "err", err)
		return false
	}
	if h.Command == proxyproto.Proxy && h.Source.IsValid() {
		cc.setClient(h.Source, h.Destination)
	}
	return true
}

// trusts reports whether ip is within one of the sources.
func trusts(sources []netip.Prefix, ip netip.Addr) bool {
	for _, p := range sources {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyBuf is the buffer a header is peeked into and the reader it is
// parsed from, pooled: a proxied listener takes one per connection.
type proxyBuf struct {
	b  [maxProxyHeader]byte
	r  bytes.Reader
	br *bufio.Reader
}

var proxyBufs = sync.Pool{New: func() any {
	p := &proxyBuf{}
	p.br = bufio.NewReaderSize(&p.r, maxProxyHeader)
	return p
}}

// readProxyHeader reads one PROXY header from c by the given deadline and
// consumes exactly its bytes, leaving c a plain *net.TCPConn (TLS, splice
// and the write-progress checks need it). It peeks at what has arrived
// (MSG_PEEK) until a whole header parses, waiting on the runtime's poller
// between peeks, and then reads the header's own bytes off the socket: a
// v1 line has no length ahead of it, so reading into a buffer would take
// the client's first bytes too.
func readProxyHeader(c *net.TCPConn, deadline time.Time) (*proxyproto.Header, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	pb := proxyBufs.Get().(*proxyBuf)
	defer proxyBufs.Put(pb)

	var (
		h         *proxyproto.Header
		used, got int
		perr      error
	)
	closed := func() bool {
		perr = fmt.Errorf("the proxy closed the connection after %d bytes of a PROXY header: %w", got, io.ErrUnexpectedEOF)
		return true
	}
	rerr := rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), pb.b[:], unix.MSG_PEEK)
		switch {
		case err == unix.EAGAIN:
			return false
		case err != nil:
			perr = err
			return true
		case n == 0:
			return closed()
		}
		if n != got {
			got = n
			pb.r.Reset(pb.b[:n])
			pb.br.Reset(&pb.r)
			h, perr = proxyproto.Read(pb.br)
			if !errors.Is(perr, io.ErrUnexpectedEOF) || n == len(pb.b) {
				used = n - pb.br.Buffered()
				return true
			}
		}
		// A header cut short so far. A peek shows the queued bytes, never
		// a FIN behind them, and a FIN that came with them raises no
		// further edge: look before waiting for the rest.
		if peerShut(int(fd)) {
			return closed()
		}
		return false
	})
	switch {
	case rerr != nil:
		return nil, fmt.Errorf("waiting for a PROXY header (%d bytes so far): %w", got, rerr)
	case errors.Is(perr, io.ErrUnexpectedEOF) && got == len(pb.b):
		return nil, fmt.Errorf("a PROXY header longer than %d bytes", maxProxyHeader)
	case perr != nil:
		return nil, perr
	}
	if _, err := io.ReadFull(c, pb.b[:used]); err != nil {
		return nil, fmt.Errorf("consuming a PROXY header's %d bytes: %w", used, err)
	}
	return h, nil
}

// peerShut reports whether the peer of socket fd has shut down its sending
// side (or the connection is gone).
func peerShut(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
}

// addrConn is a connection whose addresses are those a PROXY header gave:
// the HTTP/2 server reads the client's address from its connection.
type addrConn struct {
	net.Conn
	remote, local net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }
func (c *addrConn) LocalAddr() net.Addr  { return c.local }
