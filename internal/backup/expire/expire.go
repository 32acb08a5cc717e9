// Package expire removes a cluster's base backups and WAL that its
// retention policy no longer keeps.
//
// # What is kept
//
// Backups expire in groups: a full backup with the incremental ones built
// on it (an incremental's Prior, followed back to a full backup). Of n
// full backups, oldest first, group i expires when both hold:
//
//   - it is not among the newest RetainCount full backups (i < n -
//     RetainCount), and
//   - Retain is zero, or the next full backup (i+1) stopped at least
//     Retain before now: the moments of the last Retain can then be
//     restored from it and later ones, so group i is no longer needed
//     for point-in-time restore within the window.
//
// The second rule reads "older than retain" the way pgBackRest's
// time-based retention does: a full backup older than Retain is kept
// while it is the only one that reaches back Retain. retain: 7d then
// means that every moment of the last 7 days can be restored.
//
// A kept backup never loses what it needs: a backup that a kept one
// refers to (its Prior, or the holder of a file it did not copy) is kept
// too, whatever its group (and so on, for what that one refers to). An
// incremental therefore never outlives its parent; with the chains Take
// builds (each incremental on the newest backup, its files held by its
// own group) a group goes or stays whole.
//
// WAL is removed only before the start of the oldest kept backup (the
// segment that holds its start LSN is kept), on every timeline: no kept
// backup reads WAL before its own start, and a restore from any kept
// backup can reach the archive's end. Timeline history files are always
// kept (they are small, and recovery reads them to follow timelines). With
// no complete backup, no WAL is removed.
//
// A backup that never completed (stopped or killed before its manifest
// was written) is removed once a later backup completed and none of its
// objects was written in the last hour (one backup runs at a time; the
// hour guards one that runs beside another).
//
// # Order of removal
//
// Manifests first, newest backup first, so that a backup is never listed
// as complete while any of its files, or the files of a backup it refers
// to, may be gone; then each expired backup's files; then WAL. A run that
// stops half-way leaves backups without manifests, which the next run
// removes as incomplete.
package expire

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
)

// Policy is database.backup's retain and retain_count.
type Policy struct {
	// Retain is how far back a restore must reach; zero: only
	// RetainCount decides.
	Retain time.Duration
	// RetainCount full backups (with their incrementals) are always
	// kept; at least 1.
	RetainCount int
}

// Config is what Run needs.
type Config struct {
	Repo    repo.Repository
	Cluster string
	Policy  Policy
	// Now is the time the policy is applied at; time.Now when zero.
	Now time.Time
	// DryRun computes the plan and removes nothing.
	DryRun bool
	Logger *slog.Logger
}

// Plan is what an expiry removes, or, dry, would remove.
type Plan struct {
	// Keep and Expire are the complete backups kept and removed, oldest
	// first.
	Keep, Expire []*base.Manifest
	// Incomplete are the labels of backups without a manifest that are
	// removed.
	Incomplete []string
	// Objects and Bytes count the backups' stored objects removed
	// (Expire's and Incomplete's).
	Objects int
	Bytes   int64
	// WALBefore is the position before which WAL is removed (the start of
	// the segment holding the oldest kept backup's start); zero when no
	// WAL is.
	WALBefore pg.LSN
	// WAL are the WAL objects removed (segments and their pieces), and
	// WALBytes their size.
	WAL      []string
	WALBytes int64
}

// incompleteGrace is how long ago an incomplete backup's newest object
// must have been written for it to be removed.
const incompleteGrace = time.Hour

// Run applies cfg.Policy to cfg.Cluster's backups and WAL in cfg.Repo:
// it computes the plan, and unless DryRun, removes what the plan says,
// in the package doc's order. It returns the plan, also when removing
// fails part-way (the error says what failed).
func Run(ctx context.Context, cfg Config) (*Plan, error) {
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("component", "backup", "cluster", cfg.Cluster, "repository", cfg.Repo.String())
	p, objects, err := plan(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("expire: %s in %s: %w", cfg.Cluster, cfg.Repo, err)
	}
	if cfg.DryRun {
		return p, nil
	}
	if err := apply(ctx, cfg.Repo, cfg.Cluster, p, objects, log); err != nil {
		return p, fmt.Errorf("expire: %s in %s: %w", cfg.Cluster, cfg.Repo, err)
	}
	return p, nil
}

// decide splits ms (complete backups, oldest first) into those kept and
// those expired under p at now.
func decide(ms []*base.Manifest, p Policy, now time.Time) (keep, expire []*base.Manifest) {
	byLabel := map[string]*base.Manifest{}
	group := map[string]int{} // label -> index of its full backup among fulls
	var fulls []*base.Manifest
	for _, m := range ms {
		byLabel[m.Label] = m
		if m.Kind != "incremental" {
			group[m.Label] = len(fulls)
			fulls = append(fulls, m)
			continue
		}
		if g, ok := group[m.Prior]; ok {
			group[m.Label] = g
		} else {
			group[m.Label] = max(len(fulls)-1, 0) // no known prior: the group before it
		}
	}
	expired := func(g int) bool {
		if g >= len(fulls)-p.RetainCount {
			return false
		}
		return p.Retain <= 0 || !fulls[g+1].StopTime.After(now.Add(-p.Retain))
	}
	kept := map[string]bool{}
	for _, m := range ms {
		if !expired(group[m.Label]) {
			kept[m.Label] = true
		}
	}
	// What a kept backup refers to is kept, until nothing changes.
	for changed := true; changed; {
		changed = false
		for _, m := range ms {
			if !kept[m.Label] {
				continue
			}
			refs := []string{m.Prior}
			for _, f := range m.Files {
				refs = append(refs, f.Ref)
			}
			for _, l := range refs {
				if l != "" && byLabel[l] != nil && !kept[l] {
					kept[l] = true
					changed = true
				}
			}
		}
	}
	for _, m := range ms {
		if kept[m.Label] {
			keep = append(keep, m)
		} else {
			expire = append(expire, m)
		}
	}
	return keep, expire
}

