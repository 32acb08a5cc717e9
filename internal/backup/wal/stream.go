package wal

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// message is one message read from the replication stream, copied out of
// the connection's buffer.
type message struct {
	data []byte // a CopyData's payload
	done bool   // the server ended the stream: its timeline ended
	err  error
}

// uploadOp stores one piece or one whole segment.
type uploadOp struct {
	seg   *segment
	off   int    // where data starts in the segment
	data  []byte // a view of seg.data: what is stored
	piece string // the piece's name; empty for the whole segment
	old   []string
}

// uploadResult says how many of an upload's ops were done, and why the
// next one failed.
type uploadResult struct {
	done int
	err  error
}

// streamer is one START_REPLICATION: the state of the loop that receives
// WAL into segments in memory and stores them.
type streamer struct {
	a       *Archiver
	conn    *pgconn.PgConn
	log     *slog.Logger
	pending []*segment // received and not all stored, oldest first
	ops     []uploadOp // the upload running, if any
	uploads chan uploadResult
	retryAt time.Time
	server  pg.LSN // the server's WAL end, as last heard
	broken  bool   // the read failed: pgconn is closing the connection
}

// stream runs START_REPLICATION from the start of seg and archives until
// ctx ends (then it stores what it has and returns nil), the timeline
// ends (it stores what it has and returns nil) or something fails.
func (a *Archiver) stream(ctx context.Context, conn *pgconn.PgConn, seg *segment) error {
	s := &streamer{a: a, conn: conn, log: a.log.With("timeline", seg.tli), pending: []*segment{seg}, uploads: make(chan uploadResult, 1)}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	err := pglogrepl.StartReplication(sctx, conn, a.cfg.Slot, pglogrepl.LSN(seg.start()),
		pglogrepl.StartReplicationOptions{Timeline: int32(seg.tli), Mode: pglogrepl.PhysicalReplication})
	cancel()
	if err != nil {
		return fmt.Errorf("wal: START_REPLICATION at %v on timeline %d: %w", seg.start(), seg.tli, err)
	}
	s.log.Info("streaming", "from", seg.start(), "stored", seg.start()+pg.LSN(seg.durable))

	// One goroutine reads the connection. This one writes status updates
	// to it: pgconn's writes of CopyData do not touch the reader's state.
	rctx, stopReading := context.WithCancel(context.Background())
	msgs := make(chan message, 16)
	readerDone := make(chan struct{})
	defer func() {
		// Cancelling rctx ends the reader's ReceiveMessage (pgconn sets a
		// deadline on the socket); only then may the connection be closed:
		// pgconn is not safe for a Close during a ReceiveMessage.
		stopReading()
		<-readerDone
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(c)
	}()
	go func() {
		defer close(readerDone)
		for {
			raw, err := conn.ReceiveMessage(rctx)
			var m message
			switch msg := raw.(type) {
			case *pgproto3.CopyData:
				m.data = append([]byte(nil), msg.Data...)
			case *pgproto3.CopyDone:
				m.done = true
			case *pgproto3.ErrorResponse:
				m.err = pgconn.ErrorResponseToPgError(msg)
			case nil:
				m.err = err
			default:
				continue
			}
			select {
			case msgs <- m:
			case <-rctx.Done():
				return
			}
			if m.done || m.err != nil {
				return
			}
		}
	}()
	return s.loop(ctx, msgs)
}

