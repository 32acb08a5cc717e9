package lb

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/lb/balance"
	"github.com/haven-ha/haven/internal/lb/relay"
)

// clientConn is one accepted client connection. Its per-request buffers
// live in a pooled scratch while a request is served, not here: idle
// connections hold no buffer.
type clientConn struct {
	lb    *Balancer
	c     net.Conn
	br    *bufio.Reader // nil while idle between requests: idle connections hold no buffer
	first firstByte
	idle  atomic.Bool
	tls   bool

	ip   netip.Addr
	hash uint64
	// client and server are the addresses a PROXY header gave (nil: the
	// connection's own).
	client, server net.Addr

	// headDeadline, when set, bounds the first request head read on the
	// goroutine path: the one an event loop began to read before it
	// handed the connection over.
	headDeadline time.Time

	// relay is the TCP mode relay that owns the connection's socket once
	// connected; aborted says abort was called (see abort).
	relay   atomic.Pointer[relay.Pair]
	aborted atomic.Bool

	pk picker
}

func (lb *Balancer) track(c net.Conn) *clientConn {
	cc := &clientConn{lb: lb, c: c}
	cc.pk.init()
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cc.ip = ta.AddrPort().Addr().Unmap()
		cc.hash = balance.HashAddr(cc.ip)
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.closing.Load() {
		return nil
	}
	lb.adoptLocked(cc)
	return cc
}

// adopt tracks a connection an event loop hands to the goroutine path. It
// is tracked even while the balancer closes: the loop, which counts in
// lb.wg until its last connection is gone, has read from it already.
func (lb *Balancer) adopt(cc *clientConn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.adoptLocked(cc)
}

func (lb *Balancer) adoptLocked(cc *clientConn) {
	lb.conns[cc] = struct{}{}
	lb.wg.Add(1)
	lb.clients.Add(1)
	if lb.aborting {
		cc.abort() // handed over after the shutdown's grace: closed as the rest were
	}
}

// abort closes the connection from another goroutine: a TCP mode
// connection whose backend went away (shutdown_sessions), or one still open
// at the end of a shutdown's grace. Once relayed, its socket belongs to the
// relay, which abort asks to close it; the flag covers a relay that begins
// meanwhile, which checks it after it is stored.
func (cc *clientConn) abort() {
	cc.aborted.Store(true)
	cc.c.Close()
	if p := cc.relay.Load(); p != nil {
		p.Abort()
	}
}

// remote is the client's address: the connection's peer, or the client a
// PROXY header named.
func (cc *clientConn) remote() net.Addr {
	if cc.client != nil {
		return cc.client
	}
	return cc.c.RemoteAddr()
}

// local is the address the client connected to.
func (cc *clientConn) local() net.Addr {
	if cc.server != nil {
		return cc.server
	}
	return cc.c.LocalAddr()
}

// setClient makes a PROXY header's addresses the connection's.
func (cc *clientConn) setClient(client, server netip.AddrPort) {
	cc.client, cc.server = net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(server)
	cc.ip = client.Addr().Unmap()
	cc.hash = balance.HashAddr(cc.ip)
}

func (lb *Balancer) untrack(cc *clientConn) {
	cc.c.Close()
	cc.releaseReader()
	lb.mu.Lock()
	delete(lb.conns, cc)
	lb.mu.Unlock()
	lb.clients.Add(-1)
	lb.wg.Done()
}

// closeIdleClients closes connections waiting for their next request; busy
// ones close after their current response.
func (lb *Balancer) closeIdleClients() {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for cc := range lb.conns {
		if cc.idle.Load() {
			cc.c.Close()
		}
	}
}

// firstByte is an io.Reader that yields one byte already read from the
// connection and then reads from the connection itself. It lets an idle
// connection wait for its next request with a one-byte read and take a
// buffer from the pool only when a request arrives. pre are bytes an
// event loop read before it handed the connection over: they come first.
type firstByte struct {
	b    [1]byte
	has  bool
	pre  []byte
	conn io.Reader
}

func (f *firstByte) Read(p []byte) (int, error) {
	if len(f.pre) > 0 {
		n := copy(p, f.pre)
		f.pre = f.pre[n:]
		return n, nil
	}
	if f.has {
		if len(p) == 0 {
			return 0, nil
		}
		p[0] = f.b[0]
		f.has = false
		return 1, nil
	}
	return f.conn.Read(p)
}

var clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// attachReader takes a buffer for a request whose first byte waitRequest read.
func (cc *clientConn) attachReader() {
	cc.br = clientReaders.Get().(*bufio.Reader)
	cc.br.Reset(&cc.first)
}

func (cc *clientConn) releaseReader() {
	if cc.br != nil {
		cc.br.Reset(nil)
		clientReaders.Put(cc.br)
		cc.br = nil
	}
}
