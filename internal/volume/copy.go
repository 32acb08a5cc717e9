package volume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
)

// manifestName is the copy's list of files, written after the files of a
// pass: the copy is the manifest's files, whatever else the repository
// holds under the prefix.
const manifestName = "manifest.json"

// Manifest is a copy of a volume: every file it holds, as of a pass.
type Manifest struct {
	Volume string `json:"volume"`
	// Started is when the pass that wrote it started: every file
	// written before it is in the copy (the files' recovery point).
	Started time.Time `json:"started"`
	// Finished is when the pass ended.
	Finished time.Time        `json:"finished"`
	Files    map[string]Entry `json:"files"`
}

// Entry is one copied file.
type Entry struct {
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Mode    uint32    `json:"mode"`
	SHA256  string    `json:"sha256"`
}

// CopyConfig is a volume's copy to a repository.
type CopyConfig struct {
	Volume string
	// Dir is the volume as this node has it mounted.
	Dir string
	// Store is the repository, Prefix the copy's place in it
	// ("volumes/NAME/").
	Store  repo.Repository
	Prefix string
	// Every is the time between the start of two passes.
	Every time.Duration
	// Mounted, when set, says whether Dir is the volume now: a pass
	// over the empty directory under a mount that is gone would delete
	// the whole copy.
	Mounted func() error
	Logger  *slog.Logger
}

// CopyStatus is a copy's state, as its copier last left it.
type CopyStatus struct {
	Target string `json:"target"`
	// Copying: this node holds the copy's lock and makes the passes.
	Copying bool `json:"copying"`
	// LastPass is when the last complete pass started: files written
	// before it are in the copy. Lag is now minus that, the files'
	// recovery point.
	LastPass     time.Time     `json:"last_pass"`
	Lag          time.Duration `json:"lag_ns"`
	PassDuration time.Duration `json:"pass_duration_ns"`
	Files        int           `json:"files"`
	Bytes        int64         `json:"bytes"`
	// Uploaded and Deleted are the last pass's work.
	Uploaded int    `json:"uploaded"`
	Deleted  int    `json:"deleted"`
	Err      string `json:"error,omitempty"`
	// Passes and Failures count since the agent started.
	Passes   int `json:"passes"`
	Failures int `json:"failures"`
}

// Copier copies a mounted volume's files to a repository, as the guide's
// rclone sync of the files to a bucket does: each pass uploads the files
// that are new or changed (by size and modification time) since the last,
// deletes from the copy the files that are gone, and writes the manifest.
// The other region restores the files from it (Restore).
type Copier struct {
	cfg CopyConfig
	log *slog.Logger

	mu     sync.Mutex
	st     CopyStatus
	copied *Manifest // the copy as the last pass left it; nil until read
}

// NewCopier checks cfg; it copies nothing yet.
func NewCopier(cfg CopyConfig) (*Copier, error) {
	if cfg.Store == nil || cfg.Dir == "" {
		return nil, errors.New("volume: a copy needs a repository and the volume's mount")
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Copier{cfg: cfg, log: cfg.Logger.With("component", "volume-copy", "volume", cfg.Volume, "to", cfg.Store.String())}
	c.st.Target = cfg.Store.String()
	return c, nil
}

// Status returns the copy's state, its lag as of now.
func (c *Copier) Status() CopyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	if !st.LastPass.IsZero() {
		st.Lag = time.Since(st.LastPass)
	}
	return st
}

// SetCopying records whether this node holds the copy's lock.
func (c *Copier) SetCopying(on bool) {
	c.mu.Lock()
	c.st.Copying = on
	c.mu.Unlock()
}

// Run makes a pass every Every until ctx ends.
func (c *Copier) Run(ctx context.Context) error {
	for {
		start := time.Now()
		if err := c.Pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("volume copy pass failed: the next one tries again", "event", "volume", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(start.Add(c.cfg.Every))):
		}
	}
}

// Pass makes one pass: the copy then holds every file the volume held when
// the pass started.
func (c *Copier) Pass(ctx context.Context) error {
	start := time.Now()
	err := c.pass(ctx, start)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.st.Failures++
		c.st.Err = err.Error()
		return err
	}
	c.st.Passes++
	c.st.Err = ""
	return nil
}

