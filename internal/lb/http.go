package lb

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/health"
)

// scratch holds a request's buffers. It is taken from a pool when a request
// arrives and returned when the connection goes idle, so that ten thousand
// idle keep-alive connections cost little more than their goroutines.
type scratch struct {
	head, rhead, out, body []byte
	req                    request
	resp                   response
	// in and to are the body reader and writer of the current copy; they
	// live here so that handing them to the copy functions allocates nothing.
	in idleReader
	to idleWriter
	// log is the request's access log entry, line its formatted line.
	log  logEntry
	line []byte
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{head: make([]byte, 0, 1024), rhead: make([]byte, 0, 1024), out: make([]byte, 0, 4096)}
}}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// maxReplayBody is the largest request body buffered so that the request
// can be retried on another backend.
const maxReplayBody = 64 * 1024

func (lb *Balancer) serveHTTP(cc *clientConn) {
	rw := cc.c
	if lb.tls != nil {
		raw := cc.c
		if tcp, ok := raw.(*net.TCPConn); ok {
			raw = &ackConn{TCPConn: tcp}
		}
		if cc.client != nil {
			raw = &addrConn{Conn: raw, remote: cc.client, local: cc.server}
		}
		tc := tls.Server(raw, lb.tls.config())
		s := lb.settings.Load()
		ctx, cancel := context.WithTimeout(context.Background(), s.headerTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			lb.log.Debug("tls handshake failed", "client", cc.remote().String(), "err", err)
			return
		}
		cc.tls = true
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			lb.serveH2(tc)
			return
		}
		rw = tc
	}
	lb.serveRequests(cc, rw, true)
}

// serveRequests serves a connection's requests until it closes; first: no
// request has been read from it yet.
func (lb *Balancer) serveRequests(cc *clientConn, rw net.Conn, first bool) {
	var sc *scratch
	defer func() {
		if sc != nil {
			scratchPool.Put(sc)
		}
	}()
	for ; ; first = false {
		s := lb.settings.Load()
		wait := s.clientTimeout
		if first {
			wait = s.headerTimeout
		}
		switch {
		case first:
			// A new client sends its request at once: read it straight into
			// a buffer rather than waiting for a first byte.
			cc.first.conn = rw
			cc.attachReader()
		case cc.br != nil && cc.br.Buffered() > 0:
			// A pipelined request is already buffered.
		default:
			if sc != nil {
				scratchPool.Put(sc) // only the read buffer is kept while hot
				sc = nil
			}
			if cc.br != nil {
				arrived, open := cc.waitHot(rw, wait)
				if !open {
					return
				}
				if arrived {
					break
				}
				wait -= hotWait
			}
			// Idle: hold no buffers while waiting for the next request.
			cc.releaseReader()
			if !cc.waitRequest(rw, wait) {
				return
			}
			cc.attachReader()
		}
		if sc == nil {
			sc = scratchPool.Get().(*scratch)
		}
		if !lb.serveRequest(cc, rw, sc, s) {
			return
		}
	}
}

// hotWait is how long a keep-alive connection waits for its next request
// with its read buffer attached. A busy client's next request is read in one
// system call; a connection idle for longer gives its buffer back and waits
// with a one-byte read, so that idle connections cost almost nothing (a few
// KiB, mostly the goroutine's stack).
const hotWait = 200 * time.Millisecond

// waitHot waits up to hotWait for the next request with the buffer kept. It
// reports whether a request has begun, and whether the connection is still
// usable when none did.
func (cc *clientConn) waitHot(rw net.Conn, idle time.Duration) (arrived, open bool) {
	cc.idle.Store(true)
	defer cc.idle.Store(false)
	rw.SetReadDeadline(time.Now().Add(min(hotWait, idle)))
	_, err := cc.br.Peek(1)
	if err == nil {
		return true, true
	}
	return false, isTimeout(err) && idle > hotWait && !cc.lb.closing.Load()
}

