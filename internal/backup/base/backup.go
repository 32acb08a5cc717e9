package base

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/jackc/pgx/v5"
)

// Config is what Take needs.
type Config struct {
	// Conn connects as a superuser to the server whose data directory is
	// DataDir, on this node: a replica by default (see the package doc).
	Conn    *pgx.ConnConfig
	DataDir string
	Repo    repo.Repository
	Cluster string
	// Compression of the stored files: lz4 when empty.
	Compression Compression
	// Workers copy files in parallel: 2 when zero.
	Workers int
	// Incremental copies only the files whose size or modification time
	// changed since the newest complete backup, and refers to that
	// backup's copies of the others. With no earlier backup of the same
	// system, the backup is full.
	Incremental bool
	// WALWait bounds how long Take waits, after pg_backup_stop, for the
	// archive to hold the WAL from the backup's start to its stop (one
	// minute when zero). A backup whose WAL is not archived is not
	// complete: it could not be restored.
	WALWait time.Duration
	Logger  *slog.Logger
	// now is the clock, for labels; time.Now when nil.
	now func() time.Time
}

// Take copies the data directory of a running PostgreSQL 15 or later into
// cfg.Repo as cluster's next base backup, and returns its manifest once
// written. A backup that fails or whose ctx ends has no manifest: it is
// not listed and never restored.
func Take(ctx context.Context, cfg Config) (*Manifest, error) {
	if cfg.Compression == "" {
		cfg.Compression = LZ4
	}
	if _, err := ParseCompression(string(cfg.Compression)); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.WALWait <= 0 {
		cfg.WALWait = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.Cluster == "" || strings.Contains(cfg.Cluster, "/") {
		return nil, fmt.Errorf("base: cluster name %q: want a name without slashes", cfg.Cluster)
	}
	b := &backup{cfg: cfg, log: cfg.Logger.With("component", "backup")}
	m, err := b.take(ctx)
	if err != nil {
		return nil, fmt.Errorf("base: backup of %s: %w", cfg.Cluster, err)
	}
	return m, nil
}

type backup struct {
	cfg   Config
	log   *slog.Logger
	m     *Manifest
	prior map[string]File // the previous backup's files, by path
}

var startTimelineRE = regexp.MustCompile(`(?m)^START TIMELINE: (\d+)$`)

func (b *backup) take(ctx context.Context) (*Manifest, error) {
	conn, err := pgx.ConnectConfig(ctx, b.cfg.Conn)
	if err != nil {
		return nil, err
	}
	// The backup lives as long as this session: closing it (or the
	// process dying) aborts a backup pg_backup_stop did not end.
	defer conn.Close(context.Background())

	m := &Manifest{Format: 1, Cluster: b.cfg.Cluster, Kind: "full", Compression: b.cfg.Compression}
	var dataDir string
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, pg_is_in_recovery(),
		(SELECT system_identifier::text FROM pg_control_system()), current_setting('data_directory')`).
		Scan(&m.PGVersion, &m.FromReplica, &m.SystemID, &dataDir)
	if err != nil {
		return nil, err
	}
	if m.PGVersion < 150000 {
		return nil, fmt.Errorf("server version %d: backups need PostgreSQL 15 or later (pg_backup_start)", m.PGVersion)
	}
	if !sameDir(dataDir, b.cfg.DataDir) {
		return nil, fmt.Errorf("the server's data directory is %s, not %s: a backup reads the files of the server it is connected to", dataDir, b.cfg.DataDir)
	}
	if err := b.checkTablespaces(); err != nil {
		return nil, err
	}
	if b.cfg.Incremental {
		if err := b.findPrior(ctx, m); err != nil {
			return nil, err
		}
	}
	now := b.cfg.now().UTC()
	m.Label = now.Format("20060102-150405.000") + map[bool]string{true: "I", false: "F"}[m.Kind == "incremental"]
	if _, err := b.cfg.Repo.Stat(ctx, manifestObject(m.Cluster, m.Label)); err == nil {
		return nil, fmt.Errorf("backup %s exists already", m.Label)
	}
	b.m = m
	log := b.log.With("label", m.Label)

	m.StartTime = now
	if err := conn.QueryRow(ctx, "SELECT pg_backup_start($1, true)::text", "haven "+m.Label).Scan(&m.StartLSN); err != nil {
		return nil, fmt.Errorf("pg_backup_start: %w", err)
	}
	log.Info("backup started", "start_lsn", m.StartLSN, "from_replica", m.FromReplica, "kind", m.Kind)
	if err := b.copyAll(ctx); err != nil {
		return nil, err
	}
	var label, spcmap string
	err = conn.QueryRow(ctx, "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)").Scan(&m.StopLSN, &label, &spcmap)
	if err != nil {
		return nil, fmt.Errorf("pg_backup_stop: %w", err)
	}
	m.StopTime = b.cfg.now().UTC()
	sm := startTimelineRE.FindStringSubmatch(label)
	if sm == nil {
		return nil, fmt.Errorf("pg_backup_stop's backup_label has no START TIMELINE:\n%s", label)
	}
	tli, _ := strconv.ParseUint(sm[1], 10, 32)
	m.Timeline = uint32(tli)
	for name, content := range map[string]string{"backup_label": label, "tablespace_map": spcmap} {
		if name == "tablespace_map" && content == "" {
			continue
		}
		f, err := b.storeBytes(ctx, name, []byte(content))
		if err != nil {
			return nil, err
		}
		m.Files = append(m.Files, f)
	}
	if err := b.waitArchived(ctx); err != nil {
		return nil, err
	}
	slices.SortFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if err := m.put(ctx, b.cfg.Repo); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	log.Info("backup complete", "stop_lsn", m.StopLSN, "files", len(m.Files), "bytes", m.Bytes, "copied_bytes", m.Copied, "stored_bytes", m.Stored)
	return m, nil
}

func sameDir(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

// checkTablespaces refuses a cluster with tablespaces outside the data
// directory: not supported yet.
func (b *backup) checkTablespaces() error {
	es, err := os.ReadDir(filepath.Join(b.cfg.DataDir, "pg_tblspc"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(es) > 0 {
		return fmt.Errorf("the cluster has tablespaces (pg_tblspc/%s): backups of tablespaces are not supported yet", es[0].Name())
	}
	return nil
}

// findPrior makes the backup incremental on the newest complete backup of
// the same system, if there is one.
func (b *backup) findPrior(ctx context.Context, m *Manifest) error {
	ms, err := List(ctx, b.cfg.Repo, b.cfg.Cluster)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		b.log.Info("no earlier backup: taking a full one")
		return nil
	}
	p := ms[len(ms)-1]
	if p.SystemID != m.SystemID {
		return fmt.Errorf("the newest backup, %s, is of system %s, this server is system %s", p.Label, p.SystemID, m.SystemID)
	}
	m.Kind, m.Prior = "incremental", p.Label
	b.prior = map[string]File{}
	for _, f := range p.Files {
		if f.Ref == "" {
			f.Ref = p.Label
		}
		b.prior[f.Path] = f
	}
	return nil
}

// job is one file to copy.
type job struct {
	rel string
	fi  fs.FileInfo
}

// copyAll walks the data directory and copies its files with cfg.Workers
// workers. The first error stops the rest.
func (b *backup) copyAll(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan job)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range b.cfg.Workers {
		enc, err := newEncoder(b.cfg.Compression)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				f, copied, err := b.copyFile(ctx, enc, j)
				if err != nil {
					cancel(err)
					continue
				}
				if f == nil { // gone since the walk
					continue
				}
				mu.Lock()
				b.m.Files = append(b.m.Files, *f)
				b.m.Bytes += f.Size
				if copied {
					b.m.Copied += f.Size
					b.m.Stored += f.Stored
				}
				mu.Unlock()
			}
		}()
	}
	walkErr := b.walk(ctx, jobs)
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return walkErr
}

// walk sends every file of the data directory that the backup keeps to
// jobs, and records its directories.
func (b *backup) walk(ctx context.Context, jobs chan<- job) error {
	root := b.cfg.DataDir
	var unlogged map[string]bool
	var unloggedDir string
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != root {
				return nil // dropped while we walked
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if skip(rel, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			b.m.Dirs = append(b.m.Dirs, Dir{Path: rel, Mode: fi.Mode().Perm()})
			return nil
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%s): not supported", rel, fi.Mode().Type())
		}
		dir := path.Dir(rel)
		if strings.HasPrefix(dir, "base/") && dir != unloggedDir {
			unloggedDir = dir
			unlogged = nil
			if names, err := readNames(filepath.Dir(p)); err == nil {
				unlogged = unloggedForks(names)
			}
		}
		if dir == unloggedDir && unlogged[path.Base(rel)] {
			return nil
		}
		select {
		case jobs <- job{rel, fi}:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// copyFile stores one file, or refers to the previous backup's copy when
// its size and modification time are the same. It returns nil when the
// file is gone (a table dropped during the backup: WAL replay drops it
// too).
func (b *backup) copyFile(ctx context.Context, enc *encoder, j job) (f *File, copied bool, err error) {
	mtime := j.fi.ModTime().UnixNano()
	if st, ok := j.fi.Sys().(*syscall.Stat_t); ok {
		mtime = st.Mtim.Nano()
	}
	if p, ok := b.prior[j.rel]; ok && p.Size == j.fi.Size() && p.MTime == mtime {
		p.Mode = j.fi.Mode().Perm()
		return &p, false, nil
	}
	in, err := os.Open(filepath.Join(b.cfg.DataDir, filepath.FromSlash(j.rel)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer in.Close()
	f = &File{Path: j.rel, Mode: j.fi.Mode().Perm(), MTime: mtime}
	if err := b.store(ctx, enc, f, in); err != nil {
		return nil, false, fmt.Errorf("%s: %w", j.rel, err)
	}
	return f, true, nil
}

// smallFile is the size up to which a file is read and compressed in
// memory and stored with its size known, rather than streamed. Most files
// of a data directory are small (catalogs, free space and visibility
// maps), and a stream of unknown length costs an S3 repository a part
// buffer of repo.DefaultPartSize (16 MiB, allocated and cleared by
// minio-go for every object) where the stored object is a few KiB.
const smallFile = 4 << 20

// store compresses what it reads from r into the backup as f.Path, and
// fills in f's size, checksum and stored size. A file that ends within
// smallFile bytes is compressed in memory and stored with its size; a
// longer one is streamed.
func (b *backup) store(ctx context.Context, enc *encoder, f *File, r io.Reader) error {
	h := sha256.New()
	src := &countingReader{r: io.TeeReader(r, h)}
	obj := fileObject(b.m.Cluster, b.m.Label, f.Path, b.cfg.Compression)
	if enc.head == nil {
		enc.head = make([]byte, smallFile)
	}
	n, err := io.ReadFull(src, enc.head)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		enc.out.Reset()
		w := enc.wrap(&enc.out, int64(n))
		_, err := w.Write(enc.head[:n])
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := b.cfg.Repo.Put(ctx, obj, bytes.NewReader(enc.out.Bytes()), int64(enc.out.Len())); err != nil {
			return err
		}
		f.Size, f.Stored = src.n, int64(enc.out.Len())
		f.SHA256 = hex.EncodeToString(h.Sum(nil))
		return nil
	case err != nil:
		return err
	}
	var body io.Reader = io.MultiReader(bytes.NewReader(enc.head[:n]), src)
	if b.cfg.Compression != None {
		// Only a Reader: lz4's Writer.ReadFrom works only on a fresh
		// writer, so io.Copy must not hand it a Write first (as
		// MultiReader's WriteTo would, for the head).
		in := struct{ io.Reader }{body}
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			w := enc.wrap(pw, -1)
			_, err := io.Copy(w, in)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			pw.CloseWithError(err)
		}()
		// The worker reuses enc for its next file: the compressing
		// goroutine must be gone before store returns, also when the put
		// failed half way (closing pr makes its writes fail).
		defer func() {
			pr.Close()
			<-done
		}()
		body = pr
	}
	out := &countingReader{r: body}
	if err := b.cfg.Repo.Put(ctx, obj, out, -1); err != nil {
		return err
	}
	f.Size, f.Stored = src.n, out.n
	f.SHA256 = hex.EncodeToString(h.Sum(nil))
	return nil
}

// storeBytes stores a file the backup makes (backup_label,
// tablespace_map).
func (b *backup) storeBytes(ctx context.Context, rel string, content []byte) (File, error) {
	enc, err := newEncoder(b.cfg.Compression)
	if err != nil {
		return File{}, err
	}
	f := File{Path: rel, Mode: 0o600, MTime: b.m.StopTime.UnixNano()}
	if err := b.store(ctx, enc, &f, strings.NewReader(string(content))); err != nil {
		return File{}, fmt.Errorf("%s: %w", rel, err)
	}
	b.m.Bytes += f.Size
	b.m.Copied += f.Size
	b.m.Stored += f.Stored
	return f, nil
}

// waitArchived waits, at most cfg.WALWait, until the archive holds the
// WAL from the backup's start to its stop.
func (b *backup) waitArchived(ctx context.Context) error {
	start, stop := b.m.Start(), b.m.Stop()
	deadline := time.Now().Add(b.cfg.WALWait)
	for {
		err := wal.Holds(ctx, b.cfg.Repo, b.cfg.Cluster, b.m.Timeline, start, stop)
		if err == nil {
			return nil
		}
		if !repo.IsNotExist(err) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the archive does not hold the WAL from %s to %s after %v: %w (is the WAL archiver running?)", start, stop, b.cfg.WALWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