func (s *streamer) loop(ctx context.Context, msgs <-chan message) error {
	flushTick := time.NewTicker(s.a.cfg.FlushInterval)
	defer flushTick.Stop()
	statusTick := time.NewTicker(statusInterval)
	defer statusTick.Stop()
	lastHeard := time.Now()
	for {
		in := msgs
		if len(s.pending) > maxPending {
			in = nil // the repository is behind: let the slot keep the WAL
		}
		select {
		case <-ctx.Done():
			return s.finish("stopping")
		case m := <-in:
			lastHeard = time.Now()
			switch {
			case m.err != nil:
				// pgconn closes a connection whose read failed in a
				// goroutine of its own, which writes to it: no status
				// may be sent on it any more.
				s.broken = true
				s.finish("the stream failed")
				return fmt.Errorf("wal: stream: %w", m.err)
			case m.done:
				return s.finish("the timeline ended")
			}
			if err := s.handle(m.data); err != nil {
				s.finish("the stream failed")
				return err
			}
		case res := <-s.uploads:
			s.applied(res)
			s.startUpload(false)
			if err := s.status(false); err != nil {
				return err
			}
		case <-flushTick.C:
			s.startUpload(true)
		case <-statusTick.C:
			if time.Since(lastHeard) > s.a.cfg.Timeout {
				s.finish("the server is silent")
				return fmt.Errorf("wal: stream: nothing heard from the server for %s", time.Since(lastHeard).Round(time.Second))
			}
			if err := s.status(true); err != nil {
				return err
			}
		}
	}
}

// handle takes one CopyData payload: WAL, or a keepalive.
func (s *streamer) handle(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	switch b[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(b[1:])
		if err != nil {
			return fmt.Errorf("wal: stream: %w", err)
		}
		s.heard(pg.LSN(k.ServerWALEnd))
		if k.ReplyRequested {
			return s.status(false)
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(b[1:])
		if err != nil {
			return fmt.Errorf("wal: stream: %w", err)
		}
		s.heard(pg.LSN(x.ServerWALEnd))
		return s.receive(pg.LSN(x.WALStart), x.WALData)
	}
	return nil
}

func (s *streamer) heard(end pg.LSN) {
	if end > s.server {
		s.server = end
		s.a.mu.Lock()
		s.a.server = max(s.a.server, end)
		s.a.mu.Unlock()
	}
}

// receive appends WAL that starts at pos to the segments in memory.
func (s *streamer) receive(pos pg.LSN, data []byte) error {
	last := s.pending[len(s.pending)-1]
	if want := last.start() + pg.LSN(len(last.data)); pos != want {
		return fmt.Errorf("wal: stream: WAL at %v, expected %v", pos, want)
	}
	completed := false
	for len(data) > 0 {
		if last.full() {
			last = &segment{tli: last.tli, no: last.no + 1, data: make([]byte, 0, SegmentSize)}
			s.pending = append(s.pending, last)
		}
		n := min(len(data), SegmentSize-len(last.data))
		last.data = append(last.data, data[:n]...)
		data = data[n:]
		completed = completed || last.full()
	}
	end := last.start() + pg.LSN(len(last.data))
	s.a.mu.Lock()
	s.a.received = end
	s.a.arrivals = append(s.a.arrivals, arrival{end: end, at: time.Now()})
	s.a.mu.Unlock()
	if completed || s.a.cfg.Synchronous {
		s.startUpload(true)
	}
	return nil
}

// startUpload stores everything received and not stored yet, unless an
// upload runs or one failed a moment ago. A piece is stored only when due
// (the flush ticker, a completed segment, synchronous mode) or when
// the previous upload was slow and data waits.
func (s *streamer) startUpload(due bool) {
	if s.ops != nil || time.Now().Before(s.retryAt) {
		return
	}
	var ops []uploadOp
	for _, seg := range s.pending {
		switch {
		case seg.full() && seg.durable < SegmentSize:
			// A whole segment already stored stays pending while no byte
			// of the next has come (after a WAL switch on an idle
			// server): it is not stored again.
			ops = append(ops, uploadOp{seg: seg, data: seg.data, old: seg.pieces})
		case len(seg.data) > seg.durable && (due || s.a.cfg.Synchronous):
			ops = append(ops, uploadOp{seg: seg, off: seg.durable, data: seg.data[seg.durable:],
				piece: pieceName(seg.name(), int64(seg.durable))})
		}
	}
	if len(ops) == 0 {
		return
	}
	s.ops = ops
	go func() { s.uploads <- s.a.store(ops) }()
}

// applied records what an upload stored.
func (s *streamer) applied(res uploadResult) {
	for _, op := range s.ops[:res.done] {
		op.seg.durable = op.off + len(op.data)
		if op.piece == "" {
			op.seg.pieces = nil
		} else {
			op.seg.pieces = append(op.seg.pieces, op.piece)
		}
	}
	s.ops = nil
	for len(s.pending) > 1 && s.pending[0].durable == SegmentSize {
		s.pending = s.pending[1:]
	}
	first := s.pending[0]
	s.a.setArchived(first.start() + pg.LSN(first.durable))
	if res.err != nil {
		s.a.m.errors.WithLabelValues("upload").Inc()
		s.log.Warn("storing WAL failed; trying again", "err", res.err, "pause", retryPause)
		s.retryAt = time.Now().Add(retryPause)
	}
}

// status tells the server what is received and what the repository
// holds: the slot then keeps everything after the latter, and a commit
// that waits for this archiver as a synchronous standby is released.
func (s *streamer) status(reply bool) error {
	if s.broken {
		return nil
	}
	s.a.mu.Lock()
	written, flushed := s.a.received, s.a.archived
	s.a.mu.Unlock()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(max(written, flushed)),
		WALFlushPosition: pglogrepl.LSN(flushed),
		WALApplyPosition: pglogrepl.LSN(flushed),
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("wal: send status: %w", err)
	}
	return nil
}