// waitRequest waits for the first byte of the next request holding no
// buffer.
func (cc *clientConn) waitRequest(rw net.Conn, wait time.Duration) bool {
	if cc.lb.closing.Load() {
		return false
	}
	cc.idle.Store(true)
	rw.SetReadDeadline(time.Now().Add(wait))
	cc.first.conn = rw
	n, _ := rw.Read(cc.first.b[:])
	cc.idle.Store(false)
	if n == 0 {
		return false
	}
	cc.first.has = true
	return true
}

// outcome is the result of one attempt to forward a request to a backend.
type outcome int

const (
	done      outcome = iota // the response was sent; the client connection may go on
	doneClose                // the response was sent; close the client connection
	retry                    // nothing was sent to the client: try another backend
	retrySame                // a pooled connection was stale: try the same backend afresh
	failed                   // the exchange broke; the client connection must close
)

// attempt carries one request's state across retries.
type attempt struct {
	s          *settings
	sc         *scratch
	rw         net.Conn
	replayable bool
	bodySent   bool // a streamed body has been consumed from the client
	// bodyBuffered: the body is in sc.body whatever replayable says (an
	// event loop read it with the head), not to be streamed from the client.
	bodyBuffered bool
	sticky       string
	failStatus   int // what to answer if no retry is left
	failMsg      string
	bodyLimit    time.Time // the end of timeouts.request_body; zero: none
	freshOnly    bool      // the last try found a stale pooled connection
	lastTry      bool      // no retry is left: relay whatever the backend answers
}

func (lb *Balancer) serveRequest(cc *clientConn, rw net.Conn, sc *scratch, s *settings) bool {
	start := time.Now()
	e := &sc.log
	e.reset(start)
	if lb.alog.Load() != nil {
		defer lb.logRequest(cc, sc)
	}
	headDeadline := start.Add(s.headerTimeout)
	if !cc.headDeadline.IsZero() {
		headDeadline, cc.headDeadline = cc.headDeadline, time.Time{}
	}
	rw.SetReadDeadline(headDeadline)
	var err error
	sc.head, err = readHead(cc.br, sc.head[:0], s.maxHeader)
	if err != nil {
		switch {
		case errors.Is(err, errHeadTooLarge) && bytes.IndexByte(sc.head, '\n') < 0:
			lb.refuse(sc, rw, 414, "request line too long")
		case errors.Is(err, errHeadTooLarge):
			lb.refuse(sc, rw, 431, "request header too large")
		case errors.Is(err, errHeadTimeout):
			lb.refuse(sc, rw, 408, "request header not received in time")
		case errors.Is(err, errTruncated):
			lb.refuse(sc, rw, 400, "incomplete request")
		}
		return false
	}
	req := &sc.req
	err = parseRequest(sc.head, req)
	e.parsed, e.tr = err == nil, time.Since(start)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			lb.refuse(sc, rw, he.status, he.msg)
		} else {
			lb.refuse(sc, rw, 400, err.Error())
		}
		return false
	}
	if len(req.headers) > s.maxHeaders {
		lb.refuse(sc, rw, 431, "more than "+strconv.Itoa(s.maxHeaders)+" header fields")
		return false
	}
	if s.maxBody > 0 && req.contentLength > s.maxBody {
		lb.refuse(sc, rw, 413, "request body too large")
		return false
	}
	a := attempt{s: s, sc: sc, rw: rw, failStatus: 503, failMsg: "no backend available"}
	if s.requestBody > 0 && req.hasBody() {
		a.bodyLimit = time.Now().Add(s.requestBody)
	}
	a.replayable = s.retriable(req.method) && !req.chunked && req.contentLength <= maxReplayBody && req.upgrade == nil
	if req.expectCont && req.hasBody() {
		// haven answers 100-continue itself and buffers or streams the body;
		// the Expect header is not forwarded.
		rw.SetWriteDeadline(time.Now().Add(s.clientTimeout))
		if _, err := rw.Write(continue100); err != nil {
			return false
		}
	}
	if a.replayable && req.contentLength > 0 {
		sc.in = idleReader{Reader: cc.br, c: rw, idle: s.clientTimeout, limit: a.bodyLimit}
		sc.body = grow(sc.body[:0], int(req.contentLength))
		if _, err := io.ReadFull(&sc.in, sc.body); err != nil {
			lb.bodyFailed(sc, rw, err)
			return false
		}
	} else {
		sc.body = sc.body[:0]
	}
	if req.chunked {
		// Nothing of a request goes to a backend before its first chunk
		// header has arrived, and none of it if the framing that has
		// arrived is malformed.
		sc.in = idleReader{Reader: cc.br, c: rw, idle: s.clientTimeout, limit: a.bodyLimit}
		if err := firstChunks(&sc.in, s.maxBody); err != nil {
			lb.bodyFailed(sc, rw, err)
			return false
		}
	}
	if s.stickyCookie != "" {
		a.sticky = findCookie(req.cookie, s.stickyCookie)
	}
	pk := &cc.pk
	pk.p = lb.pool.Load()
	pk.tried = pk.tried[:0]
	return lb.forward(cc, &a, 0, start)
}

