package base

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
)

// Manifest describes one complete base backup. It is the last object a
// backup writes: a backup without one is not complete, and List and
// Restore never see it.
type Manifest struct {
	Format   int    `json:"format"` // 1
	Label    string `json:"label"`
	Cluster  string `json:"cluster"`
	Kind     string `json:"kind"`            // "full" or "incremental"
	Prior    string `json:"prior,omitempty"` // an incremental's previous backup
	SystemID string `json:"system_identifier"`
	// PGVersion is the server's server_version_num.
	PGVersion   int         `json:"pg_version"`
	FromReplica bool        `json:"from_replica"`
	Timeline    uint32      `json:"timeline"`
	StartLSN    string      `json:"start_lsn"`
	StopLSN     string      `json:"stop_lsn"`
	StartTime   time.Time   `json:"start_time"`
	StopTime    time.Time   `json:"stop_time"`
	Compression Compression `json:"compression"`
	// Bytes is the size of every file of the data directory the backup
	// holds, Copied the part of it this backup read and stored (all of it
	// for a full backup), Stored what that took in the repository.
	Bytes  int64  `json:"bytes"`
	Copied int64  `json:"copied_bytes"`
	Stored int64  `json:"stored_bytes"`
	Dirs   []Dir  `json:"dirs"`
	Files  []File `json:"files"`
}

// Dir is a directory of the data directory.
type Dir struct {
	Path string      `json:"path"`
	Mode fs.FileMode `json:"mode"`
}

// File is a file of the data directory, as the backup holds it.
type File struct {
	Path string      `json:"path"`
	Size int64       `json:"size"`
	Mode fs.FileMode `json:"mode"`
	// MTime is the file's modification time when the backup read it, in
	// nanoseconds since 1970: with Size, what an incremental backup
	// compares to tell a changed file.
	MTime int64 `json:"mtime"`
	// SHA256 is the checksum of the file's content, uncompressed.
	SHA256 string `json:"sha256"`
	// Ref, when set, is the label of the earlier backup whose copy this
	// backup uses: the file had not changed.
	Ref string `json:"ref,omitempty"`
	// Stored is the size of the stored object, in the backup Ref names
	// or in this one.
	Stored int64 `json:"stored"`
}

// Start and Stop are the backup's StartLSN and StopLSN (0 when the
// manifest's text is not an LSN).
func (m *Manifest) Start() pg.LSN { l, _ := pg.ParseLSN(m.StartLSN); return l }
func (m *Manifest) Stop() pg.LSN  { l, _ := pg.ParseLSN(m.StopLSN); return l }

// FirstSegment is the name of the WAL segment that holds the backup's
// start: the first file its recovery fetches from the archive.
func (m *Manifest) FirstSegment() string {
	return wal.SegmentName(m.Timeline, uint64(m.Start())/wal.SegmentSize)
}

// holder is the label of the backup that stores f's bytes.
func (m *Manifest) holder(f File) string {
	if f.Ref != "" {
		return f.Ref
	}
	return m.Label
}

const manifestName = "manifest.json"

func baseDir(cluster string) string { return cluster + "/base/" }

func manifestObject(cluster, label string) string {
	return baseDir(cluster) + label + "/" + manifestName
}

// fileObject is where a backup stores the file rel of the data directory.
func fileObject(cluster, label, rel string, c Compression) string {
	return baseDir(cluster) + label + "/data/" + rel + c.ext()
}

// List returns cluster's complete backups in r, oldest first. A backup
// whose manifest was not written (it was stopped, or is being taken) is
// not listed.
func List(ctx context.Context, r repo.Repository, cluster string) ([]*Manifest, error) {
	var labels []string
	err := r.List(ctx, baseDir(cluster), func(i repo.Info) error {
		rest := strings.TrimPrefix(i.Name, baseDir(cluster))
		if label, ok := strings.CutSuffix(rest, "/"+manifestName); ok && !strings.Contains(label, "/") {
			labels = append(labels, label)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("base: list backups of %s in %s: %w", cluster, r, err)
	}
	slices.Sort(labels)
	var ms []*Manifest
	for _, l := range labels {
		m, err := Load(ctx, r, cluster, l)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// Load reads the manifest of cluster's backup label; the error wraps
// repo.ErrNotExist when it has none (no such backup, or not complete).
func Load(ctx context.Context, r repo.Repository, cluster, label string) (*Manifest, error) {
	rc, err := r.Get(ctx, manifestObject(cluster, label))
	if err != nil {
		return nil, fmt.Errorf("base: backup %s of %s: %w", label, cluster, err)
	}
	defer rc.Close()
	var m Manifest
	dec := json.NewDecoder(rc)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("base: backup %s of %s: manifest: %w", label, cluster, err)
	}
	if m.Format != 1 || m.Label != label {
		return nil, fmt.Errorf("base: backup %s of %s: manifest of format %d, label %q: not one this version reads", label, cluster, m.Format, m.Label)
	}
	return &m, nil
}

// Find loads the manifest of cluster's backup label, or of its newest
// complete backup when label is empty; the error wraps repo.ErrNotExist
// when there is none.
func Find(ctx context.Context, r repo.Repository, cluster, label string) (*Manifest, error) {
	if label != "" {
		return Load(ctx, r, cluster, label)
	}
	ms, err := List(ctx, r, cluster)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("base: %s holds no complete backup of %s: %w", r, cluster, repo.ErrNotExist)
	}
	return ms[len(ms)-1], nil
}

// chain loads the manifests of the backups m's files refer to, by label,
// m's own included.
func chain(ctx context.Context, r repo.Repository, m *Manifest) (map[string]*Manifest, error) {
	ms := map[string]*Manifest{m.Label: m}
	for _, f := range m.Files {
		l := m.holder(f)
		if ms[l] != nil {
			continue
		}
		o, err := Load(ctx, r, m.Cluster, l)
		if err != nil {
			return nil, fmt.Errorf("base: backup %s refers to %s: %w", m.Label, l, err)
		}
		ms[l] = o
	}
	return ms, nil
}

func (m *Manifest) put(ctx context.Context, r repo.Repository) error {
	b, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return r.Put(ctx, manifestObject(m.Cluster, m.Label), bytes.NewReader(b), int64(len(b)))
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
