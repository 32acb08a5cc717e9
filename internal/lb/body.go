package lb

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
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

const (
	maxChunkLine     = 4096
	maxTrailerFields = 64
)

var (
	errChunkSize    = errors.New("malformed chunk size")
	errChunkData    = errors.New("chunk data longer than its size")
	errChunkLine    = errors.New("chunk line too long")
	errChunkLineEnd = errors.New("chunked framing: a line ends without CR before LF")
	errTrailerField = errors.New("malformed trailer field")
	errTrailerCount = errors.New("too many trailer fields")
)

// copyChunked copies a chunked body, re-encoding its framing: each chunk
// leaves with a size line and CRLFs of haven's own, without extensions, so
// that a receiver that parses chunks differently from haven (spaces after
// the size, extensions) reads the same message. In a request (strict) every
// line of the framing must end in CRLF: a bare LF, which RFC 9112 lets a
// recipient accept in a head, is where chunk parsers disagree ("funky
// chunks"; net/http refuses it since CVE-2025-22871), so haven refuses it
// from clients. A backend's response is read as RFC 9112 allows (a bare LF,
// a space before an extension): its head has already left for the client
// when its body is copied, and the framing the client gets is haven's own. A chunk's header is
// checked before any of its data is sent. With dechunk the data is written
// without framing (for an HTTP/1.0 client) and trailers are dropped. limit >
// 0 caps the data size.
//
// Output is gathered in buf and written when buf is full or before a read
// that may wait, so that small chunks already received leave in one write
// and a stream of events is never held back.
func copyChunked(dst io.Writer, src bodyReader, buf []byte, dechunk bool, limit int64, strict bool) (int64, error) {
	var total int64
	out := buf[:0]
	flush := func() error {
		if len(out) > 0 {
			if _, err := dst.Write(out); err != nil {
				return writeErr(err)
			}
			out = buf[:0]
		}
		return nil
	}
	// room makes space for n more bytes of framing in out.
	room := func(n int) error {
		if len(out)+n > len(buf) {
			return flush()
		}
		return nil
	}
	for {
		if src.Buffered() == 0 {
			if err := flush(); err != nil {
				return total, err
			}
		}
		line, err := readChunkLine(src, strict)
		if err != nil {
			return total, err
		}
		size, ok := parseChunkSize(line, strict)
		if !ok {
			return total, readErr(errChunkSize)
		}
		if limit > 0 && total+size > limit {
			return total, errBodyTooLarge
		}
		if size == 0 {
			if err := copyTrailers(src, &out, buf, flush, dechunk, strict); err != nil {
				return total, err
			}
			return total, flush()
		}
		if !dechunk {
			if err := room(20); err != nil {
				return total, err
			}
			out = strconv.AppendInt(out, size, 16)
			out = append(out, "\r\n"...)
		}
		for left := size; left > 0; {
			if len(out) >= len(buf) || (src.Buffered() == 0 && len(out) > 0) {
				if err := flush(); err != nil {
					return total, err
				}
			}
			p := buf[len(out):]
			if int64(len(p)) > left {
				p = p[:left]
			}
			k, err := src.Read(p)
			out = out[:len(out)+k]
			left -= int64(k)
			total += int64(k)
			if err != nil && left > 0 {
				return total, readErr(err)
			}
		}
		if src.Buffered() == 0 {
			if err := flush(); err != nil {
				return total, err
			}
		}
		crlf, err := readChunkLine(src, strict)
		if err != nil {
			return total, err
		}
		if !isLineEnd(crlf) {
			return total, readErr(errChunkData)
		}
		if !dechunk {
			if err := room(2); err != nil {
				return total, err
			}
			out = append(out, "\r\n"...)
		}
	}
}

