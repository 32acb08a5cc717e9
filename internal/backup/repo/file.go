package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// tempSuffix marks a file being written; List never shows one, and a
// writer that was killed leaves at most such a file behind.
const tempSuffix = ".haven-tmp"

// File is a repository in a directory of a local or mounted file system.
// An object is written to a temporary file, synced, and renamed into
// place, and the directory is synced, so that a crash leaves the old
// object or the new one, whole.
type File struct {
	root string
}

// OpenFile returns the repository rooted at dir, creating it (mode 0700)
// if it does not exist.
func OpenFile(dir string) (*File, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("repo: %q: a file repository needs an absolute path", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("repo: file://%s: %w", dir, err)
	}
	return &File{root: filepath.Clean(dir)}, nil
}

func (f *File) String() string { return "file://" + f.root }

// path turns an object name into a file path below the root, refusing
// names that would leave it.
func (f *File) path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("repo: %s: %w", f, err)
	}
	return filepath.Join(f.root, filepath.FromSlash(name)), nil
}

func (f *File) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("repo: %s: put %s: %w", f, name, err)
	}
	p, err := f.path(name)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("repo: %s: put %s: %w", f, name, err)
		}
		filled := false
		err = WriteFile(p, func(w io.Writer) error {
			filled = true
			n, err := io.Copy(w, ctxReader{ctx, r})
			if err == nil && size >= 0 && n != size {
				err = fmt.Errorf("read %d bytes, want %d", n, size)
			}
			return err
		})
		// A Delete may have removed the directory, emptied, between
		// MkdirAll and the temporary file: once more, nothing read yet.
		if err == nil || filled || attempt > 0 || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("repo: %s: put %s: %w", f, name, err)
	}
	return nil
}

// WriteFile writes the file p whole or not at all: fill writes into a
// temporary file beside it (NAME.*.haven-tmp, which List never shows),
// which is synced and renamed into place, and the directory is synced,
// so that a crash leaves the old file or the new one. When fill or a
// step fails, the temporary file is removed and p is as it was.
func WriteFile(p string, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".*"+tempSuffix)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func (f *File) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("repo: %s: get %s: %w", f, name, err)
	}
	p, err := f.path(name)
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("repo: %s: get %s: %w", f, name, err)
	}
	if st, err := file.Stat(); err != nil || st.IsDir() {
		// A directory holds objects; it is not one.
		file.Close()
		if err == nil {
			err = ErrNotExist
		}
		return nil, fmt.Errorf("repo: %s: get %s: %w", f, name, err)
	}
	return file, nil
}

func (f *File) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("repo: %s: stat %s: %w", f, name, err)
	}
	p, err := f.path(name)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, fmt.Errorf("repo: %s: stat %s: %w", f, name, err)
	}
	if st.IsDir() {
		return Info{}, fmt.Errorf("repo: %s: stat %s: %w", f, name, ErrNotExist)
	}
	return Info{Name: name, Size: st.Size(), Modified: st.ModTime()}, nil
}

func (f *File) List(ctx context.Context, prefix string, fn func(Info) error) error {
	var all []Info
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.root, p)
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			// Skip directories that cannot hold a name with the prefix.
			if name != "." && !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(name, prefix) || strings.HasSuffix(name, tempSuffix) {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		all = append(all, Info{Name: name, Size: st.Size(), Modified: st.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("repo: %s: list %s: %w", f, prefix, err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	for _, i := range all {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

func (f *File) Delete(ctx context.Context, names ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("repo: %s: delete: %w", f, err)
	}
	for _, name := range names {
		p, err := f.path(name)
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("repo: %s: delete %s: %w", f, name, err)
		}
		f.prune(filepath.Dir(p))
	}
	return nil
}

// prune removes dir and the directories above it, up to the repository's
// own, while they are empty: an expired backup leaves no directory behind,
// as an S3 prefix with no object is gone.
func (f *File) prune(dir string) {
	for dir != f.root && strings.HasPrefix(dir, f.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil { // not empty, or gone
			return
		}
		dir = filepath.Dir(dir)
	}
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Create stores b under name unless an object has that name: it writes a
// temporary file beside it, synced, and links it to the name, which the
// file system refuses when the name exists (also over NFS); then the
// temporary name is removed.
func (f *File) Create(ctx context.Context, name string, b []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("repo: %s: create %s: %w", f, name, err)
	}
	p, err := f.path(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("repo: %s: create %s: %w", f, name, err)
	}
	if err := createFile(p, b); err != nil {
		return fmt.Errorf("repo: %s: create %s: %w", f, name, err)
	}
	return nil
}

func createFile(p string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".*"+tempSuffix)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ErrExist
		}
		return err
	}
	return syncDir(filepath.Dir(p))
}
