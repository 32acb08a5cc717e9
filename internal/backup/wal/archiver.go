package wal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultSlot is the physical replication slot an Archiver streams from
// when Config.Slot is empty.
const DefaultSlot = "haven_archive"

// DefaultApplicationName is the application_name an Archiver connects
// with when Config.ApplicationName is empty.
const DefaultApplicationName = "haven_archive"

// maxPending is how many segments an Archiver holds in memory while the
// repository is slow or down; then it stops reading from the server, and
// the slot keeps the WAL.
const maxPending = 4

// statusInterval is how often an Archiver sends a status update without
// news, asking for a reply: the reply is how it knows the server is there.
const statusInterval = 10 * time.Second

// retryPause is the pause after a failed upload, and the first pause
// after a failed session (doubling up to maxRetryPause).
const (
	retryPause    = 250 * time.Millisecond
	maxRetryPause = 5 * time.Second
)

// Config configures an Archiver. Conn, Repo and Cluster are required.
type Config struct {
	// Conn reaches the server to archive, as a user with the REPLICATION
	// attribute. The Archiver adds replication=true and its
	// application_name.
	Conn *pgconn.Config
	// Repo is the repository the archive goes to.
	Repo repo.Repository
	// Cluster names the cluster in the repository: the archive is under
	// "<Cluster>/wal/".
	Cluster string
	// Slot is the physical replication slot the Archiver creates if it is
	// missing and streams from. Empty: DefaultSlot.
	Slot string
	// ApplicationName is what the Archiver connects as: the name to put in
	// synchronous_standby_names. Empty: DefaultApplicationName.
	ApplicationName string
	// Synchronous makes the Archiver store what it receives as soon as the
	// previous upload ends, rather than every FlushInterval: for a server
	// whose commits wait for it. Either way it reports as flushed only
	// what the repository holds.
	Synchronous bool
	// FlushInterval is the longest that received WAL waits before it is
	// stored. Zero: one second.
	FlushInterval time.Duration
	// Timeout bounds each connection attempt, command and upload, and the
	// silence of the server. Zero: 30 seconds.
	Timeout time.Duration
	// Logger receives the Archiver's log, with component=wal-archive.
	Logger *slog.Logger
	// Registerer receives the metrics; nil: not exported.
	Registerer prometheus.Registerer
}

// Archiver streams a server's WAL into a repository, the way
// pg_receivewal does into a directory. See the package documentation.
type Archiver struct {
	cfg  Config
	log  *slog.Logger
	m    *metrics
	conn *pgconn.Config

	mu       sync.Mutex
	tli      uint32
	archived pg.LSN
	received pg.LSN
	server   pg.LSN    // the server's WAL end, as last heard
	arrivals []arrival // received and not yet archived, oldest first
	// walGone is set when the server no longer has the WAL where the
	// archive ends: the next session starts where the slot keeps WAL.
	walGone bool
}

// arrival is when the WAL up to end arrived.
type arrival struct {
	end pg.LSN
	at  time.Time
}

// New checks cfg and returns an Archiver; it connects to nothing.
func New(cfg Config) (*Archiver, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("wal: archiver: no connection configuration")
	case cfg.Repo == nil:
		return nil, errors.New("wal: archiver: no repository")
	case cfg.Cluster == "" || strings.Contains(cfg.Cluster, "/"):
		return nil, fmt.Errorf("wal: archiver: cluster name %q is empty or has a slash", cfg.Cluster)
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = DefaultApplicationName
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	conn := cfg.Conn.Copy() // with a copy of RuntimeParams, when it has any
	if conn.RuntimeParams == nil {
		conn.RuntimeParams = map[string]string{}
	}
	conn.RuntimeParams["replication"] = "true"
	conn.RuntimeParams["application_name"] = cfg.ApplicationName
	a := &Archiver{
		cfg:  cfg,
		conn: conn,
		log:  cfg.Logger.With("component", "wal-archive", "cluster", cfg.Cluster, "repo", cfg.Repo.String()),
	}
	m, err := newMetrics(cfg.Registerer, a.lagBytes, a.lagSeconds)
	if err != nil {
		return nil, fmt.Errorf("wal: archiver: %w", err)
	}
	a.m = m
	return a, nil
}

