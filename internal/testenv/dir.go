package testenv

import (
	"os"
	"testing"
)

// SearchableDir makes a directory that another user can search (mode
// 0711), such as the postgres user that haven runs PostgreSQL as: the
// directories of t.TempDir are the test user's own, mode 0700. It is
// removed when the test ends.
func SearchableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "haventest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}

// MemoryDir makes a directory in memory (/dev/shm) for an etcd member's
// data, removed when the test ends; without /dev/shm, one on disk.
//
// etcd commits nothing while its write-ahead log waits for fsync. While the
// suite runs, other packages' tests fsync heavily (PostgreSQL's initdb,
// checkpoints, clones) on the same disk, and a member's fsync then waits
// for up to a second behind them: every lease renewed through that member
// stalls, and a holder fences itself, in a test about something else. A
// production member wants a disk of its own, as etcd's documentation says;
// the tests keep their members' data in memory so that they measure the
// faults they inject.
func MemoryDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "haventest")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}
