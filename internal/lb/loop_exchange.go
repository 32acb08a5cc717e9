package lb

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb/nbio"
)

// A loop connection's request goes through the same steps as on the
// goroutine path (serveRequest, exchange, relayResponse), as callbacks of
// the loop: each step runs when the socket it waits on is ready.

type hstate uint8

const (
	waitRequest hstate = iota // reading a request head, or idle between requests
	atBackend                 // the request is with a backend: connecting, sending, waiting for the answer
	responding                // the response is going to the client
)

// hconn is a client connection on a loop.
type hconn struct {
	fd    int
	cc    *clientConn // its address, hash and picker; its net.Conn once handed off
	state hstate
	// registered: in the loop's epoll set (a connection whose request came
	// with its handshake and that closes after the answer never is).
	// readable and writable are what the last edges said and no read or
	// write since contradicted; hup: the peer's FIN or an error was seen.
	registered, readable, writable, hup, eof bool
	fresh                                    bool   // accepted in this batch, not read yet
	in                                       []byte // read, not yet taken as a request
	headStart                                int64  // when the head being read began (0: none yet)
	deadline                                 int64  // when the current wait times out

	// The request in flight.
	sc                             *scratch
	s                              *settings
	b                              *backend // holds a slot of b (release)
	bc                             *bconn
	tries                          int
	replayable, freshOnly, lastTry bool
	sticky                         string
	failStatus                     int
	failMsg                        string
	sentAt                         int64
	out                            []byte // for the client, not yet written
	remaining                      int64  // body bytes still to come from the backend
	headLen, bodyBytes             int64
	keepClient, keepBackend        bool
	acked                          ackProgress // what the client had acknowledged at the last write timeout
	// When bytes last moved to the client and from the backend: a wait
	// for either times out from then, not from the last event.
	clientMoved, backendMoved int64
}

type bstate uint8

const (
	connecting bstate = iota
	sending
	awaiting // the response head
	streaming
	pooled
)

// bconn is a backend connection on a loop; pooled by the loop between
// requests.
type bconn struct {
	fd                           int
	b                            *backend
	h                            *hconn // nil while pooled
	state                        bstate
	readable, writable, hup, eof bool
	reused                       bool
	in, out                      []byte
	dialedAt, idleFrom           int64
}

// clientReady moves a client connection on after an event (or its accept).
func (l *httpLoop) clientReady(h *hconn) {
	if h.state == responding && len(h.out) > 0 && h.writable {
		l.pumpBody(h)
		if l.clients[int32(h.fd)] != h {
			return
		}
	}
	if h.readable && !h.eof && !l.readClient(h) {
		return
	}
	switch h.state {
	case waitRequest:
		l.process(h)
	case responding:
		l.pumpBody(h)
	}
}

// readClient reads what the client sent while there is room for it. It
// reports false when the connection failed and is gone.
func (l *httpLoop) readClient(h *hconn) bool {
	if h.in == nil {
		h.in = l.getBuf()
	}
	for h.readable && !h.eof && len(h.in) < cap(h.in) {
		more, eof, err := readInto(h.fd, &h.in, h.hup)
		if err != nil {
			l.fail(h, 'C', 'D')
			return false
		}
		h.readable, h.eof = more, eof
	}
	return true
}

// process takes the next request when its head (and body) has arrived.
func (l *httpLoop) process(h *hconn) {
	for h.state == waitRequest {
		if h.readable && !h.eof && !l.readClient(h) {
			return
		}
		if len(h.in) == 0 {
			if h.eof || l.closing {
				l.closeClient(h)
				return
			}
			l.putBuf(h.in)
			h.in = nil
			l.await(h)
			return
		}
		if h.headStart == 0 {
			h.headStart = l.now
			h.deadline = l.now + int64(l.lb.settings.Load().headerTimeout)
		}
		start, end := headEnd(h.in)
		if start > 0 {
			// Empty lines before a request are skipped, as readHead does:
			// a client's CRLF after a body is not a request begun.
			h.in = h.in[:copy(h.in, h.in[start:])]
			end, start = max(end-start, -1), 0
			if len(h.in) == 0 {
				h.headStart = 0
				continue
			}
		}
		if end < 0 {
			if len(h.in) == cap(h.in) || h.eof {
				l.handOff(h, handoffHead, false) // too large for the loop, or cut short: the goroutine path answers
				return
			}
			l.awaitRest(h)
			return
		}
		if !l.startRequest(h, start, end) {
			return
		}
	}
}