// ApplicationName is the application_name the Archiver connects with: in
// synchronous_standby_names, it makes commits wait until the repository
// holds them.
func (a *Archiver) ApplicationName() string { return a.cfg.ApplicationName }

// Archived returns the timeline the Archiver streams and the position up
// to which the repository holds the WAL.
func (a *Archiver) Archived() (uint32, pg.LSN) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tli, a.archived
}

// Lag returns how many bytes of WAL the server has written that the
// repository lacks, as last heard, and how long the oldest byte received
// and not yet stored has waited: in synchronous mode, how long the oldest
// waiting commit has waited.
func (a *Archiver) Lag() (uint64, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var n uint64
	if a.server > a.archived {
		n = uint64(a.server - a.archived)
	}
	if len(a.arrivals) == 0 {
		return n, 0
	}
	return n, time.Since(a.arrivals[0].at)
}

func (a *Archiver) lagBytes() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.server <= a.archived {
		return 0
	}
	return float64(a.server - a.archived)
}

func (a *Archiver) lagSeconds() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.arrivals) == 0 {
		return 0
	}
	return time.Since(a.arrivals[0].at).Seconds()
}

// Run archives until ctx ends, then stores what it has received (within
// Config.Timeout) and returns nil. A failed connection or stream is
// logged, counted and tried again, from where the repository ends.
func (a *Archiver) Run(ctx context.Context) error {
	pause := retryPause
	var lastErr string
	for {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil { // a timeline ended: go on with the next at once
			pause, lastErr = retryPause, ""
			continue
		}
		a.m.errors.WithLabelValues("stream").Inc()
		if walRemoved(err) {
			a.mu.Lock()
			a.walGone = true
			a.mu.Unlock()
		}
		if err.Error() != lastErr {
			a.log.Warn("archiving stopped; trying again", "err", err, "pause", pause)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, maxRetryPause)
	}
}

// segment is one segment being received: its bytes from its start, and
// how many of them the repository holds under its own name.
type segment struct {
	tli     uint32
	no      uint64
	data    []byte // capacity SegmentSize, never reallocated
	durable int
	pieces  []string // stored pieces, deleted once the whole segment is
}

func (s *segment) name() string  { return SegmentName(s.tli, s.no) }
func (s *segment) start() pg.LSN { return pg.LSN(s.no * SegmentSize) }
func (s *segment) full() bool    { return len(s.data) == SegmentSize }

// session is one replication connection: it returns nil when the timeline
// it streams ends, an error when anything fails, and nil after a graceful
// stop when ctx ends.
func (a *Archiver) session(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, a.conn)
	if err != nil {
		return fmt.Errorf("wal: connect: %w", err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(c)
	}()
	start, err := a.prepare(cctx, conn)
	if err != nil {
		return err
	}
	return a.stream(ctx, conn, start)
}

