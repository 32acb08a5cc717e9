package lb

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var errBodyTooLarge = errors.New("body too large")

// copyError tells a failed write (the destination's fault) from a failed
// read (the source's).
type copyError struct {
	write bool
	err   error
}

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

func readErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &copyError{err: err}
}

func writeErr(err error) error { return &copyError{write: true, err: err} }

// bodyReader is where a body is read from: a connection's buffered reader,
// usually behind an idleReader that moves the read deadline on.
type bodyReader interface {
	Read(p []byte) (int, error)
	ReadSlice(delim byte) ([]byte, error)
	Buffered() int
}

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
}

func (w *idleWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.idle))
	n, err := w.c.Write(p)
	if tc, ok := w.c.(*net.TCPConn); ok && err != nil {
		n, err = continueWrite(tc, p, n, err, w.idle, &w.acked)
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

// copyN copies exactly n bytes from src to dst through buf.
func copyN(dst io.Writer, src bodyReader, n int64, buf []byte) (int64, error) {
	var done int64
	for done < n {
		p := buf
		if rem := n - done; rem < int64(len(p)) {
			p = p[:rem]
		}
		k, err := src.Read(p)
		if k > 0 {
			if _, werr := dst.Write(p[:k]); werr != nil {
				return done, writeErr(werr)
			}
			done += int64(k)
		}
		if err != nil && done < n {
			return done, readErr(err)
		}
	}
	return done, nil
}

// copyUntilEOF copies a close-delimited body.
func copyUntilEOF(dst io.Writer, src bodyReader, buf []byte) (int64, error) {
	var done int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return done, writeErr(werr)
			}
			done += int64(k)
		}
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			return done, readErr(err)
		}
	}
}

const maxChunkLine = 4096

// copyChunked copies a chunked body, checking its framing so that the end of
// the message is known and the connection can be reused. With dechunk the
// data is written without framing (for an HTTP/1.0 client). limit > 0 caps
// the data size. Trailers are passed on unless dechunking.
func copyChunked(dst io.Writer, src bodyReader, buf []byte, dechunk bool, limit int64) (int64, error) {
	var total int64
	for {
		line, err := readChunkLine(src)
		if err != nil {
			return total, err
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return total, readErr(errors.New("malformed chunk size"))
		}
		if limit > 0 && total+size > limit {
			return total, errBodyTooLarge
		}
		if !dechunk {
			if _, err := dst.Write(line); err != nil {
				return total, writeErr(err)
			}
		}
		if size == 0 {
			return total, copyTrailers(dst, src, dechunk)
		}
		n, err := copyN(dst, src, size, buf)
		total += n
		if err != nil {
			return total, err
		}
		crlf, err := readChunkLine(src)
		if err != nil {
			return total, err
		}
		if len(crlf) != 2 && len(crlf) != 1 {
			return total, readErr(errors.New("chunk data longer than its size"))
		}
		if !dechunk {
			if _, err := dst.Write(crlf); err != nil {
				return total, writeErr(err)
			}
		}
	}
}

func copyTrailers(dst io.Writer, src bodyReader, dechunk bool) error {
	for n := 0; n < 64; n++ {
		line, err := readChunkLine(src)
		if err != nil {
			return err
		}
		if !dechunk {
			if _, err := dst.Write(line); err != nil {
				return writeErr(err)
			}
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil
		}
	}
	return readErr(errors.New("too many trailer lines"))
}

// readChunkLine returns a line including its \n, bounded in length.
func readChunkLine(src bodyReader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, readErr(errors.New("chunk line too long"))
	}
	if err != nil {
		return nil, readErr(err)
	}
	return line, nil
}

// parseChunkSize parses the hex size before any extension.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	digits := 0
	for _, c := range line {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		case c == ';' || c == '\r' || c == '\n' || c == ' ' || c == '\t':
			return n, digits > 0
		default:
			return 0, false
		}
		if digits++; digits > 15 {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
	return n, digits > 0
}

// tunnel copies bytes both ways between a and b (with whatever their
// readers already buffered) until both directions end or the tunnel sees no
// traffic in either direction for idle.
func tunnel(a net.Conn, abr *bufio.Reader, b net.Conn, bbr *bufio.Reader, idle time.Duration) {
	var wg sync.WaitGroup
	var st idleState
	wg.Add(2)
	go func() { defer wg.Done(); pipe(b, a, abr, idle, &st, 0) }()
	go func() { defer wg.Done(); pipe(a, b, bbr, idle, &st, 1) }()
	wg.Wait()
}

// idleState lets the two directions of a tunnel agree that both are idle.
type idleState struct {
	mu   sync.Mutex
	idle [2]bool
}

func (s *idleState) report(dir int, moved bool) (bothIdle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle[dir] = !moved
	return s.idle[0] && s.idle[1]
}

// pipe copies src to dst until EOF, then half-closes dst so that the peer
// sees the end while the other direction goes on.
//
// Small messages (request/response traffic) are copied through a pooled
// buffer: one read and one write each. Once a read fills the buffer the
// stream is bulk, and the direction switches to io.Copy between the raw TCP
// connections, which Go turns into splice(2): zero copy, but two system
// calls and a pipe per chunk, a loss for small messages (HAProxy's
// splice-auto makes the same choice).
//
// Idle detection works in windows of idle: a window that times out after
// moving bytes, or while the other direction moved bytes, starts a new one.
func pipe(dst, src net.Conn, buffered *bufio.Reader, idle time.Duration, st *idleState, dir int) {
	if buffered != nil && buffered.Buffered() > 0 {
		p, _ := buffered.Peek(buffered.Buffered())
		if _, err := dst.Write(p); err != nil {
			closeBoth(dst, src)
			return
		}
	}
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	bulk := false
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		var n int64
		var err error
		if bulk {
			n, err = io.Copy(dst, src) // splice(2) between TCP connections on Linux
			if err == nil {
				err = io.EOF
			}
		} else {
			n, err, bulk = copySmall(dst, src, *bufp)
			if bulk {
				continue
			}
		}
		if err == io.EOF {
			st.report(dir, false) // this direction is over: it no longer keeps the tunnel alive
			closeWrite(dst)
			return
		}
		if isTimeout(err) && !st.report(dir, n > 0) {
			continue
		}
		closeBoth(dst, src)
		return
	}
}

// copySmall copies src to dst through buf until an error, or until a read
// fills buf (bulk is then true and the caller switches to splice).
func copySmall(dst, src net.Conn, buf []byte) (moved int64, err error, bulk bool) {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return moved, werr, false
			}
			moved += int64(n)
			if n == len(buf) {
				return moved, nil, true
			}
		}
		if rerr != nil {
			return moved, rerr, false
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func closeBoth(a, b net.Conn) {
	a.Close()
	b.Close()
}