// ackNow has the kernel acknowledge at once what the client sent of a
// request that is not whole, as HAProxy does: the listener's sockets
// delay their acknowledgements (TCP_QUICKACK off, newHTTPLoop) until the
// response carries them, and a client that holds the rest of its request
// until its first bytes are acknowledged (Nagle's algorithm: a head and a
// body in two small writes) would wait out the delayed-ACK timer, 40 ms.
func ackNow(fd int) { _ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1) }

// awaitRest waits for the rest of a request that has come in part,
// acknowledging the part at once.
func (l *httpLoop) awaitRest(h *hconn) {
	ackNow(h.fd)
	l.await(h)
}

// await makes sure the client's next bytes raise an event.
func (l *httpLoop) await(h *hconn) bool {
	if h.registered {
		return true
	}
	if err := l.register(h.fd); err != nil {
		l.lb.log.Warn("http loop: epoll_ctl", "err", err)
		l.fail(h, 'K', 'R')
		return false
	}
	h.registered = true
	return true
}

// startRequest parses the request in h.in[start:end] and sends it on, or
// hands the connection to the goroutine path when it is not one the loop
// serves. It reports whether the loop may look at h.in again now.
func (l *httpLoop) startRequest(h *hconn, start, end int) bool {
	s := l.lb.settings.Load()
	sc := scratchPool.Get().(*scratch)
	sc.head = append(sc.head[:0], h.in[start:end]...)
	req := &sc.req
	err := parseRequest(sc.head, req)
	cl := max(req.contentLength, 0)
	if err != nil || end-start > s.maxHeader || len(req.headers) > s.maxHeaders || (s.maxBody > 0 && cl > s.maxBody) ||
		req.upgrade != nil || req.expectCont || req.chunked || cl > maxReplayBody || s.acceptProxy != nil {
		scratchPool.Put(sc)
		l.handOff(h, handoffRequest, false)
		return false
	}
	n := end + int(cl)
	if n > len(h.in) {
		scratchPool.Put(sc)
		if n > cap(h.in) || h.eof {
			l.handOff(h, handoffBody, false)
			return false
		}
		l.awaitRest(h) // the body is on its way
		return false
	}
	sc.body = append(sc.body[:0], h.in[end:n]...)
	h.in = h.in[:copy(h.in, h.in[n:])]
	e := &sc.log
	e.reset(l.nowT)
	e.parsed, e.tr = true, time.Duration(l.now-h.headStart)
	h.headStart = 0
	h.state = atBackend
	h.sc, h.s = sc, s
	h.tries, h.freshOnly = 0, false
	h.headLen, h.bodyBytes, h.out = 0, 0, nil
	h.replayable = s.retriable(req.method)
	h.failStatus, h.failMsg = 503, "no backend available"
	h.sticky = ""
	if s.stickyCookie != "" {
		h.sticky = findCookie(req.cookie, s.stickyCookie)
	}
	pk := &h.cc.pk
	pk.p = l.lb.pool.Load()
	pk.tried = pk.tried[:0]
	l.pick(h)
	return false
}

// pick chooses a backend for the request and connects to it.
func (l *httpLoop) pick(h *hconn) {
	pk := &h.cc.pk
	b := l.lb.pickOnce(pk, h.cc.hash, h.sticky)
	if b != nil && !b.ap.IsValid() {
		l.lb.release(b) // a backend named by host: the goroutine path resolves it
		b = nil
	}
	if b == nil {
		if h.tries == 0 && !h.freshOnly {
			// Nothing was tried: the goroutine path serves the request
			// afresh (it waits in the queue, dials a host name, or answers
			// that no backend is available).
			l.handOff(h, handoffBackend, false)
			return
		}
		l.handOffRetry(h)
		return
	}
	h.b = b
	h.sc.log.queued(0) // the loop never queues: a request that must wait goes to the goroutine path
	h.sc.log.backend, h.sc.log.retries = b.name, h.tries
	b.m.requests.Add(1)
	h.lastTry = h.tries >= h.s.retries || len(pk.tried)+1 >= len(pk.p.backends)
	l.connect(h)
}

