package fault

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fillName is the file a fill writes in the data directory.
const fillName = ".haven-drill-fill"

// fill writes one file in the role's data directory, allocated so that
// its file system is spec.Level percent full (as df counts: of the blocks
// not reserved for root), and removes it when the fault ends.
func (m *Manager) fill(spec Spec) (string, undoer, error) {
	if m.env.DataDir == nil {
		return "", nil, errors.New("this node has no data directory the drills can fill")
	}
	dir, err := m.env.DataDir(spec.Target)
	if err != nil {
		return "", nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", nil, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	usable := (st.Blocks - st.Bfree + st.Bavail) * bs // used + available to users
	used := (st.Blocks - st.Bfree) * bs
	want := usable * uint64(spec.Level) / 100
	if want <= used {
		return "", nil, fmt.Errorf("%s is %d%% full already, at or above %d%%: %w", dir, used*100/usable, spec.Level, ErrAlreadyFull)
	}
	path := filepath.Join(dir, fillName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", nil, err
	}
	size := int64(want - used)
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", nil, fmt.Errorf("allocate %d bytes in %s: %w", size, path, err)
	}
	return fmt.Sprintf("%s: %d bytes, the file system %d%% full", path, size, spec.Level), func() error { return removeFill(dir) }, nil
}

// removeFill removes a fill file from dir, if there is one.
func removeFill(dir string) error {
	err := os.Remove(filepath.Join(dir, fillName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
