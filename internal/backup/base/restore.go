package base

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"golang.org/x/sys/unix"
)

// RestoreConfig is what Restore needs.
type RestoreConfig struct {
	Repo    repo.Repository
	Cluster string
	// Label is the backup to restore: the newest complete one when empty.
	Label string
	// DataDir is where to restore: missing or empty, or, with Delta, a
	// data directory whose server is stopped.
	DataDir string
	// Delta keeps the files already in DataDir whose size and checksum
	// match the backup's, and deletes those the backup does not have.
	Delta bool
	// Workers fetch files in parallel: 2 when zero.
	Workers int
	// RestoreCommand is the restore_command recovery runs to fetch WAL
	// from the archive, with %f and %p: "haven backup wal-fetch %f %p".
	RestoreCommand string
	// Target is where recovery stops: the end of the archive when zero.
	Target Target
	// Owner is the user the restored files belong to (the user postgres
	// runs as); the restoring process's own user when empty.
	Owner  string
	Logger *slog.Logger
}

// Target is a recovery target: at most one of Time, LSN, XID and Name.
type Target struct {
	// Time stops recovery after the last transaction that committed at
	// or before it (recovery_target_time, inclusive).
	Time time.Time
	// LSN stops recovery at this WAL position (recovery_target_lsn).
	LSN string
	// XID stops recovery after this transaction (recovery_target_xid).
	XID string
	// Name stops recovery at the restore point of this name, made with
	// pg_create_restore_point (recovery_target_name).
	Name string
	// Exclusive stops just before the target instead of just after it
	// (recovery_target_inclusive = off); not for Name.
	Exclusive bool
}

// settings returns the recovery_target_* settings for t.
func (t Target) settings() ([][2]string, error) {
	var s [][2]string
	if !t.Time.IsZero() {
		s = append(s, [2]string{"recovery_target_time", t.Time.UTC().Format("2006-01-02 15:04:05.999999") + "+00"})
	}
	if t.LSN != "" {
		s = append(s, [2]string{"recovery_target_lsn", t.LSN})
	}
	if t.XID != "" {
		if _, err := strconv.ParseUint(t.XID, 10, 64); err != nil {
			return nil, fmt.Errorf("recovery target xid %q is not a transaction id", t.XID)
		}
		s = append(s, [2]string{"recovery_target_xid", t.XID})
	}
	if t.Name != "" {
		s = append(s, [2]string{"recovery_target_name", t.Name})
	}
	if len(s) > 1 {
		return nil, fmt.Errorf("more than one recovery target (%s and %s)", s[0][0], s[1][0])
	}
	if len(s) == 1 {
		s = append(s, [2]string{"recovery_target_inclusive", strconv.FormatBool(!t.Exclusive)},
			[2]string{"recovery_target_action", "promote"})
	}
	return s, nil
}

// RestoreStats says what a restore did.
type RestoreStats struct {
	Files, Reused int
	// Bytes is the size of the restored data directory's files, Fetched
	// what came from the repository (compressed), Written what was
	// written (Bytes less the reused files).
	Bytes, Fetched, Written int64
}

// Restore puts a base backup into cfg.DataDir, ready to start: every
// file fetched, decompressed and checked against its checksum, then the
// recovery settings (restore_command, the target) appended to
// postgresql.auto.conf, recovery.signal, and global/pg_control last, so
// that a restore that stops half-way leaves a directory PostgreSQL
// refuses to start. A file whose checksum or size does not match ends the
// restore with an error that names it.
func Restore(ctx context.Context, cfg RestoreConfig) (*Manifest, RestoreStats, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rs := &restorer{cfg: cfg, log: cfg.Logger.With("component", "backup")}
	m, err := rs.restore(ctx)
	if err != nil {
		return nil, rs.stats, fmt.Errorf("base: restore %s into %s: %w", cfg.Cluster, cfg.DataDir, err)
	}
	return m, rs.stats, nil
}

type restorer struct {
	cfg      RestoreConfig
	log      *slog.Logger
	uid, gid int
	mu       sync.Mutex
	stats    RestoreStats
}

const pgControl = "global/pg_control"