// copyTrailers reads the trailer section after the last chunk and, unless
// dechunking, appends the last chunk and each field, re-encoded as
// "name: value\r\n", to *out.
func copyTrailers(src bodyReader, out *[]byte, buf []byte, flush func() error, dechunk, strict bool) error {
	if !dechunk {
		*out = append(*out, "0\r\n"...)
	}
	for n := 0; ; n++ {
		if n > maxTrailerFields {
			return readErr(errTrailerCount)
		}
		line, err := readChunkLine(src, strict)
		if err != nil {
			return err
		}
		if isLineEnd(line) {
			if !dechunk {
				*out = append(*out, "\r\n"...)
			}
			return nil
		}
		field, _ := cutLine(line)
		h, err := parseField(field, strict)
		if err != nil {
			return readErr(errTrailerField)
		}
		if dechunk {
			continue
		}
		if len(*out)+len(h.name)+len(h.value)+6 > len(buf) {
			if err := flush(); err != nil {
				return err
			}
		}
		*out = appendHeader(*out, h.name, h.value)
	}
}

// isLineEnd reports whether a line of chunked framing, as readChunkLine
// returned it, is empty.
func isLineEnd(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

// readChunkLine returns a line including its line end, bounded in length;
// strict, the line end must be CRLF.
func readChunkLine(src bodyReader, strict bool) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > maxChunkLine {
		return nil, readErr(errChunkLine)
	}
	if err != nil {
		return nil, readErr(err)
	}
	if strict && (len(line) < 2 || line[len(line)-2] != '\r') {
		return nil, readErr(errChunkLineEnd)
	}
	return line, nil
}

// parseChunkSize parses a chunk's size line (with its line end): 1 to 15
// hex digits, then either an extension (";name" or ";name=value", which
// haven drops) or spaces, then CRLF. Strict (a request), a space between
// the size and an extension, which RFC 9112 allows as BWS, is refused as
// net/http refuses it: a size the proxy and the server read differently is
// how bodies are smuggled, and no client sends one; and the line must end
// in CRLF. Otherwise (a response) both are accepted.
func parseChunkSize(line []byte, strict bool) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line) && unhex(line[i]) >= 0; i++ {
		if i == 15 {
			return 0, false
		}
		n = n<<4 | int64(unhex(line[i]))
	}
	if i == 0 {
		return 0, false
	}
	line, ok := bytes.CutSuffix(line[i:], []byte("\r\n"))
	if !ok {
		if strict {
			return 0, false
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
	}
	if len(line) == 0 || len(trimOWS(line)) == 0 {
		return n, true
	}
	if !strict {
		line = trimOWS(line)
	}
	if line[0] != ';' {
		return 0, false
	}
	for _, c := range line {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return 0, false // no control characters, bare CR or NUL in an extension
		}
	}
	return n, true
}

// unhex returns the value of a hex digit, or -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// scanChunks checks the chunk framing that has already arrived in p (a
// peek at the client's buffer) so that a request whose visible framing is
// malformed is refused before anything of it reaches a backend. It reports
// the first error in the visible part; what has not arrived yet is checked
// as it is copied.
func scanChunks(p []byte, limit int64) error {
	var total int64
	for {
		i := bytes.IndexByte(p, '\n')
		if i+1 > maxChunkLine || (i < 0 && len(p) >= maxChunkLine) {
			return readErr(errChunkLine)
		}
		if i < 0 {
			return nil
		}
		size, ok := parseChunkSize(p[:i+1], true)
		if !ok {
			return readErr(errChunkSize)
		}
		if total += size; limit > 0 && total > limit {
			return errBodyTooLarge
		}
		if size == 0 {
			return nil // trailers are checked as they are copied
		}
		p = p[i+1:]
		if int64(len(p)) <= size {
			return nil
		}
		p = p[size:]
		switch {
		case len(p) >= 2 && p[0] == '\r' && p[1] == '\n':
			p = p[2:]
		case len(p) == 0 || (len(p) == 1 && p[0] == '\r'):
			return nil
		default:
			return readErr(errChunkData)
		}
	}
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
