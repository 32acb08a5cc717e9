package wal

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/pg"
)

// SegmentSize is the only WAL segment size the archive holds: initdb's
// default, 16 MiB. The archiver refuses a server with another size.
const SegmentSize = 16 << 20

// segNo is the number of the segment that holds l.
func segNo(l pg.LSN) uint64 { return uint64(l) / SegmentSize }

// segStart is the first position of the segment that holds l.
func segStart(l pg.LSN) pg.LSN { return l - l%SegmentSize }

// segmentsPerXLogID is how many segments one "log" of a file name holds.
const segmentsPerXLogID = 0x100000000 / SegmentSize

// SegmentName is the file name PostgreSQL gives segment segNo of timeline
// tli: 24 hex digits, "000000010000000000000003".
func SegmentName(tli uint32, segNo uint64) string {
	return fmt.Sprintf("%08X%08X%08X", tli, segNo/segmentsPerXLogID, segNo%segmentsPerXLogID)
}

// ParseSegmentName is SegmentName's inverse.
func ParseSegmentName(name string) (tli uint32, segNo uint64, err error) {
	if len(name) != 24 || strings.ToUpper(name) != name {
		return 0, 0, fmt.Errorf("wal: %q is not a segment name", name)
	}
	t, err1 := strconv.ParseUint(name[:8], 16, 32)
	hi, err2 := strconv.ParseUint(name[8:16], 16, 32)
	lo, err3 := strconv.ParseUint(name[16:], 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || t == 0 || lo >= segmentsPerXLogID {
		return 0, 0, fmt.Errorf("wal: %q is not a segment name", name)
	}
	return uint32(t), hi*segmentsPerXLogID + lo, nil
}

// HistoryName is the name of timeline tli's history file,
// "00000002.history".
func HistoryName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// isHistoryName reports whether name is a timeline history file's name.
func isHistoryName(name string) bool {
	_, ok := parseHistoryName(name)
	return ok
}

// parseHistoryName is HistoryName's inverse.
func parseHistoryName(name string) (uint32, bool) {
	t, ok := strings.CutSuffix(name, ".history")
	if !ok || len(t) != 8 {
		return 0, false
	}
	tli, err := strconv.ParseUint(t, 16, 32)
	return uint32(tli), err == nil
}

// pieceSuffix ends the name of a piece of a segment.
const pieceSuffix = ".partial"

// pieceName is the name of the piece of segment seg that starts at byte
// offset off: "000000010000000000000003.00A2C000.partial". Offsets have 8
// hex digits, so the pieces of a segment sort in the order of their
// offsets, after the segment's whole object.
func pieceName(seg string, off int64) string {
	return fmt.Sprintf("%s.%08X%s", seg, off, pieceSuffix)
}

// parsePieceName is pieceName's inverse.
func parsePieceName(name string) (seg string, off int64, err error) {
	rest, ok := strings.CutSuffix(name, pieceSuffix)
	seg, hex, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(hex) != 8 {
		return "", 0, fmt.Errorf("wal: %q is not a piece name", name)
	}
	if _, _, err := ParseSegmentName(seg); err != nil {
		return "", 0, fmt.Errorf("wal: %q is not a piece name", name)
	}
	o, err := strconv.ParseUint(hex, 16, 32)
	if err != nil || o >= SegmentSize {
		return "", 0, fmt.Errorf("wal: %q is not a piece name", name)
	}
	return seg, int64(o), nil
}

// walDir is the directory of cluster's WAL archive in a repository.
func walDir(cluster string) string { return cluster + "/wal/" }

// piece is one stored piece of a segment.
type piece struct {
	name      string
	off, size int64
}

// contiguous returns how many bytes from offset 0 the pieces (sorted by
// offset) hold without a gap, and the pieces that make them up. Pieces
// may overlap (an archiver that restarted uploads again what it could not
// tell was stored); their bytes then agree.
func contiguous(ps []piece) (int64, []piece) {
	var end int64
	var used []piece
	for _, p := range ps {
		if p.off > end {
			break
		}
		if p.off+p.size > end {
			end = p.off + p.size
			used = append(used, p)
		}
	}
	return end, used
}

// archiveEnd is where a cluster's archive ends: the timeline and position
// after the last byte stored, with the pieces of the segment that holds
// it when that segment is not whole. ok is false for an empty archive.
type archiveEnd struct {
	ok     bool
	tli    uint32
	pos    pg.LSN
	pieces []piece
	// leftovers are pieces of segments stored whole, which an archiver
	// killed between storing a segment and deleting its pieces left.
	leftovers []string
}

// scanEnd lists the archive of cluster and finds where it ends. Names sort
// by timeline, then segment, then piece offset, so the last segment named
// is the end.
func scanEnd(ctx context.Context, r repo.Repository, cluster string) (archiveEnd, error) {
	var end archiveEnd
	var lastSeg string
	var whole bool
	var ps []piece
	err := r.List(ctx, walDir(cluster), func(info repo.Info) error {
		name := path.Base(info.Name)
		seg := name
		var off int64 = -1
		if strings.HasSuffix(name, pieceSuffix) {
			s, o, err := parsePieceName(name)
			if err != nil {
				return nil // not ours
			}
			seg, off = s, o
		} else if _, _, err := ParseSegmentName(name); err != nil {
			return nil // a history file, or not ours
		}
		if seg != lastSeg {
			if whole {
				for _, p := range ps {
					end.leftovers = append(end.leftovers, p.name)
				}
			}
			lastSeg, whole, ps = seg, false, nil
		}
		if off < 0 {
			whole = true
		} else {
			ps = append(ps, piece{name: info.Name, off: off, size: info.Size})
		}
		return nil
	})
	if err != nil {
		return end, fmt.Errorf("wal: list %s in %s: %w", walDir(cluster), r, err)
	}
	if lastSeg == "" {
		return end, nil
	}
	tli, no, _ := ParseSegmentName(lastSeg)
	end.ok, end.tli = true, tli
	start := pg.LSN(no * SegmentSize)
	if whole {
		end.pos = start + SegmentSize
		for _, p := range ps {
			end.leftovers = append(end.leftovers, p.name)
		}
		return end, nil
	}
	n, _ := contiguous(ps)
	end.pos = start + pg.LSN(n)
	end.pieces = ps
	return end, nil
}