// connect gives the request a pooled connection to its backend, or dials.
func (l *httpLoop) connect(h *hconn) {
	b, sc := h.b, h.sc
	sc.log.ts = -1
	if bc := l.takePooled(b, !h.replayable || h.freshOnly); bc != nil {
		sc.log.tc = 0
		bc.h, h.bc = h, bc
		l.send(h)
		return
	}
	family, sa := sockaddr(b.ap)
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.connectFailed(h, os.NewSyscallError("socket", err))
		return
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	bc := &bconn{fd: fd, b: b, h: h, state: connecting, dialedAt: l.now}
	l.backends[int32(fd)] = bc
	h.bc = bc
	err = unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS {
		l.connectFailed(h, dialError(b, err))
		return
	}
	if rerr := l.register(fd); rerr != nil {
		l.connectFailed(h, os.NewSyscallError("epoll_ctl", rerr))
		return
	}
	h.deadline = l.now + int64(h.s.connectTimeout)
	// The registration reports the connect's outcome as an edge.
}

// backendReady moves a backend connection on after an event.
func (l *httpLoop) backendReady(bc *bconn) {
	h := bc.h
	if h == nil {
		if bc.readable || bc.hup {
			// Pooled: the backend closed it, or sent what nobody asked.
			l.unpool(bc)
			l.closeBackend(bc)
		}
		return
	}
	switch bc.state {
	case connecting:
		if !bc.writable && !bc.hup {
			return
		}
		if err := nbio.SocketError(bc.fd); err != nil {
			l.connectFailed(h, dialError(bc.b, err))
			return
		}
		h.sc.log.tc = time.Duration(l.now - bc.dialedAt)
		bc.b.m.connectTime.observe(h.sc.log.tc)
		l.send(h)
	case sending:
		if bc.writable {
			l.sendMore(h)
		}
	case awaiting:
		if bc.readable {
			l.readResponse(h)
		}
	case streaming:
		l.pumpBody(h)
	}
}

// send writes the request to the backend.
func (l *httpLoop) send(h *hconn) {
	sc, bc := h.sc, h.bc
	sc.out = l.lb.appendRequestHead(sc.out[:0], h.cc, &sc.req, h.b.addr)
	sc.out = append(sc.out, sc.body...)
	bc.out = sc.out
	bc.state = sending
	h.deadline = l.now + int64(h.s.serverTimeout)
	l.sendMore(h)
}

func (l *httpLoop) sendMore(h *hconn) {
	bc := h.bc
	n, err := nbio.WriteSome(bc.fd, bc.out)
	h.b.m.bytesOut.Add(uint64(n))
	if err != nil {
		l.sendFailed(h, err)
		return
	}
	bc.out = bc.out[n:]
	if n > 0 {
		h.deadline = l.now + int64(h.s.serverTimeout) // a silence of the backend, not of the whole send
	}
	if len(bc.out) > 0 {
		bc.writable = false
		return
	}
	bc.state = awaiting
	h.sentAt = l.now
	if bc.readable {
		l.readResponse(h)
	}
}

// stale says a failure may be a pooled connection the backend had closed:
// not the backend's failure; the request goes again on a fresh connection.
func (h *hconn) stale() bool { return h.bc.reused && h.replayable && !h.freshOnly }

func (l *httpLoop) sendFailed(h *hconn, err error) {
	stale := h.stale()
	l.dropBackend(h)
	if stale {
		l.retry(h, true)
		return
	}
	l.backendFailed(h, "reset", "send request: "+err.Error())
}

func (l *httpLoop) connectFailed(h *hconn, err error) {
	l.dropBackend(h)
	h.b.m.connectFailures.Add(1)
	observeFailure(h.b, "connect: "+err.Error())
	h.failStatus, h.failMsg = 503, "no backend could be reached"
	l.retry(h, false)
}

