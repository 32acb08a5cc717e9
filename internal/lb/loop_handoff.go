package lb

import (
	"bufio"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Hand-offs: a loop gives a connection to the goroutine path, which serves
// it from then on, with what the loop read from it.

// detach takes fd out of the loop and makes it a net.Conn of the runtime's
// poller (a duplicate; fd itself is closed after the batch).
func (l *httpLoop) detach(fd int, registered bool) (net.Conn, error) {
	if registered {
		// The duplicate would keep the registration alive, and its events
		// would come under a number the loop may reuse.
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	defer l.closeLater(fd)
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(nfd), "")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// detachClient removes h from the loop and returns its connection, ready
// for the goroutine path; nil if that failed (h is closed).
func (l *httpLoop) detachClient(h *hconn, why handoffReason) *clientConn {
	delete(l.clients, int32(h.fd))
	l.putBuf(h.in)
	h.in = nil
	l.lb.clients.Add(-1) // adopt counts it again
	c, err := l.detach(h.fd, h.registered)
	if err != nil {
		l.lb.log.Warn("http loop: could not hand a connection over", "client", h.cc.remote().String(), "err", err)
		return nil
	}
	h.cc.c = c
	l.ls.handed[why].Add(1)
	l.lb.adopt(h.cc)
	return h.cc
}

// handOff gives the connection to the goroutine path, which reads the
// request afresh, beginning with what the loop read (fresh: nothing yet;
// a PROXY header comes first).
func (l *httpLoop) handOff(h *hconn, why handoffReason, fresh bool) {
	if why.waitsOnClient() {
		ackNow(h.fd) // the rest of the request may be waiting for it
	}
	var pre []byte
	if h.sc != nil {
		// A request taken but not sent anywhere: it goes back in front.
		pre = append(append(append(pre, h.sc.head...), h.sc.body...), h.in...)
		if h.b != nil {
			l.lb.release(h.b)
			h.b = nil
		}
		scratchPool.Put(h.sc)
		h.sc = nil
	} else {
		pre = append(pre, h.in...)
	}
	var deadline time.Time
	if h.headStart != 0 && len(pre) > 0 {
		deadline = time.Unix(0, h.headStart+int64(l.lb.settings.Load().headerTimeout))
	}
	cc := l.detachClient(h, why)
	if cc == nil {
		return
	}
	cc.headDeadline = deadline
	go l.lb.serveAdopted(cc, pre, fresh)
}

func (lb *Balancer) serveAdopted(cc *clientConn, pre []byte, fresh bool) {
	defer lb.untrack(cc)
	if s := lb.settings.Load(); fresh && s.acceptProxy != nil && !lb.acceptProxy(cc, s) {
		return
	}
	cc.first.pre = pre
	lb.serveRequests(cc, cc.c, true)
}

// answer ends the request with haven's own response, on the goroutine path
// (it lingers for the client to read it), and closes the connection.
func (l *httpLoop) answer(h *hconn, status int, msg string) {
	l.dropBackend(h)
	if h.b != nil {
		l.lb.release(h.b)
		h.b = nil
	}
	sc := h.sc
	h.sc = nil
	if sc == nil {
		sc = scratchPool.Get().(*scratch)
		sc.log.reset(time.Unix(0, h.headStart))
	}
	interim := append([]byte(nil), h.out...)
	h.out = nil
	cc := l.detachClient(h, handoffAnswer)
	if cc == nil {
		scratchPool.Put(sc)
		return
	}
	go l.lb.answerAdopted(cc, sc, status, msg, interim)
}

func (lb *Balancer) answerAdopted(cc *clientConn, sc *scratch, status int, msg string, interim []byte) {
	defer lb.untrack(cc)
	if writeInterim(cc, interim, lb.settings.Load()) {
		lb.refuse(sc, cc.c, status, msg)
	}
	lb.logRequest(cc, sc)
	scratchPool.Put(sc)
}

// handOffExchange gives the connection and its backend's to the goroutine
// path once the response head is in: its body (chunked, or up to the
// backend's close) is relayed there, and the connection served there from
// then on.
func (l *httpLoop) handOffExchange(h *hconn) {
	bc, b := h.bc, h.b
	h.bc = nil
	delete(l.backends, int32(bc.fd))
	bcn, err := l.detach(bc.fd, true) // a backend connection is registered from its connect on
	if err != nil {
		l.putBuf(bc.in)
		l.lb.log.Warn("http loop: could not hand a backend connection over", "backend", b.name, "err", err)
		l.fail(h, 'K', 'D')
		return
	}
	br := brPool.Get().(*bufio.Reader)
	br.Reset(&firstByte{pre: append([]byte(nil), bc.in...), conn: bcn})
	l.putBuf(bc.in)
	gbc := &backendConn{c: bcn, br: br, b: b, reused: bc.reused}
	sc := h.sc
	a := attempt{s: h.s, sc: sc, replayable: h.replayable, sticky: h.sticky, lastTry: true,
		failStatus: h.failStatus, failMsg: h.failMsg}
	interim := append([]byte(nil), h.out...)
	pipelined := append([]byte(nil), h.in...)
	h.sc, h.b, h.out = nil, nil, nil
	cc := l.detachClient(h, handoffResponse)
	if cc == nil {
		gbc.close()
		l.lb.release(b)
		scratchPool.Put(sc)
		return
	}
	go l.lb.resumeExchange(cc, gbc, a, interim, pipelined)
}

// resumeExchange relays a response whose head a loop read, then serves the
// connection's next requests.
func (lb *Balancer) resumeExchange(cc *clientConn, bc *backendConn, a attempt, interim, pipelined []byte) {
	defer lb.untrack(cc)
	sc := a.sc
	a.rw = cc.c
	out := failed
	if writeInterim(cc, interim, a.s) {
		out = lb.relayResponse(cc, bc.b, bc, &a)
	} else {
		bc.close()
	}
	lb.release(bc.b)
	switch out {
	case done, doneClose:
		lb.duration.Observe(time.Since(sc.log.start).Seconds())
	default:
		sc.log.ended('C', 'D')
	}
	lb.logRequest(cc, sc)
	scratchPool.Put(sc)
	if out == done && !lb.closing.Load() {
		lb.continueRequests(cc, pipelined)
	}
}

// continueRequests serves a handed-over connection's next requests,
// beginning with the bytes of them the loop read.
func (lb *Balancer) continueRequests(cc *clientConn, pipelined []byte) {
	cc.first.pre = pipelined
	cc.first.conn = cc.c
	if len(pipelined) > 0 {
		cc.attachReader()
	}
	lb.serveRequests(cc, cc.c, false)
}

// handOffRetry gives the goroutine path a request a backend has failed
// (or that met a stale pooled connection) when the loop cannot go on with
// it: the other backends are at max_conn (the queue is the goroutine
// path's), or the next is named by host. It goes on with the retries
// where the loop left them (the backends tried are in the picker).
func (l *httpLoop) handOffRetry(h *hconn) {
	sc := h.sc
	a := attempt{s: h.s, sc: sc, replayable: h.replayable, bodyBuffered: true, sticky: h.sticky,
		failStatus: h.failStatus, failMsg: h.failMsg, freshOnly: h.freshOnly}
	tries := h.tries
	pipelined := append([]byte(nil), h.in...)
	interim := append([]byte(nil), h.out...)
	h.sc, h.out = nil, nil
	cc := l.detachClient(h, handoffRetry)
	if cc == nil {
		scratchPool.Put(sc)
		return
	}
	go l.lb.resumeForward(cc, a, tries, interim, pipelined)
}

func (lb *Balancer) resumeForward(cc *clientConn, a attempt, tries int, interim, pipelined []byte) {
	defer lb.untrack(cc)
	a.rw = cc.c
	sc := a.sc
	ok := writeInterim(cc, interim, a.s) && lb.forward(cc, &a, tries, sc.log.start)
	lb.logRequest(cc, sc)
	scratchPool.Put(sc)
	if ok {
		lb.continueRequests(cc, pipelined)
	}
}

// writeInterim writes what a loop could not yet write of an interim
// response (103 Early Hints).
func writeInterim(cc *clientConn, interim []byte, s *settings) bool {
	if len(interim) == 0 {
		return true
	}
	cc.c.SetWriteDeadline(time.Now().Add(s.clientTimeout))
	_, err := cc.c.Write(interim)
	return err == nil
}
