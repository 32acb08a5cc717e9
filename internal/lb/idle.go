package lb

import (
	"bufio"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Timeouts bound silence, not transfers: the reader and writer here move a
// connection's deadline on before each read and write of a body, so that an
// upload at 1 KiB/s or a download to a slow reader lasts as long as it
// moves, and a peer that goes silent is cut after one timeout.

// idleReader reads a body from a connection whose read deadline moves on
// before each read that may wait, so that the timeout bounds silence, not the
// whole body: an upload at 1 KiB/s goes on for as long as it sends. limit,
// when set, bounds the whole body (timeouts.request_body).
type idleReader struct {
	*bufio.Reader
	c     net.Conn
	idle  time.Duration
	limit time.Time
}

func (r *idleReader) arm() {
	d := time.Now().Add(r.idle)
	if !r.limit.IsZero() && r.limit.Before(d) {
		d = r.limit
	}
	r.c.SetReadDeadline(d)
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.Reader.Buffered() == 0 {
		r.arm()
	}
	return r.Reader.Read(p)
}

func (r *idleReader) ReadSlice(delim byte) ([]byte, error) {
	r.arm()
	return r.Reader.ReadSlice(delim)
}

// idleWriter writes a body to a connection with a deadline moved on before
// each write. A write that times out after the peer acknowledged more data
// goes on (see continueWrite): a client that reads slowly is not one that
// stopped reading.
type idleWriter struct {
	c     net.Conn
	idle  time.Duration
	acked ackProgress
	err   error // the write error, if any: a copy that failed says which side did
}

func (w *idleWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.idle))
	n, err := w.c.Write(p)
	if tc, ok := w.c.(*net.TCPConn); ok && err != nil {
		n, err = continueWrite(tc, p, n, err, w.idle, &w.acked)
	}
	if err != nil {
		w.err = err
	}
	return n, err
}

// ackProgress remembers how many bytes a TCP peer had acknowledged when a
// write last timed out.
type ackProgress struct {
	seen  bool
	acked uint64
}

// continueWrite goes on with a write to c that failed with err after n bytes
// while the peer keeps acknowledging data, each time for span more. A
// blocked write does not wake for every byte the peer reads: Linux wakes a
// writer only once a third of the send buffer is free, megabytes on
// loopback, so a client reading 8 KiB/s can leave one write blocked for
// minutes while it reads steadily. What shows that it reads is the bytes it
// acknowledges (tcpi_bytes_acked), which grow with each window update. The
// first timeout of a transfer only takes the measure, so a peer that stopped
// reading is cut between one and two spans after its last acknowledgement.
func continueWrite(c *net.TCPConn, p []byte, n int, err error, span time.Duration, ap *ackProgress) (int, error) {
	for err != nil && n < len(p) && span > 0 && isTimeout(err) {
		acked, ok := bytesAcked(c)
		if !ok || (ap.seen && acked <= ap.acked) {
			break
		}
		ap.seen, ap.acked = true, acked
		c.SetWriteDeadline(time.Now().Add(span))
		var k int
		k, err = c.Write(p[n:])
		n += k
	}
	return n, err
}

// bytesAcked returns the bytes of data that c's peer has acknowledged.
func bytesAcked(c *net.TCPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}

// ackConn is a client's TCP connection under TLS. crypto/tls cannot go on
// after a write times out, so the patience of idleWriter lives here, below
// it: a write that times out while the peer acknowledges data goes on for the
// span of the last write deadline.
type ackConn struct {
	*net.TCPConn
	span  time.Duration
	acked ackProgress
}

func (c *ackConn) SetWriteDeadline(t time.Time) error {
	c.span = 0
	if !t.IsZero() {
		c.span = time.Until(t)
	}
	return c.TCPConn.SetWriteDeadline(t)
}

func (c *ackConn) SetDeadline(t time.Time) error {
	c.span = 0
	if !t.IsZero() {
		c.span = time.Until(t)
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *ackConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	if err != nil {
		n, err = continueWrite(c.TCPConn, p, n, err, c.span, &c.acked)
	}
	return n, err
}