// awaitFailed: the backend closed, failed, timed out or was marked down
// before its response head was complete.
func (l *httpLoop) awaitFailed(h *hconn, err error) {
	stale := h.stale() && len(h.bc.in) == 0
	l.dropBackend(h)
	if stale && !isTimeout(err) && !errors.Is(err, errMarkedDown) {
		l.retry(h, true)
		return
	}
	kind := "reset"
	if isTimeout(err) {
		kind = "timeout"
	}
	l.backendFailed(h, kind, "waiting for response: "+err.Error())
}

// backendFailed records a failure of the request's backend, as the
// goroutine path's, and retries or answers.
func (l *httpLoop) backendFailed(h *hconn, kind, reason string) {
	h.failStatus, h.failMsg = l.lb.noteFailure(h.b, kind, reason, h.replayable)
	if h.replayable {
		l.retry(h, false)
		return
	}
	l.answer(h, h.failStatus, h.failMsg)
}

// retry sends the request again, to another backend (same: the failure
// was a stale pooled connection, and any backend will do, on a fresh
// connection), or answers once the retries are spent.
func (l *httpLoop) retry(h *hconn, same bool) {
	b := h.b
	l.lb.release(b)
	h.b = nil
	if same && !h.freshOnly {
		h.freshOnly = true
		l.pick(h)
		return
	}
	pk := &h.cc.pk
	pk.tried = append(pk.tried, b)
	b.m.retries.Add(1)
	h.tries++
	if h.tries > h.s.retries {
		l.answer(h, h.failStatus, h.failMsg)
		return
	}
	h.sticky = "" // the sticky backend failed this request
	l.pick(h)
}

// readResponse reads the response head.
func (l *httpLoop) readResponse(h *hconn) {
	bc := h.bc
	if bc.in == nil {
		bc.in = l.getBuf()
	}
	for {
		start, end := headEnd(bc.in)
		if end >= 0 {
			if !l.gotHead(h, start, end) {
				return
			}
			continue // an interim response: the next head
		}
		if bc.eof {
			err := error(io.EOF)
			if len(bc.in) > 0 {
				err = errTruncated
			}
			l.awaitFailed(h, err)
			return
		}
		if len(bc.in) > h.s.maxHeader {
			l.dropBackend(h)
			l.backendFailed(h, "reset", "bad response: "+errHeadTooLarge.Error())
			return
		}
		if len(bc.in) == cap(bc.in) {
			// A head larger than the loop's buffers, within max_header_bytes.
			bc.in = append(make([]byte, 0, h.s.maxHeader+loopBufSize), bc.in...)
		}
		if !bc.readable {
			return
		}
		more, eof, err := readInto(bc.fd, &bc.in, bc.hup)
		if err != nil {
			l.awaitFailed(h, err)
			return
		}
		bc.readable, bc.eof = more, eof
	}
}

// gotHead takes the response head in bc.in[start:end]. It reports true
// for an interim response, after which another head follows.
func (l *httpLoop) gotHead(h *hconn, start, end int) bool {
	sc, bc, b := h.sc, h.bc, h.b
	if end-start > h.s.maxHeader {
		l.dropBackend(h)
		l.backendFailed(h, "reset", "bad response: "+errHeadTooLarge.Error())
		return false
	}
	sc.rhead = append(sc.rhead[:0], bc.in[start:end]...)
	bc.in = bc.in[:copy(bc.in, bc.in[end:])]
	if err := parseResponse(sc.rhead, &sc.resp); err != nil {
		l.dropBackend(h)
		l.backendFailed(h, "reset", "bad response: "+err.Error())
		return false
	}
	b.m.bytesIn.Add(uint64(len(sc.rhead)))
	if sc.log.ts < 0 {
		sc.log.ts = time.Duration(l.now - h.sentAt)
		b.m.responseTime.observe(sc.log.ts)
	}
	if st := sc.resp.status; st >= 100 && st < 200 && st != 101 {
		// Interim responses (103 Early Hints) go to the client as they are.
		// In a buffer of their own: sc.out carries the request again if
		// the final response is retried elsewhere.
		h.out = append(append([]byte(nil), h.out...), sc.rhead...)
		return l.flushInterim(h)
	}
	l.respond(h)
	return false
}