// forward sends the request to backends, retrying as the settings allow,
// until one answers or none is left (pk.tried: those that failed it,
// tries: how many did). It reports whether the connection may go on.
func (lb *Balancer) forward(cc *clientConn, a *attempt, tries int, start time.Time) bool {
	s, sc, rw, e, pk := a.s, a.sc, a.rw, &a.sc.log, &cc.pk
	defer func() { pk.p = nil }()
	for {
		b, waited, err := lb.acquire(context.Background(), pk, cc.hash, a.sticky)
		e.queued(waited)
		if err != nil {
			status, msg := a.failStatus, a.failMsg
			if tries == 0 {
				status, msg = 503, err.Error()
			}
			switch {
			case errors.Is(err, errQueueFull):
				e.ended('P', 'Q')
			case errors.Is(err, errQueueWait):
				e.ended('s', 'Q')
			}
			lb.refuse(sc, rw, status, msg)
			return false
		}
		e.backend, e.retries = b.name, tries
		b.m.requests.Add(1)
		a.lastTry = tries >= s.retries || len(pk.tried)+1 >= len(pk.p.backends)
		out := lb.exchange(cc, b, a)
		lb.release(b)
		switch out {
		case done, doneClose:
			lb.duration.Observe(time.Since(start).Seconds())
			return out == done && !lb.closing.Load()
		case failed:
			if e.status == 0 {
				e.ended('S', 'H')
			} else {
				e.ended('C', 'D')
			}
			return false
		case retrySame:
			if !a.freshOnly {
				// A pooled connection the backend had closed: not the
				// backend's failure. Try again on a fresh connection.
				a.freshOnly = true
				continue
			}
			pk.tried = append(pk.tried, b)
			b.m.retries.Add(1)
		case retry:
			pk.tried = append(pk.tried, b)
			b.m.retries.Add(1)
		}
		tries++
		if tries > s.retries || a.bodySent {
			lb.refuse(sc, rw, a.failStatus, a.failMsg)
			return false
		}
		a.sticky = "" // the sticky backend failed this request
	}
}

