package lb

import (
	"fmt"
	"net"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/logfile"
)

// accessLog is a balancer's open access log: its lines are formatted
// into the connection's scratch buffer and written to a logfile.File.
type accessLog struct {
	*logfile.File
	json bool
}

func openAccessLog(c *config.AccessLog) (*accessLog, error) {
	f, err := logfile.Open(c.Path)
	if err != nil {
		return nil, fmt.Errorf("access_log: %w", err)
	}
	return &accessLog{File: f, json: c.Format == "json"}, nil
}

// close closes the file; a no-op on nil.
func (l *accessLog) close() {
	if l != nil {
		l.Close()
	}
}

// logEntry is what one request's (or TCP connection's) line says. The
// timings follow HAProxy's: TR the request head's arrival (from its first
// byte), Tw the wait for a backend slot, Tc the connect (0 on a reused
// connection), Tr the wait for the response head once the request was
// sent, Ta the whole; -1 for a phase never reached.
type logEntry struct {
	start          time.Time
	tr, tw, tc, ts time.Duration // ts: the response head's wait (HAProxy's Tr)
	backend        string
	status         int
	bytes          int64
	retries        int
	parsed         bool // a request head was read and parsed
	// term is the termination state: who ended the exchange (- normal,
	// C client, S server, P haven, c client timeout, s server timeout)
	// and when (- done, R request, Q queue, C connect, H response head, D
	// data).
	term [2]byte
}

func (e *logEntry) reset(start time.Time) {
	*e = logEntry{start: start, tr: -1, tw: -1, tc: -1, ts: -1, term: [2]byte{'-', '-'}}
}

// queued adds a wait in the queue for a backend slot (0: none, but the
// queue was reached, so Tw is no longer -1).
func (e *logEntry) queued(d time.Duration) { e.tw = max(e.tw, 0) + d }

// ended sets the termination state unless one is set.
func (e *logEntry) ended(who, when byte) {
	if e.term == [2]byte{'-', '-'} {
		e.term = [2]byte{who, when}
	}
}

// refused records haven's own answer: its status, and a termination
// state from it unless the caller gave one.
func (e *logEntry) refused(status int) {
	e.status = status
	switch status {
	case 408:
		e.ended('c', 'R')
	case 502:
		e.ended('S', 'H')
	case 503:
		e.ended('S', 'C')
	case 504:
		e.ended('s', 'H')
	default:
		e.ended('P', 'R')
	}
}

// appendHTTP formats a request's line. req is nil when no request head
// was parsed.
func (e *logEntry) appendHTTP(dst []byte, l *accessLog, balancer string, client net.Addr, req *request, end time.Time) []byte {
	method, target, proto := "-", "-", "HTTP/1.1"
	if req != nil && len(req.method) > 0 {
		method, target = string(req.method), string(req.target)
		if req.minor == 0 {
			proto = "HTTP/1.0"
		}
	}
	if l.json {
		return e.appendJSON(dst, balancer, client, method, target, proto, end)
	}
	dst = e.appendHAProxyPrefix(dst, balancer, client)
	dst = appendMS(dst, e.tr)
	dst = append(dst, '/')
	dst = appendMS(dst, e.tw)
	dst = append(dst, '/')
	dst = appendMS(dst, e.tc)
	dst = append(dst, '/')
	dst = appendMS(dst, e.ts)
	dst = append(dst, '/')
	dst = appendMS(dst, end.Sub(e.start))
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(e.status), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, e.bytes, 10)
	dst = append(dst, ' ', e.term[0], e.term[1], ' ')
	dst = strconv.AppendInt(dst, int64(e.retries), 10)
	dst = append(dst, ` "`...)
	dst = appendSafe(dst, method)
	dst = append(dst, ' ')
	dst = appendSafe(dst, target)
	dst = append(dst, ' ')
	dst = append(dst, proto...)
	return append(dst, "\"\n"...)
}

