package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Stream is a server-sent events response (text/event-stream): a browser's
// EventSource or `haven events --follow` reads it, and reconnects with
// the last ID it received when it breaks.
type Stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
}

var lineBreaks = strings.NewReplacer("\r\n", "\n", "\r", "\n")

// heartbeat is how often an idle stream sends a comment, so that proxies
// and the reader see it alive and a dead reader is noticed.
const heartbeat = 15 * time.Second

// StartStream answers r with a stream. Its context ends when the reader
// goes away or the server shuts down; the server's write timeout does not
// apply to it.
func (s *Server) StartStream(w http.ResponseWriter, r *http.Request) (*Stream, error) {
	rc := http.NewResponseController(w)
	// Streams live past the server's timeouts: the write deadline, and the
	// read deadline (net/http clears it for a request without a body when
	// it starts reading the connection in the background; not for one
	// with a body, whose context its expiry would end).
	if err := errors.Join(rc.SetWriteDeadline(time.Time{}), rc.SetReadDeadline(time.Time{})); err != nil {
		return nil, fmt.Errorf("admin: stream: %w", err)
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.streams, cancel)
	go func() {
		<-ctx.Done()
		stop()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// Tells nginx and its kin not to buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st := &Stream{w: w, rc: rc, ctx: ctx}
	if err := st.flush(); err != nil {
		cancel()
		return nil, err
	}
	return st, nil
}

// Context ends when the stream does.
func (st *Stream) Context() context.Context { return st.ctx }

// Send writes one message: its type (the EventSource listener's name; ""
// for "message"), its ID ("" for none) and its data, which may span lines.
func (st *Stream) Send(typ, id string, data []byte) error {
	var b strings.Builder
	if typ != "" {
		b.WriteString("event: " + typ + "\n")
	}
	if id != "" {
		b.WriteString("id: " + id + "\n")
	}
	// A line ends at CR, LF or CRLF for the reader: each is a new data
	// line here, so that data never ends a field early.
	for line := range strings.SplitSeq(lineBreaks.Replace(string(data)), "\n") {
		b.WriteString("data: " + line + "\n")
	}
	b.WriteString("\n")
	if _, err := st.w.Write([]byte(b.String())); err != nil {
		return err
	}
	return st.flush()
}

// Heartbeats returns a ticker channel for keeping an idle stream alive
// (Ping on each tick) and the function that stops it.
func (st *Stream) Heartbeats() (<-chan time.Time, func()) {
	t := time.NewTicker(heartbeat)
	return t.C, t.Stop
}

// Ping writes a comment line, which readers ignore.
func (st *Stream) Ping() error {
	if _, err := st.w.Write([]byte(": ping\n\n")); err != nil {
		return err
	}
	return st.flush()
}

func (st *Stream) flush() error {
	if err := st.rc.Flush(); err != nil {
		if errors.Is(err, http.ErrNotSupported) {
			return errors.New("admin: stream: the connection cannot flush")
		}
		return err
	}
	return nil
}