// exchange forwards the request to b and the response back.
func (lb *Balancer) exchange(cc *clientConn, b *backend, a *attempt) outcome {
	s, sc, req := a.s, a.sc, &a.sc.req
	sc.log.ts = -1 // this attempt's, not a retried one's
	t0 := time.Now()
	bc, err := lb.backendConn(b, s, a.replayable && !a.freshOnly, !a.replayable || a.freshOnly)
	if err == nil {
		sc.log.tc = 0
		if !bc.reused {
			sc.log.tc = time.Since(t0)
			b.m.connectTime.observe(sc.log.tc)
		}
	}
	if err != nil {
		b.m.connectFailures.Add(1)
		observeFailure(b, "connect: "+err.Error())
		a.failStatus, a.failMsg = 503, "no backend could be reached"
		return retry
	}
	stale := func() bool { return bc.reused && a.replayable && !a.freshOnly }
	sc.out = lb.appendRequestHead(sc.out[:0], cc, req, b.addr)
	sc.out = append(sc.out, sc.body...)
	sc.to = idleWriter{c: bc.c, idle: s.serverTimeout}
	n, err := sc.to.Write(sc.out)
	b.m.bytesOut.Add(uint64(n))
	if err != nil {
		bc.close()
		if stale() {
			return retrySame
		}
		return lb.backendFailed(b, a, "reset", "send request: "+err.Error())
	}
	if !a.replayable && req.hasBody() && !a.bodyBuffered {
		a.bodySent = true
		if out, ok := lb.streamRequestBody(cc, bc, a); !ok {
			return out
		}
	}
	// Wait for the response head, giving up early if the backend is marked
	// down meanwhile, so that a hung backend holds requests only until its
	// health check notices.
	sent := time.Now()
	for {
		if err := lb.waitResponse(bc, b, s); err != nil {
			bc.close()
			if stale() && !isTimeout(err) && !errors.Is(err, errMarkedDown) {
				return retrySame
			}
			kind := "reset"
			if isTimeout(err) {
				kind = "timeout"
			}
			return lb.backendFailed(b, a, kind, "waiting for response: "+err.Error())
		}
		bc.c.SetReadDeadline(time.Now().Add(s.serverTimeout))
		sc.rhead, err = readHead(bc.br, sc.rhead[:0], s.maxHeader)
		if err == nil {
			err = parseResponse(sc.rhead, &sc.resp)
		}
		if err != nil {
			bc.close()
			return lb.backendFailed(b, a, "reset", "bad response: "+err.Error())
		}
		b.m.bytesIn.Add(uint64(len(sc.rhead)))
		if sc.log.ts < 0 {
			sc.log.ts = time.Since(sent)
			b.m.responseTime.observe(sc.log.ts)
		}
		if st := sc.resp.status; st >= 100 && st < 200 && st != 101 {
			// Interim responses go to the client as they are.
			a.rw.SetWriteDeadline(time.Now().Add(s.clientTimeout))
			if _, err := a.rw.Write(sc.rhead); err != nil {
				bc.close()
				return failed
			}
			continue
		}
		break
	}
	return lb.relayResponse(cc, b, bc, a)
}

var errMarkedDown = errors.New("backend marked down while the request was waiting")

// waitResponse waits for the first byte of a response.
func (lb *Balancer) waitResponse(bc *backendConn, b *backend, s *settings) error {
	deadline := time.Now().Add(s.serverTimeout)
	const slice = 250 * time.Millisecond
	for {
		d := min(time.Until(deadline), slice)
		bc.c.SetReadDeadline(time.Now().Add(d))
		_, err := bc.br.Peek(1)
		if err == nil {
			return nil
		}
		if !isTimeout(err) || !time.Now().Before(deadline) {
			return err
		}
		if b.state() == health.Down {
			return errMarkedDown
		}
	}
}

// backendFailed records a failure of b for this request and decides
// whether it may be retried elsewhere.
func (lb *Balancer) backendFailed(b *backend, a *attempt, kind, reason string) outcome {
	a.failStatus, a.failMsg = lb.noteFailure(b, kind, reason, a.replayable)
	if a.replayable {
		return retry
	}
	lb.refuse(a.sc, a.rw, a.failStatus, a.failMsg)
	return failed
}

// noteFailure counts a failure of b to answer a request (kind: timeout or
// reset), tells passive health, and returns what to answer if no other
// backend will.
func (lb *Balancer) noteFailure(b *backend, kind, reason string, retriable bool) (status int, msg string) {
	switch kind {
	case "timeout":
		b.m.timeouts.Add(1)
		status, msg = 504, "backend did not answer in time"
	default:
		b.m.resets.Add(1)
		status, msg = 502, "backend closed the connection without a response"
	}
	observeFailure(b, reason)
	lb.log.Debug("backend failed a request", "backend", b.name, "reason", reason, "retriable", retriable)
	return status, msg
}

func observeFailure(b *backend, reason string) {
	if b.mon != nil {
		b.mon.ObserveFailure(reason)
	}
}

