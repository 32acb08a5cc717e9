package pg

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrNotShutDown is wrapped by ShutdownCheckpoint's error when the data
// directory was not shut down cleanly as a primary (it runs, crashed, or
// was a replica): its WAL does not end with a shutdown checkpoint.
var ErrNotShutDown = errors.New("not shut down cleanly as a primary")

// WALRecord is one record of the WAL, as pg_waldump prints it.
type WALRecord struct {
	// Rmgr is the resource manager that wrote it: XLOG, Transaction,
	// Heap, Btree, Standby...
	Rmgr string
	// LSN is where it starts, End where the next record may start (or
	// the page boundary it ends at).
	LSN, End LSN
	// Xid is the transaction it belongs to (0 for none).
	Xid uint32
	// Desc is pg_waldump's description, the record type first:
	// "CHECKPOINT_SHUTDOWN redo 0/...", "COMMIT 2025-...", "INSERT off 3 ...".
	Desc string
}

// Kind is the record's resource manager and type: "XLOG/CHECKPOINT_SHUTDOWN",
// "Transaction/COMMIT", "Heap/INSERT".
func (r WALRecord) Kind() string {
	typ, _, _ := strings.Cut(r.Desc, " ")
	return r.Rmgr + "/" + strings.TrimSuffix(typ, ";")
}

// EndsTransaction reports whether r commits, aborts or prepares a
// transaction: WAL that holds one holds the outcome of a transaction,
// where any other record (a checkpoint, a standby snapshot, the changes
// of a transaction that never committed) holds none.
func (r WALRecord) EndsTransaction() bool {
	if r.Rmgr != "Transaction" {
		return false
	}
	typ, _, _ := strings.Cut(r.Desc, " ")
	return strings.HasPrefix(typ, "COMMIT") || strings.HasPrefix(typ, "ABORT") || strings.HasPrefix(typ, "PREPARE")
}

// WALSummary says what a stretch of WAL holds: how many bytes and
// records, how many of them end a transaction, and the records by kind.
type WALSummary struct {
	From, To     LSN
	Records      int
	Transactions int
	Kinds        map[string]int
}

// Bytes is the length of the stretch.
func (w WALSummary) Bytes() uint64 {
	if w.To < w.From {
		return 0
	}
	return uint64(w.To - w.From)
}