// finish stores what was received, within Config.Timeout: it waits for
// the upload that runs, then stores the rest, and tells the server.
func (s *streamer) finish(why string) error {
	deadline := time.Now().Add(s.a.cfg.Timeout)
	for time.Now().Before(deadline) {
		if s.ops == nil {
			s.retryAt = time.Time{}
			s.startUpload(true)
			if s.ops == nil {
				break // nothing left
			}
		}
		select {
		case res := <-s.uploads:
			s.applied(res)
			if res.err != nil {
				s.log.Warn("could not store WAL before the stream ended", "why", why, "err", res.err)
				return nil
			}
		case <-time.After(time.Until(deadline)):
		}
	}
	if s.ops != nil {
		s.log.Warn("gave up storing WAL before the stream ended", "why", why, "timeout", s.a.cfg.Timeout)
		s.applied(<-s.uploads) // a store is bounded by the timeout too
	}
	_ = s.status(false)
	_, archived := s.a.Archived()
	s.log.Info("stream ended", "why", why, "archived", archived)
	return nil
}

// setArchived records that the repository holds the WAL up to pos.
func (a *Archiver) setArchived(pos pg.LSN) {
	a.mu.Lock()
	if pos > a.archived {
		a.archived = pos
	}
	i := 0
	for i < len(a.arrivals) && a.arrivals[i].end <= a.archived {
		i++
	}
	a.arrivals = a.arrivals[i:]
	pos = a.archived
	a.mu.Unlock()
	a.m.archived.Set(float64(pos))
}

// store runs an upload's ops in order, each within Config.Timeout, and
// says how many were done.
func (a *Archiver) store(ops []uploadOp) uploadResult {
	for i, op := range ops {
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
		err := a.storeOp(ctx, op)
		cancel()
		if err != nil {
			return uploadResult{done: i, err: err}
		}
	}
	return uploadResult{done: len(ops)}
}

func (a *Archiver) storeOp(ctx context.Context, op uploadOp) error {
	dir := walDir(a.cfg.Cluster)
	name := dir + op.piece
	if op.piece == "" {
		name = dir + op.seg.name()
	}
	if err := a.cfg.Repo.Put(ctx, name, bytes.NewReader(op.data), int64(len(op.data))); err != nil {
		return err
	}
	a.m.bytes.Add(float64(len(op.data)))
	if op.piece != "" {
		a.m.pieces.Inc()
		return nil
	}
	a.m.segments.Inc()
	a.log.Debug("archived a segment", "segment", op.seg.name())
	if len(op.old) > 0 {
		olds := make([]string, len(op.old))
		for i, p := range op.old {
			olds[i] = dir + p
		}
		if err := a.cfg.Repo.Delete(ctx, olds...); err != nil {
			// Harmless: Fetch prefers the whole segment, and the next
			// archiver deletes them.
			a.m.errors.WithLabelValues("upload").Inc()
			a.log.Warn("could not delete a segment's pieces", "segment", op.seg.name(), "err", err)
		}
	}
	return nil
}