// Forget drops the copy as this node last wrote it: another node may have
// made passes since (the copy's lock changed hands), so the next pass
// starts from the repository's manifest.
func (c *Copier) Forget() {
	c.mu.Lock()
	c.copied = nil
	c.mu.Unlock()
}

func (c *Copier) pass(ctx context.Context, start time.Time) error {
	if c.cfg.Mounted != nil {
		if err := c.cfg.Mounted(); err != nil {
			return fmt.Errorf("not copying: the volume is not mounted here: %w", err)
		}
	}
	prev, err := c.previous(ctx)
	if err != nil {
		return err
	}
	next := &Manifest{Volume: c.cfg.Volume, Started: start, Files: map[string]Entry{}}
	uploaded, failed := 0, 0
	firstFailure := ""
	var bytes int64
	err = filepath.WalkDir(c.cfg.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != c.cfg.Dir {
				return nil // deleted while the pass walked
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(c.cfg.Dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == probeDir || rel == ".trashcan" {
				return filepath.SkipDir // haven's probe files; GlusterFS's trash
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if old, ok := prev.Files[rel]; ok && old.Size == info.Size() && old.ModTime.Equal(info.ModTime()) {
			next.Files[rel] = old
			bytes += old.Size
			return nil
		}
		e, err := c.upload(ctx, p, rel, info)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// One file (growing while it is read, a name the
			// repository refuses) must not hold up the others: the
			// copy keeps its last version, if any, and the next pass
			// tries again.
			failed++
			if firstFailure == "" {
				firstFailure = err.Error()
			}
			if old, ok := prev.Files[rel]; ok {
				next.Files[rel] = old
				bytes += old.Size
			}
			return nil
		}
		next.Files[rel] = e
		uploaded++
		bytes += e.Size
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", c.cfg.Dir, err)
	}
	if len(next.Files) == 0 && len(prev.Files) > 0 {
		return fmt.Errorf("not copying: %s holds no file but the copy holds %d: an empty volume is not mirrored over its copy (if the volume was emptied on purpose, delete %s from the repository and the next pass starts a new copy)", c.cfg.Dir, len(prev.Files), path.Join(c.cfg.Prefix, manifestName))
	}
	var gone []string
	for rel := range prev.Files {
		if _, ok := next.Files[rel]; !ok {
			gone = append(gone, c.object(rel))
		}
	}
	next.Finished = time.Now()
	if err := c.putManifest(ctx, next); err != nil {
		return err
	}
	// Deleted after the manifest that no longer lists them: a restore
	// from the previous manifest never finds a file missing.
	if len(gone) > 0 {
		if err := c.cfg.Store.Delete(ctx, gone...); err != nil {
			c.log.Warn("volume copy: files deleted from the volume stay in the copy until the next pass", "err", err, "files", len(gone))
		}
	}
	c.mu.Lock()
	c.copied = next
	c.st.LastPass, c.st.PassDuration = start, next.Finished.Sub(start)
	c.st.Files, c.st.Bytes, c.st.Uploaded, c.st.Deleted = len(next.Files), bytes, uploaded, len(gone)
	c.mu.Unlock()
	if failed > 0 {
		return fmt.Errorf("%d files not copied this pass (their last copy, if any, stays): first: %s", failed, firstFailure)
	}
	if uploaded > 0 || len(gone) > 0 {
		c.log.Info("volume copied", "files", len(next.Files), "uploaded", uploaded, "deleted", len(gone), "took", next.Finished.Sub(start).Round(time.Millisecond))
	}
	return nil
}

// previous is the copy as the last pass left it: from memory, or from the
// repository when this node has not made a pass yet (another node made
// them, or the agent restarted).
func (c *Copier) previous(ctx context.Context) (*Manifest, error) {
	c.mu.Lock()
	m := c.copied
	c.mu.Unlock()
	if m != nil {
		return m, nil
	}
	m, err := ReadManifest(ctx, c.cfg.Store, c.cfg.Prefix)
	if errors.Is(err, repo.ErrNotExist) {
		return &Manifest{Files: map[string]Entry{}}, nil
	}
	return m, err
}

// CopyPrefix is where a volume's copy lives in its repository.
func CopyPrefix(cluster, volume string) string { return cluster + "/volumes/" + volume }

func (c *Copier) object(rel string) string { return path.Join(c.cfg.Prefix, "files", rel) }

// upload copies one file, hashing what it sends.
func (c *Copier) upload(ctx context.Context, p, rel string, info fs.FileInfo) (Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	h := sha256.New()
	// What the walk saw: a file that grows meanwhile (a log) is copied as
	// it was then, not refused for a length the store did not expect.
	body := io.TeeReader(io.LimitReader(f, info.Size()), h)
	if err := c.cfg.Store.Put(ctx, c.object(rel), body, info.Size()); err != nil {
		return Entry{}, fmt.Errorf("upload %s: %w", rel, err)
	}
	return Entry{Size: info.Size(), ModTime: info.ModTime(), Mode: uint32(info.Mode().Perm()), SHA256: sum(h)}, nil
}

func sum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func (c *Copier) putManifest(ctx context.Context, m *Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := c.cfg.Store.Put(ctx, path.Join(c.cfg.Prefix, manifestName), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("write the copy's manifest: %w", err)
	}
	return nil
}

// ReadManifest reads the copy of a volume at prefix in store.
func ReadManifest(ctx context.Context, store repo.Repository, prefix string) (*Manifest, error) {
	rc, err := store.Get(ctx, path.Join(prefix, manifestName))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(rc, 1<<30)).Decode(&m); err != nil {
		return nil, fmt.Errorf("read the copy's manifest in %s: %w", store, err)
	}
	if m.Files == nil {
		m.Files = map[string]Entry{}
	}
	return &m, nil
}

// RestoreStats counts what Restore did.
type RestoreStats struct {
	Files int
	Bytes int64
	// Started is the manifest's: the restored files are the volume's as
	// of then.
	Started time.Time
}

// Restore writes the copy of a volume at prefix in store into dir (a
// second region's volume, mounted): every file of its manifest, checked
// against its digest, written beside its place and renamed into it, with
// its mode and modification time. Files of dir that the copy does not
// hold are left alone.
func Restore(ctx context.Context, store repo.Repository, prefix, dir string) (RestoreStats, error) {
	m, err := ReadManifest(ctx, store, prefix)
	if errors.Is(err, repo.ErrNotExist) {
		return RestoreStats{}, fmt.Errorf("no copy under %s in the repository: no pass has completed yet (haven volume status shows the copy's passes), or the repository or cluster name is not the copy's: %w", prefix, err)
	}
	if err != nil {
		return RestoreStats{}, err
	}
	st := RestoreStats{Started: m.Started}
	var damaged []string
	for _, rel := range sortedKeys(m.Files) {
		e := m.Files[rel]
		if !fs.ValidPath(rel) || rel == "." {
			// A manifest is the repository's: one altered by someone
			// with access to it must not write outside dir.
			return st, fmt.Errorf("restore: the manifest names %q, which is not a path inside the volume: refusing the copy", rel)
		}
		err := restoreOne(ctx, store, path.Join(prefix, "files", rel), filepath.Join(dir, filepath.FromSlash(rel)), e)
		if errors.Is(err, errDamaged) {
			// A pass cut short (the region lost mid-pass) may have
			// replaced a file's object before the manifest that
			// describes it: the others are restored all the same.
			damaged = append(damaged, rel)
			continue
		}
		if err != nil {
			return st, fmt.Errorf("restore %s: %w", rel, err)
		}
		st.Files++
		st.Bytes += e.Size
	}
	if len(damaged) > 0 {
		return st, fmt.Errorf("%d files of the copy do not match the manifest's digests and were not restored (a pass cut short, or a damaged repository): %s", len(damaged), strings.Join(damaged[:min(len(damaged), 10)], ", "))
	}
	return st, nil
}

// errDamaged is an object that does not match its digest.
var errDamaged = errors.New("the copy's contents do not match its digest: the repository's object is damaged")

func restoreOne(ctx context.Context, store repo.Repository, name, dst string, e Entry) error {
	rc, err := store.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// Whole or not at all, as the repository writes its own files: a
	// damaged object leaves no file behind.
	err = repo.WriteFile(dst, func(w io.Writer) error {
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), rc); err != nil {
			return err
		}
		if sum(h) != e.SHA256 {
			return errDamaged
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := os.Chmod(dst, fs.FileMode(e.Mode)&fs.ModePerm); err != nil { // never setuid: the manifest is the repository's
		return err
	}
	return os.Chtimes(dst, e.ModTime, e.ModTime)
}