// appendTCP formats a TCP connection's line: TW/Tc/Tt, no request.
func (e *logEntry) appendTCP(dst []byte, l *accessLog, balancer string, client net.Addr, end time.Time) []byte {
	if l.json {
		return e.appendJSON(dst, balancer, client, "", "", "", end)
	}
	dst = e.appendHAProxyPrefix(dst, balancer, client)
	dst = appendMS(dst, e.tw)
	dst = append(dst, '/')
	dst = appendMS(dst, e.tc)
	dst = append(dst, '/')
	dst = appendMS(dst, end.Sub(e.start))
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, e.bytes, 10)
	dst = append(dst, ' ', e.term[0], e.term[1], ' ')
	dst = strconv.AppendInt(dst, int64(e.retries), 10)
	return append(dst, '\n')
}

// appendHAProxyPrefix is "CLIENT [DATE] BALANCER BACKEND ".
func (e *logEntry) appendHAProxyPrefix(dst []byte, balancer string, client net.Addr) []byte {
	dst = appendAddr(dst, client)
	dst = append(dst, " ["...)
	dst = e.start.UTC().AppendFormat(dst, "02/Jan/2006:15:04:05.000")
	dst = append(dst, "] "...)
	dst = append(dst, balancer...)
	dst = append(dst, ' ')
	if e.backend == "" {
		dst = append(dst, "<NOSRV>"...)
	} else {
		dst = append(dst, e.backend...)
	}
	return append(dst, ' ')
}

func (e *logEntry) appendJSON(dst []byte, balancer string, client net.Addr, method, target, proto string, end time.Time) []byte {
	dst = append(dst, `{"time":"`...)
	dst = e.start.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z")
	dst = append(dst, `","client":"`...)
	dst = appendAddr(dst, client)
	dst = append(dst, `","balancer":`...)
	dst = appendJSONString(dst, balancer)
	dst = append(dst, `,"backend":`...)
	dst = appendJSONString(dst, e.backend)
	if method != "" {
		dst = append(dst, `,"method":`...)
		dst = appendJSONString(dst, method)
		dst = append(dst, `,"target":`...)
		dst = appendJSONString(dst, target)
		dst = append(dst, `,"proto":"`...)
		dst = append(dst, proto...)
		dst = append(dst, `","status":`...)
		dst = strconv.AppendInt(dst, int64(e.status), 10)
		dst = append(dst, `,"request_ms":`...)
		dst = appendJSONMS(dst, e.tr)
	}
	dst = append(dst, `,"bytes":`...)
	dst = strconv.AppendInt(dst, e.bytes, 10)
	dst = append(dst, `,"retries":`...)
	dst = strconv.AppendInt(dst, int64(e.retries), 10)
	dst = append(dst, `,"termination":"`...)
	dst = append(dst, e.term[0], e.term[1])
	dst = append(dst, `","queue_ms":`...)
	dst = appendJSONMS(dst, e.tw)
	dst = append(dst, `,"connect_ms":`...)
	dst = appendJSONMS(dst, e.tc)
	if method != "" {
		dst = append(dst, `,"response_ms":`...)
		dst = appendJSONMS(dst, e.ts)
	}
	dst = append(dst, `,"total_ms":`...)
	dst = appendJSONMS(dst, end.Sub(e.start))
	return append(dst, "}\n"...)
}

// appendMS writes whole milliseconds, or -1.
func appendMS(dst []byte, d time.Duration) []byte {
	if d < 0 {
		return append(dst, "-1"...)
	}
	return strconv.AppendInt(dst, int64(d/time.Millisecond), 10)
}

// appendJSONMS writes milliseconds to the microsecond, or null.
func appendJSONMS(dst []byte, d time.Duration) []byte {
	if d < 0 {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, float64(d.Microseconds())/1000, 'f', -1, 64)
}

func appendAddr(dst []byte, a net.Addr) []byte {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().AppendTo(dst)
	}
	if a == nil {
		return append(dst, '-')
	}
	return append(dst, a.String()...)
}

// appendSafe writes s with what would break a line or the quoted request
// (control characters, quotes, backslashes, invalid UTF-8) escaped as
// \xHH: a client cannot forge a second line.
func appendSafe(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			if r, n := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError {
				dst = append(dst, s[i:i+n]...)
				i += n
				continue
			}
		}
		dst = append(dst, '\\', 'x', hex[c>>4], hex[c&15])
		i++
	}
	return dst
}

// appendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
			i++
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			i++
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, "\\ufffd"...)
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
		}
	}
	return append(dst, '"')
}