// String lists the kinds of records, most frequent first:
// "XLOG/CHECKPOINT_SHUTDOWN×2, Standby/RUNNING_XACTS".
func (w WALSummary) String() string {
	kinds := slices.Sorted(maps.Keys(w.Kinds))
	slices.SortStableFunc(kinds, func(a, b string) int { return w.Kinds[b] - w.Kinds[a] })
	var out []string
	for _, k := range kinds {
		if n := w.Kinds[k]; n > 1 {
			out = append(out, fmt.Sprintf("%s×%d", k, n))
		} else {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return "nothing"
	}
	return strings.Join(out, ", ")
}

// summarizeWAL sums up recs, the WAL from from on.
func summarizeWAL(from LSN, recs []WALRecord) WALSummary {
	w := WALSummary{From: from, To: from, Kinds: map[string]int{}}
	for _, r := range recs {
		w.Records++
		w.Kinds[r.Kind()]++
		if r.EndsTransaction() {
			w.Transactions++
		}
		w.To = max(w.To, r.End)
	}
	return w
}

// ShutdownCheckpoint returns where the last record of a data directory
// that was shut down cleanly as a primary starts and ends: its shutdown
// checkpoint, which its fast or smart shutdown sent to every connected
// replica before postgres exited. A replica that has received up to end
// has all of its history, and the stopped primary can follow it, once
// promoted, without pg_rewind; one that stopped short of it forks a
// timeline that the old primary's checkpoint is not on. It reads
// pg_controldata, and the record itself with pg_waldump. When the data
// directory was not shut down cleanly as a primary, the error wraps
// ErrNotShutDown.
func (s *Server) ShutdownCheckpoint(ctx context.Context) (start, end LSN, err error) {
	cd, err := s.ControlData(ctx)
	if err != nil {
		return 0, 0, err
	}
	if cd.State != "shut down" {
		return cd.Checkpoint, 0, fmt.Errorf("pg: shutdown checkpoint of %s: %w (pg_control says %q)", s.cfg.dataDir, ErrNotShutDown, cd.State)
	}
	recs, err := s.readWAL(ctx, cd, cd.Timeline, cd.Checkpoint, 1)
	if err == nil && (len(recs) == 0 || recs[0].LSN != cd.Checkpoint || recs[0].Kind() != "XLOG/CHECKPOINT_SHUTDOWN") {
		err = fmt.Errorf("pg_waldump shows %+v there, not a shutdown checkpoint", recs)
	}
	if err != nil {
		return cd.Checkpoint, 0, fmt.Errorf("pg: shutdown checkpoint of %s at %s: %w", s.cfg.dataDir, cd.Checkpoint, err)
	}
	return cd.Checkpoint, recs[0].End, nil
}

// summarizeLocalWAL reads the stopped data directory's own WAL on timeline
// from from to its end, for Rewind to say what it discards.
func (s *Server) summarizeLocalWAL(ctx context.Context, cd ControlData, timeline uint32, from LSN) (WALSummary, error) {
	recs, err := s.readWAL(ctx, cd, timeline, from, 0)
	if err != nil {
		return WALSummary{}, err
	}
	return summarizeWAL(from, recs), nil
}

// walRecordRE matches a record of pg_waldump's output (PostgreSQL 15 on).
var walRecordRE = regexp.MustCompile(`^rmgr: (\S+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F]+/[0-9A-F]+, desc: (.*)$`)

// readWAL runs pg_waldump on the data directory's pg_wal from from on
// timeline, for n records (0: to the end of the WAL, where pg_waldump
// stops with an error that is the expected end). cd gives the WAL's page
// and segment sizes.
func (s *Server) readWAL(ctx context.Context, cd ControlData, timeline uint32, from LSN, n int) ([]WALRecord, error) {
	page, err1 := strconv.ParseUint(cd.Fields["WAL block size"], 10, 32)
	seg, err2 := strconv.ParseUint(cd.Fields["Bytes per WAL segment"], 10, 64)
	if err := errors.Join(err1, err2); err != nil || page == 0 || seg == 0 {
		return nil, fmt.Errorf("pg_controldata gives no WAL page or segment size: %v", err)
	}
	args := []string{"-p", filepath.Join(s.cfg.dataDir, "pg_wal"), "-t", strconv.FormatUint(uint64(timeline), 10), "-s", from.String()}
	if n > 0 {
		args = append(args, "-n", strconv.Itoa(n))
	}
	cmd := s.command(ctx, "pg_waldump", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	recs, err := parseWAL(string(out), page, seg)
	if err != nil {
		return nil, err
	}
	if runErr != nil && (n > 0 || len(recs) == 0) {
		return recs, fmt.Errorf("pg_waldump: %w: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return recs, nil
}

// parseWAL parses pg_waldump's records; page and seg are the WAL's page
// and segment sizes, to find where each record ends.
func parseWAL(out string, page, seg uint64) ([]WALRecord, error) {
	var recs []WALRecord
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		m := walRecordRE.FindStringSubmatch(line)
		if m == nil {
			return recs, fmt.Errorf("pg_waldump printed %q, not a record", line)
		}
		tot, err1 := strconv.ParseUint(m[2], 10, 32)
		xid, err2 := strconv.ParseUint(m[3], 10, 32)
		lsn, err3 := ParseLSN(m[4])
		if err := errors.Join(err1, err2, err3); err != nil {
			return recs, fmt.Errorf("pg_waldump printed %q: %w", line, err)
		}
		recs = append(recs, WALRecord{
			Rmgr: m[1], LSN: lsn, End: walRecordEnd(lsn, tot, page, seg),
			Xid: uint32(xid), Desc: m[5],
		})
	}
	return recs, nil
}

// The sizes of the header at the start of each WAL page, and of the longer
// one at the start of each segment (PostgreSQL's SizeOfXLogShortPHD and
// SizeOfXLogLongPHD, MAXALIGNed).
const (
	walPageHeader = 24
	walSegHeader  = 40
)

// walRecordEnd is where a record of total bytes that starts at start ends,
// as PostgreSQL computes the end of an inserted record (and so the
// position a replica has flushed once it has received it): records take
// MAXALIGNed space, and a record that spans pages skips each page's header.
// A record that fills its last page exactly ends at the page boundary.
func walRecordEnd(start LSN, total, page, seg uint64) LSN {
	pos := uint64(start)
	left := (total + 7) &^ 7
	for {
		room := page - pos%page
		if left <= room {
			return LSN(pos + left)
		}
		left -= room
		pos += room
		if pos%seg == 0 {
			pos += walSegHeader
		} else {
			pos += walPageHeader
		}
	}
}