func (rs *restorer) restore(ctx context.Context) (*Manifest, error) {
	cfg := rs.cfg
	if cfg.RestoreCommand == "" {
		return nil, errors.New("no restore_command: recovery needs the archive's WAL")
	}
	targets, err := cfg.Target.settings()
	if err != nil {
		return nil, err
	}
	rs.uid, rs.gid = -1, -1
	if cfg.Owner != "" {
		u, err := user.Lookup(cfg.Owner)
		if err != nil {
			return nil, err
		}
		rs.uid, _ = strconv.Atoi(u.Uid)
		rs.gid, _ = strconv.Atoi(u.Gid)
	}
	m, err := Find(ctx, cfg.Repo, cfg.Cluster, cfg.Label)
	if err != nil {
		return nil, err
	}
	ms, err := chain(ctx, cfg.Repo, m)
	if err != nil {
		return nil, err
	}
	if err := rs.prepare(m); err != nil {
		return nil, err
	}
	rs.log.Info("restore started", "label", m.Label, "data_dir", cfg.DataDir, "delta", cfg.Delta, "target", targets)
	var files []File
	var control *File
	for _, f := range m.Files {
		if f.Path == pgControl {
			control = &f
			continue
		}
		files = append(files, f)
	}
	if control == nil {
		return nil, fmt.Errorf("backup %s has no %s", m.Label, pgControl)
	}
	err = parallel(ctx, cfg.Workers, files, func(ctx context.Context, d *decoders, f File) error {
		return rs.restoreFile(ctx, d, ms, m, f)
	})
	if err != nil {
		return nil, err
	}
	if err := syncFiles(ctx, cfg.Workers, cfg.DataDir, files); err != nil {
		return nil, err
	}
	if err := rs.writeRecovery(m, targets); err != nil {
		return nil, err
	}
	if err := parallel(ctx, 1, []File{*control}, func(ctx context.Context, d *decoders, f File) error {
		return rs.restoreFile(ctx, d, ms, m, f)
	}); err != nil {
		return nil, err
	}
	if err := syncFiles(ctx, 1, cfg.DataDir, []File{*control}); err != nil {
		return nil, err
	}
	if err := syncDirs(cfg.DataDir, m.Dirs); err != nil {
		return nil, err
	}
	rs.log.Info("restore complete", "label", m.Label, "files", rs.stats.Files, "reused", rs.stats.Reused, "bytes", rs.stats.Bytes)
	return m, nil
}

// prepare makes the data directory and its directories, refuses a
// directory that is not empty (without Delta) or whose server runs, and,
// with Delta, removes pg_control first, then whatever the backup does not
// hold.
func (rs *restorer) prepare(m *Manifest) error {
	dir := rs.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(es) > 0 && !rs.cfg.Delta {
		return fmt.Errorf("%s is not empty (it holds %s): restore into an empty directory, or use delta", dir, es[0].Name())
	}
	if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
		return fmt.Errorf("%s holds postmaster.pid: stop the server before a delta restore", dir)
	}
	if err := rs.chown(dir); err != nil {
		return err
	}
	if rs.cfg.Delta && len(es) > 0 {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(pgControl))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := rs.removeExtra(m); err != nil {
			return err
		}
	}
	for _, d := range m.Dirs {
		p := filepath.Join(dir, filepath.FromSlash(d.Path))
		if err := os.MkdirAll(p, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(p, d.Mode.Perm()); err != nil {
			return err
		}
		if err := rs.chown(p); err != nil {
			return err
		}
	}
	return nil
}