// flushInterim writes what it can of an interim response; the rest goes
// with the final one.
func (l *httpLoop) flushInterim(h *hconn) bool {
	if !h.writable {
		return true
	}
	n, err := nbio.WriteSome(h.fd, h.out)
	if err != nil {
		l.fail(h, 'C', 'D')
		return false
	}
	h.out = h.out[n:]
	if len(h.out) > 0 {
		h.writable = false
		return l.await(h)
	}
	return true
}

// respond sends the response head and a body of known length; other
// bodies go to the goroutine path (handOffExchange).
func (l *httpLoop) respond(h *hconn) {
	sc, bc, b, s := h.sc, h.bc, h.b, h.s
	req, resp := &sc.req, &sc.resp
	bodyless := resp.bodyless(req.method)
	retrying := resp.status >= 500 && h.replayable && !h.lastTry && retryStatus(resp.status)
	if !retrying && !bodyless && resp.contentLength < 0 {
		// A chunked or close-delimited body: relayResponse relays it (and
		// counts the response, and observes its status for passive health).
		l.handOffExchange(h)
		return
	}
	b.m.responses[statusClass(resp.status)].Add(1)
	sc.log.status = resp.status
	if resp.status >= 500 {
		observeFailure(b, "status "+strconv.Itoa(resp.status))
		if retrying {
			l.discardResponse(h)
			h.failStatus, h.failMsg = 502, "backends answered "+strconv.Itoa(resp.status)
			l.retry(h, false)
			return
		}
	} else if b.mon != nil {
		b.mon.ObserveSuccess()
	}
	if resp.status == 101 {
		l.dropBackend(h)
		l.answer(h, 502, "backend switched protocols unasked")
		return
	}
	h.keepClient = req.persistent() && !l.lb.closing.Load()
	h.keepBackend = !resp.closeConn && (resp.minor == 1 || resp.keepAlive)
	setCookie := ""
	if s.stickyCookie != "" && h.sticky != b.cookie {
		setCookie = b.cookie
	}
	pending := len(h.out) // of an interim response
	sc.out = append(sc.out[:0], h.out...)
	sc.out = appendResponseHead(sc.out, resp, req, h.keepClient, false, s.stickyCookie, setCookie, false)
	h.headLen = int64(len(sc.out) - pending)
	h.acked = ackProgress{}
	h.clientMoved, h.backendMoved = l.now, l.now
	h.remaining = 0
	if !bodyless {
		h.remaining = resp.contentLength
	}
	k := min(int64(len(bc.in)), h.remaining)
	sc.out = append(sc.out, bc.in[:k]...)
	bc.in = bc.in[:copy(bc.in, bc.in[k:])]
	h.remaining -= k
	h.bodyBytes = k
	if len(bc.in) > 0 {
		h.keepBackend = false // bytes beyond the response: out of step
	}
	h.out = sc.out
	h.state, bc.state = responding, streaming
	l.ls.served.Add(1) // before the client can see the response (the tests read it then)
	l.pumpBody(h)
}

// discardResponse reads away a small error response already buffered so
// that the backend connection can be reused, or closes it.
func (l *httpLoop) discardResponse(h *hconn) {
	bc, resp := h.bc, &h.sc.resp
	if resp.contentLength >= 0 && !resp.closeConn && !resp.bodyless(h.sc.req.method) && int64(len(bc.in)) == resp.contentLength {
		bc.in = bc.in[:0]
		h.bc = nil
		l.pool(bc)
		return
	}
	l.dropBackend(h)
}