// streamRequestBody copies a body that was not buffered from the client to
// the backend. The client's and the backend's timeouts bound each wait for
// the next bytes, not the whole body, which may take as long as it keeps
// moving (or timeouts.request_body).
func (lb *Balancer) streamRequestBody(cc *clientConn, bc *backendConn, a *attempt) (outcome, bool) {
	s, sc, req := a.s, a.sc, &a.sc.req
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	sc.in = idleReader{Reader: cc.br, c: a.rw, idle: s.clientTimeout, limit: a.bodyLimit}
	sc.to = idleWriter{c: bc.c, idle: s.serverTimeout}
	var err error
	var n int64
	if req.chunked {
		n, err = copyChunked(&sc.to, &sc.in, *bufp, false, s.maxBody, true)
	} else {
		n, err = copyN(&sc.to, &sc.in, req.contentLength, *bufp)
	}
	bc.b.m.bytesOut.Add(uint64(n))
	if err != nil {
		// The backend has a prefix of the request: closing the connection
		// tells it the request ended early, whatever it has parsed.
		bc.close()
		var ce *copyError
		if errors.As(err, &ce) && ce.write {
			lb.backendFailed(bc.b, a, "reset", "send body: "+err.Error())
		} else {
			lb.bodyFailed(a.sc, a.rw, err)
		}
		return failed, false
	}
	return done, true
}

// bodyFailed answers a client whose request body could not be read.
func (lb *Balancer) bodyFailed(sc *scratch, rw net.Conn, err error) {
	switch {
	case errors.Is(err, errBodyTooLarge):
		lb.refuse(sc, rw, 413, "request body too large")
	case isTimeout(err):
		lb.refuse(sc, rw, 408, "request body not received in time")
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		sc.log.ended('C', 'R')
		lb.refuse(sc, rw, 400, "request body incomplete")
	default:
		lb.refuse(sc, rw, 400, "request body malformed: "+err.Error())
	}
}

// firstChunks waits for the first chunk header of a chunked body and checks
// the framing of what has arrived with it.
func firstChunks(in *idleReader, limit int64) error {
	for {
		p, _ := in.Peek(in.Buffered())
		if bytes.IndexByte(p, '\n') >= 0 || len(p) >= in.Size() {
			return scanChunks(p, limit)
		}
		in.arm()
		if _, err := in.Peek(len(p) + 1); err != nil {
			return readErr(err)
		}
	}
}