// prepare checks the server, makes the slot, archives the timeline
// history and returns the segment to stream, with what the repository
// already holds of it.
func (a *Archiver) prepare(ctx context.Context, conn *pgconn.PgConn) (*segment, error) {
	if size, err := showSegmentSize(ctx, conn); err != nil {
		return nil, err
	} else if size != SegmentSize {
		return nil, fmt.Errorf("wal: the server's WAL segments hold %d bytes; the archive takes only %d", size, SegmentSize)
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("wal: IDENTIFY_SYSTEM: %w", err)
	}
	serverTLI := uint32(sys.Timeline)
	slotTLI, slotLSN, err := a.ensureSlot(ctx, conn)
	if err != nil {
		return nil, err
	}
	end, err := scanEnd(ctx, a.cfg.Repo, a.cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if len(end.leftovers) > 0 {
		if err := a.cfg.Repo.Delete(ctx, end.leftovers...); err != nil {
			a.log.Warn("could not delete pieces of whole segments", "pieces", len(end.leftovers), "err", err)
		}
	}
	tli, pos := end.tli, end.pos
	if !end.ok {
		tli, pos = slotTLI, segStart(slotLSN)
		if tli == 0 || pos == 0 {
			tli, pos = serverTLI, segStart(pg.LSN(sys.XLogPos))
		}
		a.log.Info("the archive is empty; starting at the slot", "slot", a.cfg.Slot, "timeline", tli, "lsn", pos)
	}
	if tli > serverTLI || (tli == serverTLI && pos > pg.LSN(sys.XLogPos)) {
		return nil, fmt.Errorf("wal: the archive ends at timeline %d, %v, ahead of the server (timeline %d, %v): it is not this cluster's primary, or the cluster was restored to an earlier point", tli, pos, serverTLI, pg.LSN(sys.XLogPos))
	}
	if serverTLI > 1 {
		if err := a.archiveHistory(ctx, conn, tli, serverTLI); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	gone := a.walGone
	a.walGone = false
	a.mu.Unlock()
	if gone && end.ok && slotLSN > 0 && segStart(slotLSN) > pos {
		// Nothing can fill the archive from its end to where the slot
		// keeps WAL: the server removed it before this slot kept it (an
		// archiver stopped before storing all it had received, then a
		// promotion or a slot dropped). Say so, and go on from the slot:
		// backups taken from here on restore; earlier ones only to pos.
		a.m.gaps.Inc()
		a.log.Error("the archive has a gap: the server no longer has the WAL from where the archive ends to where this slot keeps it; backups taken before it restore only up to where the archive ends; take a new base backup",
			"timeline", tli, "archive_end", pos, "slot", a.cfg.Slot, "resumes_at", segStart(slotLSN), "server_timeline", serverTLI)
		tli, pos, end.ok = serverTLI, segStart(slotLSN), false
	}
	if tli < serverTLI {
		hist, err := pglogrepl.TimelineHistory(ctx, conn, int32(serverTLI))
		if err != nil {
			return nil, fmt.Errorf("wal: TIMELINE_HISTORY %d: %w", serverTLI, err)
		}
		next, switchLSN, err := successor(hist.Content, tli, serverTLI)
		if err != nil {
			return nil, fmt.Errorf("wal: timeline %d's history: %w", serverTLI, err)
		}
		if pos >= switchLSN {
			a.log.Info("timeline ended; following the next", "timeline", tli, "switch", switchLSN, "next", next)
			if end.ok && pos > switchLSN {
				// The old primary wrote, and its archiver stored, WAL that
				// the promoted replica never received: transactions that
				// were not acknowledged (with a synchronous archive, a
				// commit waits for a replica too). It stays in the archive
				// as the old timeline's; the new timeline's copy of this
				// segment, which a restore reads, ends at the switch.
				a.log.Warn("the archive holds WAL of the old timeline past where the new one branched: the old primary's unacknowledged writes, kept under the old timeline",
					"timeline", tli, "archived", pos, "switch", switchLSN, "next", next)
			}
			// The next timeline's first segment starts with the bytes of
			// this one's last: it is streamed and stored whole, under the
			// next timeline's name.
			tli = next
			end.ok = false
			pos = switchLSN
		}
	}
	seg := &segment{tli: tli, no: segNo(pos), data: make([]byte, 0, SegmentSize)}
	if end.ok && end.tli == tli && segNo(end.pos) == seg.no && end.pos > seg.start() {
		seg.durable = int(end.pos - seg.start())
		for _, p := range end.pieces {
			seg.pieces = append(seg.pieces, path.Base(p.name))
		}
	}
	a.mu.Lock()
	a.tli = tli
	if pos > a.archived {
		a.archived = pos
	}
	a.received = seg.start()
	a.mu.Unlock()
	a.m.archived.Set(float64(pos))
	a.m.timeline.Set(float64(tli))
	return seg, nil
}

// ensureSlot reads the slot, creating it (reserving WAL now) if it is
// missing, and returns where it keeps WAL from.
func (a *Archiver) ensureSlot(ctx context.Context, conn *pgconn.PgConn) (uint32, pg.LSN, error) {
	for range 2 {
		res, err := conn.Exec(ctx, "READ_REPLICATION_SLOT "+a.cfg.Slot).ReadAll()
		if err != nil {
			return 0, 0, fmt.Errorf("wal: READ_REPLICATION_SLOT %s: %w", a.cfg.Slot, err)
		}
		if len(res) == 1 && len(res[0].Rows) == 1 && len(res[0].Rows[0]) == 3 && res[0].Rows[0][0] != nil {
			row := res[0].Rows[0]
			if string(row[0]) != "physical" {
				return 0, 0, fmt.Errorf("wal: slot %s is a %s slot, not a physical one", a.cfg.Slot, row[0])
			}
			var lsn pg.LSN
			var tli uint64
			if row[1] != nil {
				if lsn, err = pg.ParseLSN(string(row[1])); err != nil {
					return 0, 0, fmt.Errorf("wal: slot %s: %w", a.cfg.Slot, err)
				}
			}
			if row[2] != nil {
				if tli, err = strconv.ParseUint(string(row[2]), 10, 32); err != nil {
					return 0, 0, fmt.Errorf("wal: slot %s: %w", a.cfg.Slot, err)
				}
			}
			return uint32(tli), lsn, nil
		}
		_, err = conn.Exec(ctx, "CREATE_REPLICATION_SLOT "+a.cfg.Slot+" PHYSICAL RESERVE_WAL").ReadAll()
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") { // made by another at the same time
			return 0, 0, fmt.Errorf("wal: create slot %s: %w", a.cfg.Slot, err)
		}
		if err == nil {
			a.log.Info("created the replication slot", "slot", a.cfg.Slot)
		}
	}
	return 0, 0, fmt.Errorf("wal: slot %s: not found after creating it", a.cfg.Slot)
}

// showSegmentSize asks the server for wal_segment_size.
func showSegmentSize(ctx context.Context, conn *pgconn.PgConn) (int64, error) {
	res, err := conn.Exec(ctx, "SHOW wal_segment_size").ReadAll()
	if err != nil {
		return 0, fmt.Errorf("wal: SHOW wal_segment_size: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, errors.New("wal: SHOW wal_segment_size: no value")
	}
	v := string(res[0].Rows[0][0])
	n, unit := strings.TrimRightFunc(v, func(r rune) bool { return r < '0' || r > '9' }), strings.TrimLeft(v, "0123456789")
	size, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("wal: wal_segment_size %q: %w", v, err)
	}
	switch unit {
	case "MB":
		size <<= 20
	case "GB":
		size <<= 30
	case "kB":
		size <<= 10
	default:
		return 0, fmt.Errorf("wal: wal_segment_size %q: unknown unit", v)
	}
	return size, nil
}

// archiveHistory stores the history files of timelines from+1 to to that
// the repository lacks, oldest first, so that a restore that sees a
// timeline's segment can also find how the timeline began.
func (a *Archiver) archiveHistory(ctx context.Context, conn *pgconn.PgConn, from, to uint32) error {
	for t := max(from+1, 2); t <= to; t++ {
		name := walDir(a.cfg.Cluster) + HistoryName(t)
		if _, err := a.cfg.Repo.Stat(ctx, name); err == nil {
			continue
		} else if !repo.IsNotExist(err) {
			return fmt.Errorf("wal: %w", err)
		}
		hist, err := pglogrepl.TimelineHistory(ctx, conn, int32(t))
		if err != nil {
			return fmt.Errorf("wal: TIMELINE_HISTORY %d: %w", t, err)
		}
		if err := a.cfg.Repo.Put(ctx, name, strings.NewReader(string(hist.Content)), int64(len(hist.Content))); err != nil {
			a.m.errors.WithLabelValues("upload").Inc()
			return fmt.Errorf("wal: %w", err)
		}
		a.m.histories.Inc()
		a.log.Info("archived a timeline history file", "file", HistoryName(t))
	}
	return nil
}

// successor reads a timeline history file (of timeline last) and returns
// the timeline that follows tli and the position where it begins.
func successor(history []byte, tli, last uint32) (uint32, pg.LSN, error) {
	type entry struct {
		tli uint32
		end pg.LSN
	}
	var es []entry
	for _, line := range strings.Split(string(history), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		t, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("line %q: %w", line, err)
		}
		l, err := pg.ParseLSN(f[1])
		if err != nil {
			return 0, 0, fmt.Errorf("line %q: %w", line, err)
		}
		es = append(es, entry{uint32(t), l})
	}
	for i, e := range es {
		if e.tli == tli {
			next := last
			if i+1 < len(es) {
				next = es[i+1].tli
			}
			return next, e.end, nil
		}
	}
	return 0, 0, fmt.Errorf("timeline %d is not an ancestor of timeline %d", tli, last)
}

// walRemoved reports whether err is the server's "requested WAL segment
// ... has already been removed" (undefined_file): streaming from there
// can never succeed.
func walRemoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "58P01"
}