// pumpBody writes what the client can take and reads the rest of the body
// from the backend, until the response is complete.
func (l *httpLoop) pumpBody(h *hconn) {
	bc := h.bc
	for {
		if len(h.out) > 0 {
			if !h.writable {
				h.deadline = h.clientMoved + int64(h.s.clientTimeout)
				l.await(h)
				return
			}
			n, err := nbio.WriteSome(h.fd, h.out)
			if err != nil {
				l.fail(h, 'C', 'D')
				return
			}
			if n > 0 {
				h.clientMoved = l.now
			}
			h.out = h.out[n:]
			if len(h.out) > 0 {
				h.writable = false
				continue
			}
		}
		if h.remaining == 0 {
			l.finish(h)
			return
		}
		if !bc.readable {
			h.deadline = h.backendMoved + int64(h.s.serverTimeout)
			return
		}
		n, err := nbio.Read(bc.fd, l.buf[:min(int64(len(l.buf)), h.remaining)])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			bc.readable = false
			continue
		case err != nil || n == 0:
			l.fail(h, 'S', 'D') // the backend failed or closed in the middle of the body
			return
		}
		h.backendMoved = l.now
		if n < len(l.buf) && int64(n) < h.remaining && !bc.hup {
			bc.readable = false
		}
		h.remaining -= int64(n)
		h.bodyBytes += int64(n)
		w, err := nbio.WriteSome(h.fd, l.buf[:n])
		if err != nil {
			l.fail(h, 'C', 'D')
			return
		}
		if w > 0 {
			h.clientMoved = l.now
		}
		if w < n {
			// The client is full: keep the rest, in the request's own
			// buffer (the loop's is for the next read).
			h.sc.out = append(h.sc.out[:0], l.buf[w:n]...)
			h.out = h.sc.out
			h.writable = false
		}
	}
}

// finish ends a request answered in full.
func (l *httpLoop) finish(h *hconn) {
	sc, b, bc := h.sc, h.b, h.bc
	b.m.bytesIn.Add(uint64(h.bodyBytes))
	sc.log.bytes = h.headLen + h.bodyBytes
	l.lb.release(b)
	h.b, h.bc = nil, nil
	l.lb.duration.Observe(float64(l.now-sc.log.start.UnixNano()) / 1e9)
	if h.keepBackend && !bc.eof {
		bc.in = bc.in[:0]
		l.pool(bc)
	} else {
		l.closeBackend(bc)
	}
	l.endRequest(h)
	if !h.keepClient || l.lb.closing.Load() {
		l.closeClient(h)
		return
	}
	s := l.lb.settings.Load()
	h.state = waitRequest
	h.deadline = l.now + int64(s.clientTimeout)
	l.process(h)
}

// endRequest writes the request's log line and frees its buffers.
func (l *httpLoop) endRequest(h *hconn) {
	if h.sc == nil {
		return
	}
	if l.lb.alog.Load() != nil {
		l.lb.logRequest(h.cc, h.sc)
	}
	scratchPool.Put(h.sc)
	h.sc, h.out = nil, nil
	h.cc.pk.p = nil // the pool snapshot: a reload's old backends are not held
}

// fail ends a connection whose exchange broke (who: 'C' client, 'S'
// server, 'K' haven stopping), closing both sockets.
func (l *httpLoop) fail(h *hconn, who, when byte) {
	if h.sc != nil {
		h.sc.log.ended(who, when)
		h.sc.log.bytes = h.headLen + h.bodyBytes
	}
	l.dropBackend(h)
	if h.b != nil {
		l.lb.release(h.b)
		h.b = nil
	}
	l.endRequest(h)
	l.closeClient(h)
}

// dropBackend closes the request's backend connection, if any.
func (l *httpLoop) dropBackend(h *hconn) {
	if h.bc != nil {
		l.closeBackend(h.bc)
		h.bc = nil
	}
}

func (l *httpLoop) closeClient(h *hconn) {
	if l.clients[int32(h.fd)] != h {
		return
	}
	delete(l.clients, int32(h.fd))
	l.closeLater(h.fd)
	l.putBuf(h.in)
	h.in = nil
	l.lb.clients.Add(-1)
}

func (l *httpLoop) closeBackend(bc *bconn) {
	if l.backends[int32(bc.fd)] != bc {
		return
	}
	delete(l.backends, int32(bc.fd))
	l.closeLater(bc.fd)
	l.putBuf(bc.in)
	bc.in = nil
}