// removeExtra deletes what the data directory holds and the backup does
// not: a delta restore leaves exactly the backup's files (and no old WAL
// in pg_wal for recovery to trip over).
func (rs *restorer) removeExtra(m *Manifest) error {
	keep := map[string]bool{}
	for _, d := range m.Dirs {
		keep[d.Path] = true
	}
	for _, f := range m.Files {
		keep[f.Path] = true
	}
	root := rs.cfg.DataDir
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." || keep[rel] {
			return nil
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// restoreFile writes f, unless (Delta) the file there already matches.
func (rs *restorer) restoreFile(ctx context.Context, d *decoders, ms map[string]*Manifest, m *Manifest, f File) error {
	p := filepath.Join(rs.cfg.DataDir, filepath.FromSlash(f.Path))
	if rs.cfg.Delta && matches(p, f) {
		rs.count(f, 0, true)
		return rs.finish(p, f)
	}
	holder := ms[m.holder(f)]
	obj := fileObject(m.Cluster, holder.Label, f.Path, holder.Compression)
	rc, err := rs.cfg.Repo.Get(ctx, obj)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	defer rc.Close()
	fetched := &countingReader{r: rc}
	dec, err := d.get(holder.Compression)
	if err != nil {
		return err
	}
	r, err := dec.wrap(fetched)
	if err != nil {
		return fmt.Errorf("%s (%s): %w", f.Path, obj, err)
	}
	out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err == nil {
		err = checkContent(f, n, h.Sum(nil))
	}
	if err == nil {
		// Start writing the file back now, without waiting: the sync
		// pass after the last file (syncFiles) then finds it on the
		// disk, instead of each worker waiting for the disk here.
		startWriteback(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("%s (%s in %s): %w", f.Path, obj, rs.cfg.Repo, err)
	}
	rs.count(f, fetched.n, false)
	return rs.finish(p, f)
}

// checkContent compares what was read of f with its size and checksum.
func checkContent(f File, n int64, sum []byte) error {
	if n != f.Size {
		return fmt.Errorf("holds %d bytes, the manifest says %d: the backup is damaged", n, f.Size)
	}
	if got := hex.EncodeToString(sum); got != f.SHA256 {
		return fmt.Errorf("checksum %s, the manifest says %s: the backup is damaged", got, f.SHA256)
	}
	return nil
}

// matches reports whether the file at p has f's size and checksum.
func matches(p string, f File) bool {
	in, err := os.Open(p)
	if err != nil {
		return false
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() != f.Size {
		return false
	}
	h := sha256.New()
	n, err := io.Copy(h, in)
	return err == nil && checkContent(f, n, h.Sum(nil)) == nil
}

func (rs *restorer) count(f File, fetched int64, reused bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.stats.Files++
	rs.stats.Bytes += f.Size
	rs.stats.Fetched += fetched
	if reused {
		rs.stats.Reused++
	} else {
		rs.stats.Written += f.Size
	}
}

// finish gives a restored file its mode, owner and modification time.
func (rs *restorer) finish(p string, f File) error {
	if err := os.Chmod(p, f.Mode.Perm()); err != nil {
		return err
	}
	if err := rs.chown(p); err != nil {
		return err
	}
	t := time.Unix(0, f.MTime)
	return os.Chtimes(p, t, t)
}

func (rs *restorer) chown(p string) error {
	if rs.uid < 0 {
		return nil
	}
	return os.Lchown(p, rs.uid, rs.gid)
}

// writeRecovery appends the recovery settings to postgresql.auto.conf
// (read after postgresql.conf, so they win) and writes recovery.signal.
func (rs *restorer) writeRecovery(m *Manifest, targets [][2]string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n# Written by haven's restore of backup %s.\n", m.Label)
	for _, kv := range append([][2]string{{"restore_command", rs.cfg.RestoreCommand}}, targets...) {
		fmt.Fprintf(&b, "%s = '%s'\n", kv[0], strings.ReplaceAll(kv[1], "'", "''"))
	}
	auto := filepath.Join(rs.cfg.DataDir, "postgresql.auto.conf")
	f, err := os.OpenFile(auto, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := rs.chown(auto); err != nil {
		return err
	}
	sig := filepath.Join(rs.cfg.DataDir, "recovery.signal")
	if err := os.WriteFile(sig, nil, 0o600); err != nil {
		return err
	}
	return rs.chown(sig)
}

// startWriteback asks the kernel to start writing f's dirty pages to the
// disk and returns at once (sync_file_range with SYNC_FILE_RANGE_WRITE,
// as PostgreSQL's initdb -S does before its fsync pass). It is a hint:
// durability comes from syncFiles, so an error is left to it.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// syncFiles fsyncs the restored files under root with n workers. Their
// writeback started as each was written, so this mostly waits for what
// is still in flight, and the file system commits many files' metadata
// in one journal transaction, where an fsync after every file made each
// worker wait for the disk once per file.
func syncFiles(ctx context.Context, n int, root string, files []File) error {
	return parallel(ctx, n, files, func(ctx context.Context, _ *decoders, f File) error {
		p := filepath.Join(root, filepath.FromSlash(f.Path))
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		err = in.Sync()
		if cerr := in.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", f.Path, err)
		}
		return nil
	})
}

// syncDirs makes the restored directory entries durable.
func syncDirs(root string, dirs []Dir) error {
	for _, d := range append([]Dir{{Path: "."}}, dirs...) {
		f, err := os.Open(filepath.Join(root, filepath.FromSlash(d.Path)))
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// decoders holds one worker's decoder per compression.
type decoders struct{ m map[Compression]*decoder }

func (d *decoders) get(c Compression) (*decoder, error) {
	if dec := d.m[c]; dec != nil {
		return dec, nil
	}
	dec, err := newDecoder(c)
	if err != nil {
		return nil, err
	}
	d.m[c] = dec
	return dec, nil
}

func (d *decoders) close() {
	for _, dec := range d.m {
		dec.close()
	}
}

// parallel runs fn over files with n workers, each with its own
// decoders, and returns the error of the first file, in the order of
// files, that failed; the first failure stops the rest.
func parallel(ctx context.Context, n int, files []File, fn func(context.Context, *decoders, File) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &decoders{m: map[Compression]*decoder{}}
			defer d.close()
			for i := range next {
				if err := fn(ctx, d, files[i]); err != nil {
					errs[i] = err
					cancel()
				}
			}
		}()
	}
	for i := range files {
		select {
		case next <- i:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}