// relayResponse sends the parsed response head and its body to the client.
func (lb *Balancer) relayResponse(cc *clientConn, b *backend, bc *backendConn, a *attempt) outcome {
	s, sc, req, resp := a.s, a.sc, &a.sc.req, &a.sc.resp
	b.m.responses[statusClass(resp.status)].Add(1)
	sc.log.status = resp.status
	if resp.status >= 500 {
		observeFailure(b, "status "+strconv.Itoa(resp.status))
		if a.replayable && !a.lastTry && retryStatus(resp.status) && lb.discardResponse(bc, a) {
			a.failStatus, a.failMsg = 502, "backends answered "+strconv.Itoa(resp.status)
			return retry
		}
	} else if b.mon != nil {
		b.mon.ObserveSuccess()
	}
	if resp.status == 101 {
		if req.upgrade == nil {
			bc.close()
			lb.refuse(sc, a.rw, 502, "backend switched protocols unasked")
			return failed
		}
		return lb.relayUpgrade(cc, bc, a)
	}
	bodyless := resp.bodyless(req.method)
	delimited := bodyless || resp.chunked || resp.contentLength >= 0
	dechunk := resp.chunked && req.minor == 0 && !bodyless
	keepClient := req.persistent() && delimited && !dechunk && !lb.closing.Load()
	keepBackend := delimited && !resp.closeConn && (resp.minor == 1 || resp.keepAlive)
	setCookie := ""
	if s.stickyCookie != "" && a.sticky != b.cookie {
		setCookie = b.cookie
	}
	sc.out = appendResponseHead(sc.out[:0], resp, req, keepClient, dechunk, s.stickyCookie, setCookie, cc.tls)
	var remaining int64
	if !bodyless && resp.contentLength >= 0 {
		remaining = resp.contentLength
		// Send the head and the body bytes already read in one write.
		if k := min(int64(bc.br.Buffered()), remaining, 32*1024); k > 0 {
			p, _ := bc.br.Peek(int(k))
			sc.out = append(sc.out, p...)
			bc.br.Discard(int(k))
			remaining -= k
		}
	}
	// Each write to the client and each read from the backend has its own
	// deadline: a slow reader or a slow backend is fine while data moves.
	headLen := int64(len(sc.out))
	if !bodyless && resp.contentLength >= 0 {
		headLen -= resp.contentLength - remaining
	}
	sc.to = idleWriter{c: a.rw, idle: s.clientTimeout}
	if _, err := sc.to.Write(sc.out); err != nil {
		bc.close()
		sc.log.ended('C', 'D')
		return failed
	}
	var n int64
	var err error
	if !bodyless && (remaining > 0 || resp.contentLength < 0) {
		bufp := copyBufs.Get().(*[]byte)
		sc.in = idleReader{Reader: bc.br, c: bc.c, idle: s.serverTimeout}
		switch {
		case resp.chunked:
			n, err = copyChunked(&sc.to, &sc.in, *bufp, dechunk, 0, false)
		case resp.contentLength >= 0:
			n, err = copyN(&sc.to, &sc.in, remaining, *bufp)
		default:
			n, err = copyUntilEOF(&sc.to, &sc.in, *bufp)
		}
		copyBufs.Put(bufp)
	}
	if !bodyless && resp.contentLength >= 0 {
		n += resp.contentLength - remaining // the part sent with the head
	}
	b.m.bytesIn.Add(uint64(n))
	sc.log.bytes = headLen + n
	if err != nil {
		bc.close()
		if sc.to.err != nil {
			sc.log.ended('C', 'D')
		} else {
			sc.log.ended('S', 'D')
		}
		return failed
	}
	if keepBackend {
		b.putIdle(bc, time.Now())
	} else {
		bc.close()
	}
	if keepClient {
		return done
	}
	return doneClose
}

// relayUpgrade completes a protocol switch (WebSocket and the like) and
// tunnels bytes both ways until either side closes or the tunnel idles out.
func (lb *Balancer) relayUpgrade(cc *clientConn, bc *backendConn, a *attempt) outcome {
	sc := a.sc
	sc.out = appendUpgradeHead(sc.out[:0], &sc.resp)
	a.rw.SetWriteDeadline(time.Now().Add(a.s.clientTimeout))
	if _, err := a.rw.Write(sc.out); err != nil {
		bc.close()
		return failed
	}
	a.rw.SetDeadline(time.Time{})
	bc.c.SetDeadline(time.Time{})
	tunnel(a.rw, cc.br, bc.c, bc.br, a.s.tunnelTimeout)
	bc.close()
	return failed // the connection was consumed by the tunnel
}

// retryStatus reports the statuses after which an idempotent request is
// tried on another backend: the server failed, not the request.
func retryStatus(code int) bool { return code >= 500 && code <= 504 && code != 501 }

// discardResponse reads away a small error response so that the backend
// connection can be reused, or closes it. It reports whether the request may
// be retried (the client has seen nothing yet, so always true).
func (lb *Balancer) discardResponse(bc *backendConn, a *attempt) bool {
	resp := &a.sc.resp
	if resp.contentLength >= 0 && resp.contentLength <= 64*1024 && !resp.closeConn && !resp.bodyless(a.sc.req.method) {
		bc.c.SetReadDeadline(time.Now().Add(a.s.serverTimeout))
		if _, err := bc.br.Discard(int(resp.contentLength)); err == nil {
			bc.b.putIdle(bc, time.Now())
			return true
		}
	}
	bc.close()
	return true
}

func statusClass(code int) int {
	if c := code / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}