// pool keeps bc for the next request to its backend.
func (l *httpLoop) pool(bc *bconn) {
	b := bc.b
	// A read that took exactly what the response had left may have left
	// more behind it: a backend out of step, not to be reused.
	if b.removed.Load() || AdminState(b.admin.Load()) == Maint || bc.hup || len(l.idle[b]) >= maxIdlePerBackend ||
		(bc.readable && nbio.Peek(bc.fd)) {
		l.closeBackend(bc)
		return
	}
	l.putBuf(bc.in)
	bc.in, bc.out, bc.h = nil, nil, nil
	bc.state, bc.idleFrom, bc.readable = pooled, l.now, false
	l.idle[b] = append(l.idle[b], bc)
}

// takePooled returns a pooled connection to b, newest first. checkAlive:
// first make sure the backend has not closed it (a request that could not
// be retried must not meet a stale connection).
func (l *httpLoop) takePooled(b *backend, checkAlive bool) *bconn {
	list := l.idle[b]
	defer func() { l.idle[b] = list }()
	for len(list) > 0 {
		bc := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if bc.hup || bc.readable || l.now-bc.idleFrom >= int64(idleConnTimeout) || (checkAlive && nbio.Peek(bc.fd)) {
			l.closeBackend(bc)
			continue
		}
		bc.reused, bc.eof = true, false
		return bc
	}
	return nil
}

func (l *httpLoop) unpool(bc *bconn) {
	list := l.idle[bc.b]
	for i, x := range list {
		if x == bc {
			l.idle[bc.b] = append(list[:i], list[i+1:]...)
			return
		}
	}
}

// checkTimeout ends what waited too long, and a wait for a response from a
// backend marked down meanwhile.
func (l *httpLoop) checkTimeout(h *hconn) {
	if h.state == atBackend && h.bc != nil && h.bc.state == awaiting && h.b.state() == health.Down {
		l.awaitFailed(h, errMarkedDown)
		return
	}
	if l.now < h.deadline {
		return
	}
	switch h.state {
	case waitRequest:
		switch {
		case len(h.in) == 0:
			l.closeClient(h) // idle, or no request came
		case headEndOK(h.in):
			l.handOff(h, handoffBody, false) // its body is slow: the goroutine path waits on
		default:
			l.answer(h, 408, "request header not received in time")
		}
	case atBackend:
		switch h.bc.state {
		case connecting:
			l.connectFailed(h, errConnectTimeout)
		case sending:
			l.sendFailed(h, os.ErrDeadlineExceeded)
		default:
			l.awaitFailed(h, os.ErrDeadlineExceeded)
		}
	case responding:
		if len(h.out) > 0 {
			if l.clientReads(h) {
				h.deadline = l.now + int64(h.s.clientTimeout)
				return
			}
			l.fail(h, 'C', 'D')
		} else {
			l.fail(h, 'S', 'D')
		}
	}
}

// dialError words a failed connect as the goroutine path's dialer does.
func dialError(b *backend, err error) error {
	addr, _ := net.ResolveTCPAddr("tcp", b.addr)
	return &net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: os.NewSyscallError("connect", err)}
}

// clientReads reports whether a client that has not taken a write for a
// timeout acknowledged more data since the last one did: it reads slowly
// (the kernel wakes a writer only once a third of the send buffer is free,
// see continueWrite), it has not stopped.
func (l *httpLoop) clientReads(h *hconn) bool {
	info, err := unix.GetsockoptTCPInfo(h.fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil || (h.acked.seen && info.Bytes_acked <= h.acked.acked) {
		return false
	}
	h.acked.seen, h.acked.acked = true, info.Bytes_acked
	return true
}

var errConnectTimeout = &timeoutError{"i/o timeout"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Timeout() bool { return true }

// headEnd finds a message head in b, as readHead reads it: leading empty
// lines are skipped (start), and the head ends after the first empty line
// (end; -1: not complete yet).
func headEnd(b []byte) (start, end int) {
	i := 0
	for i < len(b) {
		if b[i] == '\n' {
			i++
		} else if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i += 2
		} else {
			break
		}
	}
	start = i
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return start, -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return start, i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return start, i + 2
		}
	}
}

func headEndOK(b []byte) bool {
	_, end := headEnd(b)
	return end >= 0
}