// plan computes what Run removes, and the names of the backups' objects
// to remove (manifests excluded), by label.
func plan(ctx context.Context, cfg Config) (*Plan, map[string][]string, error) {
	if cfg.Policy.RetainCount < 1 {
		return nil, nil, fmt.Errorf("retain_count %d: at least one full backup must be kept", cfg.Policy.RetainCount)
	}
	ms, err := base.List(ctx, cfg.Repo, cfg.Cluster)
	if err != nil {
		return nil, nil, err
	}
	p := &Plan{}
	p.Keep, p.Expire = decide(ms, cfg.Policy, cfg.Now)

	// The objects of every backup, complete or not, by label.
	type stored struct {
		names    []string
		bytes    int64
		newest   time.Time
		manifest bool
	}
	backups := map[string]*stored{}
	prefix := cfg.Cluster + "/base/"
	err = cfg.Repo.List(ctx, prefix, func(i repo.Info) error {
		label, rest, ok := strings.Cut(strings.TrimPrefix(i.Name, prefix), "/")
		if !ok {
			return nil
		}
		b := backups[label]
		if b == nil {
			b = &stored{}
			backups[label] = b
		}
		if rest == "manifest.json" {
			b.manifest = true
		} else {
			b.names = append(b.names, i.Name)
		}
		b.bytes += i.Size
		if i.Modified.After(b.newest) {
			b.newest = i.Modified
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	objects := map[string][]string{}
	for _, m := range p.Expire {
		if b := backups[m.Label]; b != nil {
			objects[m.Label] = b.names
			p.Objects += len(b.names) + 1
			p.Bytes += b.bytes
		}
	}
	if len(ms) > 0 {
		newest := ms[len(ms)-1].Label
		for label, b := range backups {
			if b.manifest || label >= newest || cfg.Now.Sub(b.newest) < incompleteGrace {
				continue
			}
			p.Incomplete = append(p.Incomplete, label)
			objects[label] = b.names
			p.Objects += len(b.names)
			p.Bytes += b.bytes
		}
		slices.Sort(p.Incomplete)
	}

	if len(p.Keep) == 0 {
		return p, objects, nil
	}
	oldest := p.Keep[0].Start()
	for _, m := range p.Keep {
		oldest = min(oldest, m.Start())
	}
	p.WALBefore = oldest - oldest%wal.SegmentSize
	before := uint64(p.WALBefore) / wal.SegmentSize
	walPrefix := cfg.Cluster + "/wal/"
	err = cfg.Repo.List(ctx, walPrefix, func(i repo.Info) error {
		if no, ok := segmentOf(path.Base(i.Name)); ok && no < before {
			p.WAL = append(p.WAL, i.Name)
			p.WALBytes += i.Size
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", walPrefix, err)
	}
	return p, objects, nil
}

// segmentOf returns the segment number of a WAL object's name: a whole
// segment ("000000010000000000000003") or a piece of one
// ("000000010000000000000003.00A2C000.partial"). History files and names
// that are not the archive's are not segments.
func segmentOf(name string) (uint64, bool) {
	seg, rest, piece := strings.Cut(name, ".")
	if piece {
		off, ok := strings.CutSuffix(rest, ".partial")
		if !ok || len(off) != 8 || strings.Trim(off, "0123456789ABCDEF") != "" {
			return 0, false
		}
	}
	_, no, err := wal.ParseSegmentName(seg)
	return no, err == nil
}

// deleteBatch is how many objects one Delete call removes.
const deleteBatch = 1000

func deleteAll(ctx context.Context, r repo.Repository, names []string) error {
	for len(names) > 0 {
		n := min(len(names), deleteBatch)
		if err := r.Delete(ctx, names[:n]...); err != nil {
			return err
		}
		names = names[n:]
	}
	return nil
}

func apply(ctx context.Context, r repo.Repository, cluster string, p *Plan, objects map[string][]string, log *slog.Logger) error {
	// Manifests first, newest first: a backup stays listed only while
	// what it refers to is all there.
	for _, m := range slices.Backward(p.Expire) {
		if err := r.Delete(ctx, cluster+"/base/"+m.Label+"/manifest.json"); err != nil {
			return fmt.Errorf("remove the manifest of %s: %w", m.Label, err)
		}
	}
	for _, m := range p.Expire {
		if err := deleteAll(ctx, r, objects[m.Label]); err != nil {
			return fmt.Errorf("remove the files of %s: %w", m.Label, err)
		}
		log.Info("expired a backup", "label", m.Label, "kind", m.Kind, "stop_time", m.StopTime, "files", len(objects[m.Label]))
	}
	for _, label := range p.Incomplete {
		if err := deleteAll(ctx, r, objects[label]); err != nil {
			return fmt.Errorf("remove the incomplete backup %s: %w", label, err)
		}
		log.Info("removed an incomplete backup", "label", label, "files", len(objects[label]))
	}
	if err := deleteAll(ctx, r, p.WAL); err != nil {
		return fmt.Errorf("remove WAL before %s: %w", p.WALBefore, err)
	}
	if len(p.WAL) > 0 {
		log.Info("expired WAL", "before", p.WALBefore.String(), "objects", len(p.WAL), "bytes", p.WALBytes)
	}
	return nil
}