// backendConn returns a pooled connection to b or dials a new one. When
// checkAlive is set, a pooled connection is first checked for a close by the
// backend, because the request could not be retried if it were stale.
func (lb *Balancer) backendConn(b *backend, s *settings, allowPooled, checkAlive bool) (*backendConn, error) {
	if allowPooled || checkAlive {
		for {
			bc := b.getIdle(time.Now())
			if bc == nil {
				break
			}
			if !checkAlive || bc.alive() {
				return bc, nil
			}
			bc.close()
		}
	}
	c, err := dialer(s.connectTimeout).Dial("tcp", b.addr)
	if err != nil {
		return nil, err
	}
	br := brPool.Get().(*bufio.Reader)
	br.Reset(c)
	return &backendConn{c: c, br: br, b: b}, nil
}

// appendRequestHead writes the request head as sent to a backend: the
// client's headers less hop-by-hop ones, with X-Forwarded-For/-Proto.
func (lb *Balancer) appendRequestHead(dst []byte, cc *clientConn, r *request, backendAddr string) []byte {
	dst = append(dst, r.method...)
	dst = append(dst, ' ')
	switch {
	case r.authority == nil:
		dst = append(dst, r.target...)
	case len(r.path) == 0 || r.path[0] != '/':
		dst = append(dst, '/')
		fallthrough
	default:
		// An absolute-form target leaves as origin-form, its authority as
		// the one Host (RFC 9112 3.2.2): the backend sees one consistent
		// pair, whichever of the two it reads.
		dst = append(dst, r.path...)
	}
	dst = append(dst, " HTTP/1.1\r\n"...)
	switch {
	case r.authority != nil:
		dst = appendHeader(dst, hostName, r.authority)
	case !r.hasHost:
		// An HTTP/1.0 client may omit Host; HTTP/1.1 to the backend needs one.
		dst = append(dst, "Host: "...)
		dst = append(dst, backendAddr...)
		dst = append(dst, "\r\n"...)
	}
	for _, h := range r.headers {
		if hopByHop(h.name) || eqFold(h.name, "x-forwarded-for") || eqFold(h.name, "x-forwarded-proto") ||
			eqFold(h.name, "expect") || eqFold(h.name, "content-length") {
			continue
		}
		if eqFold(h.name, "host") {
			// Host is never dropped for a Connection option, and appears once.
			if r.authority == nil {
				dst = appendHeader(dst, h.name, h.value)
			}
			continue
		}
		if listed(r.connTokens, h.name) {
			continue
		}
		dst = appendHeader(dst, h.name, h.value)
	}
	if r.chunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	} else if r.contentLength >= 0 {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, r.contentLength, 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	if len(r.xff) > 0 {
		dst = append(dst, r.xff...)
		dst = append(dst, ", "...)
	}
	dst = cc.ip.AppendTo(dst)
	if cc.tls {
		dst = append(dst, "\r\nX-Forwarded-Proto: https\r\n"...)
	} else {
		dst = append(dst, "\r\nX-Forwarded-Proto: http\r\n"...)
	}
	if r.upgrade != nil {
		dst = append(dst, "Connection: Upgrade\r\nUpgrade: "...)
		dst = append(dst, r.upgrade...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// appendResponseHead writes the response head as sent to the client.
func appendResponseHead(dst []byte, resp *response, req *request, keep, dechunk bool, cookieName, setCookie string, secure bool) []byte {
	dst = append(dst, "HTTP/1.1"...)
	dst = append(dst, resp.statusLine[8:]...)
	dst = append(dst, "\r\n"...)
	for _, h := range resp.headers {
		if hopByHop(h.name) || (dechunk && eqFold(h.name, "content-length")) {
			continue
		}
		// A Connection option never removes the header that frames the body.
		if listed(resp.connTokens, h.name) && !eqFold(h.name, "content-length") {
			continue
		}
		dst = appendHeader(dst, h.name, h.value)
	}
	if resp.chunked && !dechunk && !resp.bodyless(req.method) {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	if setCookie != "" {
		dst = append(dst, "Set-Cookie: "...)
		dst = append(dst, cookieName...)
		dst = append(dst, '=')
		dst = append(dst, setCookie...)
		dst = append(dst, "; Path=/; HttpOnly"...)
		if secure {
			dst = append(dst, "; Secure"...)
		}
		dst = append(dst, "\r\n"...)
	}
	switch {
	case !keep:
		dst = append(dst, "Connection: close\r\n"...)
	case req.minor == 0:
		dst = append(dst, "Connection: keep-alive\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// appendUpgradeHead writes a 101 response with its Upgrade headers intact.
func appendUpgradeHead(dst []byte, resp *response) []byte {
	dst = append(dst, "HTTP/1.1"...)
	dst = append(dst, resp.statusLine[8:]...)
	dst = append(dst, "\r\n"...)
	for _, h := range resp.headers {
		if eqFold(h.name, "keep-alive") || eqFold(h.name, "proxy-connection") {
			continue
		}
		dst = appendHeader(dst, h.name, h.value)
	}
	return append(dst, "\r\n"...)
}

func appendHeader(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// hopByHop reports headers that concern one connection only (RFC 9110 7.6.1).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return eqFold(name, "te")
	case 7:
		return eqFold(name, "upgrade") || eqFold(name, "trailer")
	case 10:
		return eqFold(name, "connection") || eqFold(name, "keep-alive")
	case 16:
		return eqFold(name, "proxy-connection")
	case 17:
		return eqFold(name, "transfer-encoding")
	}
	return false
}

func listed(tokens [][]byte, name []byte) bool {
	for _, t := range tokens {
		if len(t) == len(name) && bytes.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// findCookie returns the value of cookie name in the Cookie headers.
func findCookie(headers [][]byte, name string) string {
	for _, h := range headers {
		for len(h) > 0 {
			var part []byte
			if i := bytes.IndexByte(h, ';'); i >= 0 {
				part, h = h[:i], h[i+1:]
			} else {
				part, h = h, nil
			}
			part = trimOWS(part)
			if len(part) > len(name) && part[len(name)] == '=' && string(part[:len(name)]) == name {
				return string(part[len(name)+1:])
			}
		}
	}
	return ""
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

var hostName = []byte("Host")

var statusText = map[int]string{
	400: "Bad Request", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
	431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway",
	503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

// localResponse answers the client with an error of haven's own and ends
// the exchange: the caller closes the connection, after lingerClose has let
// the client read the answer.
// refuse answers with haven's own response, as localResponse, and records
// it in the request's log entry.
func (lb *Balancer) refuse(sc *scratch, w net.Conn, status int, msg string) {
	sc.log.refused(status)
	lb.localResponse(w, status, msg)
}

// logRequest writes the request's access log line, when something was
// answered or a request was read.
func (lb *Balancer) logRequest(cc *clientConn, sc *scratch) {
	e := &sc.log
	// The log as it is now: a reload during the request reopened it.
	l := lb.alog.Load()
	if l == nil || e.status == 0 && !e.parsed {
		return // off now, or the client left before a request
	}
	var req *request
	if e.parsed {
		req = &sc.req
	}
	sc.line = e.appendHTTP(sc.line[:0], l, lb.name, cc.remote(), req, time.Now())
	l.Write(sc.line)
}

func (lb *Balancer) localResponse(w net.Conn, status int, msg string) {
	lb.countLocal(status)
	body := "haven: " + msg + "\n"
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + statusText[status] +
		"\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n"
	w.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := w.Write([]byte(head + body)); err == nil {
		lingerClose(w)
	}
}

// Lingering after a local answer: at most this long, and this many bytes.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// lingerClose half-closes a connection that is about to close after an
// answer and reads away what the client still sends (the rest of a URI too
// long, a body refused), until it closes, for lingerTime or lingerBytes at
// most. Closing with unread bytes would send a reset, which can reach the
// client before it has read the answer and make it discard the answer.
func lingerClose(w net.Conn) {
	if cw, ok := w.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		return
	}
	w.SetReadDeadline(time.Now().Add(lingerTime))
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	for n := 0; n < lingerBytes; {
		k, err := w.Read(*bufp)
		if err != nil {
			return
		}
		n += k
	}
}
