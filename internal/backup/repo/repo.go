// Package repo stores a database cluster's backups and WAL archive as
// named objects in a repository: a directory on a file system, or a bucket
// (and prefix) in S3-compatible object storage. Everything else in
// internal/backup reads and writes through a Repository and knows nothing
// of where the bytes go.
//
// Names are slash-separated paths relative to the repository's root, such
// as "shop/wal/000000010000000000000003". An object is written whole or
// not at all: a reader never sees a part of one, and a writer that is
// killed leaves nothing under the name (a file repository may leave a
// temporary file, which List does not show).
//
// Encrypted wraps a repository so that every object's contents are
// encrypted (AES-256-GCM, in 64 KiB chunks, with a key per object derived
// from the repository's key and the object's name); names stay plain.
// OpenNamed applies it to every repository when haven.yaml has
// database.backup.encryption_key_file, so the WAL archive and the base
// backups are encrypted without knowing it. encrypt.go describes the
// format.
package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"
)

// Repository is one place that holds objects. Its methods are safe for
// concurrent use; each honours ctx's deadline.
type Repository interface {
	// Put stores the contents of r under name, replacing any object of
	// that name once the whole of r is stored. size is r's length, or -1
	// when it is not known in advance (a stream compressed on the fly).
	Put(ctx context.Context, name string, r io.Reader, size int64) error
	// Get opens the object name. Its error wraps ErrNotExist when there
	// is no such object.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat describes the object name, or wraps ErrNotExist.
	Stat(ctx context.Context, name string) (Info, error)
	// List calls fn with every object whose name starts with prefix, in
	// lexical order of names; it stops at the first error fn returns and
	// returns it.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Delete removes the objects named; a name with no object is not an
	// error.
	Delete(ctx context.Context, names ...string) error
	// String names the repository for logs and messages, without
	// credentials: "file:///var/lib/haven/backups", "s3://bucket/prefix".
	String() string
}

// Info describes one stored object.
type Info struct {
	Name     string
	Size     int64
	Modified time.Time
}

// ErrNotExist is what Get and Stat wrap for a missing object; it is
// fs.ErrNotExist, so errors.Is(err, fs.ErrNotExist) holds too.
var ErrNotExist = fs.ErrNotExist

// ErrExist is what Creator.Create wraps when the name is taken; it is
// fs.ErrExist.
var ErrExist = fs.ErrExist

// Creator is a Repository that can store an object only if no object has
// its name, in one step that two writers cannot both win: File and S3
// are Creators. A Repository that wraps another (to encrypt, say) should
// pass Create on, or Claim falls back to a check and a write.
type Creator interface {
	// Create stores b under name if no object has that name, and
	// otherwise stores nothing and returns an error wrapping ErrExist.
	Create(ctx context.Context, name string, b []byte) error
}

// checkName refuses a name that is not a clean relative slash-separated
// path ("a/../b", "/a", "a//b", ""), or that ends as a file repository's
// temporary files do: every repository accepts the same names, so that
// one can be copied to another.
func checkName(name string) error {
	if name == "" || !fs.ValidPath(name) || name == "." || strings.HasSuffix(name, tempSuffix) {
		return fmt.Errorf("%q is not a valid object name", name)
	}
	return nil
}

// IsNotExist reports whether err says an object does not exist.
func IsNotExist(err error) bool { return errors.Is(err, ErrNotExist) }
