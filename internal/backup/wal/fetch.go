package wal

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/pg"
)

// Fetch writes the WAL file name (a segment's or a timeline history
// file's name, as restore_command's %f gives it) of cluster from r to w.
//
// A segment comes from its whole object when there is one. Otherwise it
// is assembled from its pieces, which must start at offset 0 and have no
// gap, and is padded with zeros to SegmentSize: PostgreSQL accepts only a
// whole-sized segment from restore_command, and reads the zeros after the
// last record as the end of the WAL, as it does in a file that
// pg_receivewal left as .partial. That last, partial segment is what lets
// a restore reach the last second archived rather than the last segment
// filled.
//
// The error wraps repo.ErrNotExist when the archive has no such file, the
// answer restore_command gives at the end of the archive.
func Fetch(ctx context.Context, r repo.Repository, cluster, name string, w io.Writer) error {
	if err := fetch(ctx, r, cluster, name, w); err != nil {
		return fmt.Errorf("wal: fetch %s from %s: %w", name, r, err)
	}
	return nil
}

func fetch(ctx context.Context, r repo.Repository, cluster, name string, w io.Writer) error {
	_, _, segErr := ParseSegmentName(name)
	if segErr != nil && !isHistoryName(name) {
		return fmt.Errorf("not a WAL segment or timeline history file name")
	}
	obj := walDir(cluster) + name
	rc, err := r.Get(ctx, obj)
	if err == nil {
		defer rc.Close()
		n, err := io.Copy(w, rc)
		if err != nil {
			return err
		}
		if segErr == nil && n != SegmentSize {
			return fmt.Errorf("%s holds %d bytes, not %d", obj, n, SegmentSize)
		}
		return nil
	}
	if !repo.IsNotExist(err) || segErr != nil {
		return err
	}
	var ps []piece
	err = r.List(ctx, obj+".", func(info repo.Info) error {
		seg, off, err := parsePieceName(strings.TrimPrefix(info.Name, walDir(cluster)))
		if err != nil || seg != name {
			return nil
		}
		ps = append(ps, piece{name: info.Name, off: off, size: info.Size})
		return nil
	})
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		return repo.ErrNotExist
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
	end, used := contiguous(ps)
	if end == 0 {
		return fmt.Errorf("%s: its pieces do not start at offset 0", obj)
	}
	if len(used) < len(ps) && ps[len(ps)-1].off > end {
		return fmt.Errorf("%s: its pieces have a gap at offset %d", obj, end)
	}
	var at int64
	for _, p := range used {
		if err := copyPiece(ctx, r, p, at, w); err != nil {
			return err
		}
		at = p.off + p.size
	}
	_, err = io.CopyN(w, zeros{}, SegmentSize-end)
	return err
}

// copyPiece writes the bytes of p from offset at (p.off <= at) on.
func copyPiece(ctx context.Context, r repo.Repository, p piece, at int64, w io.Writer) error {
	rc, err := r.Get(ctx, p.name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, at-p.off); err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	want := p.off + p.size - at
	n, err := io.Copy(w, rc)
	if err == nil && n != want {
		err = fmt.Errorf("read %d bytes, want %d", n, want)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	return nil
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// FetchFile is Fetch into the file dst, as restore_command's %p names it,
// written whole or not at all (repo.WriteFile), so that PostgreSQL never
// reads a part of it. It returns an error wrapping repo.ErrNotExist, and
// leaves no file, when the archive has no such WAL file.
func FetchFile(ctx context.Context, r repo.Repository, cluster, name, dst string) error {
	if err := repo.WriteFile(dst, func(w io.Writer) error { return fetch(ctx, r, cluster, name, w) }); err != nil {
		return fmt.Errorf("wal: fetch %s from %s into %s: %w", name, r, dst, err)
	}
	return nil
}

// Holds reports whether cluster's archive in r holds all of timeline
// tli's WAL from from to to: every segment between them whole, or the
// last one in pieces from offset 0 that reach to. A base backup needs
// this range to become consistent. The error names the first segment
// that is missing or too short, and wraps repo.ErrNotExist.
//
// A segment of a later timeline stands for tli's when that timeline's
// history says tli went on past the WAL needed in it: PostgreSQL copies
// the segment in which a timeline ends to the next timeline's name, and
// recovery reads that copy first. That is where a backup's last WAL is
// when its primary failed over before the archive had it from tli.
func Holds(ctx context.Context, r repo.Repository, cluster string, tli uint32, from, to pg.LSN) error {
	if to <= from {
		return nil
	}
	a, err := readArchive(ctx, r, cluster)
	if err != nil {
		return err
	}
	last := segNo(to - 1)
	for no := segNo(from); no <= last; no++ {
		need := int64(SegmentSize)
		if no == last {
			need = int64(to - pg.LSN(no*SegmentSize))
		}
		end := a.held(tli, no)
		if end >= need {
			continue
		}
		ok, err := a.heldLater(ctx, r, tli, no, pg.LSN(no*SegmentSize)+pg.LSN(need), need)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("wal: %s holds %s only to offset %d of %d: %w", r, SegmentName(tli, no), end, need, repo.ErrNotExist)
		}
	}
	return nil
}

// archiveListing is what a WAL archive holds: whole segments, pieces of
// segments, and the timelines that have a history file.
type archiveListing struct {
	cluster   string
	whole     map[string]bool
	pieces    map[string][]piece
	histories []uint32
}

func readArchive(ctx context.Context, r repo.Repository, cluster string) (*archiveListing, error) {
	a := &archiveListing{cluster: cluster, whole: map[string]bool{}, pieces: map[string][]piece{}}
	err := r.List(ctx, walDir(cluster), func(info repo.Info) error {
		name := strings.TrimPrefix(info.Name, walDir(cluster))
		if seg, off, err := parsePieceName(name); err == nil {
			a.pieces[seg] = append(a.pieces[seg], piece{name: info.Name, off: off, size: info.Size})
		} else if _, _, err := ParseSegmentName(name); err == nil && info.Size == SegmentSize {
			a.whole[name] = true
		} else if t, ok := parseHistoryName(name); ok {
			a.histories = append(a.histories, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("wal: list %s in %s: %w", walDir(cluster), r, err)
	}
	slices.Sort(a.histories)
	return a, nil
}

// held is how far from its start the archive holds segment no of
// timeline tli without a gap.
func (a *archiveListing) held(tli uint32, no uint64) int64 {
	seg := SegmentName(tli, no)
	if a.whole[seg] {
		return SegmentSize
	}
	p := a.pieces[seg]
	sort.Slice(p, func(i, j int) bool { return p[i].off < p[j].off })
	end, _ := contiguous(p)
	return end
}

// heldLater reports whether a timeline after tli, which forked from it at
// or after upTo, holds segment no to offset need.
func (a *archiveListing) heldLater(ctx context.Context, r repo.Repository, tli uint32, no uint64, upTo pg.LSN, need int64) (bool, error) {
	for _, t := range a.histories {
		if t <= tli || a.held(t, no) < need {
			continue
		}
		var hist strings.Builder
		if err := fetch(ctx, r, a.cluster, HistoryName(t), &hist); err != nil {
			return false, fmt.Errorf("wal: read %s in %s: %w", HistoryName(t), r, err)
		}
		if _, forked, err := successor([]byte(hist.String()), tli, t); err == nil && forked >= upTo {
			return true, nil
		}
	}
	return false, nil
}
