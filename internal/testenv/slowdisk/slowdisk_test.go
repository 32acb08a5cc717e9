package slowdisk

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFsyncWaits: a file on the slow disk reads back what was written, and
// its fsync takes at least the delay (a floor, which a loaded machine only
// lengthens).
func TestFsyncWaits(t *testing.T) {
	dir := Mount(t, 200*time.Millisecond)
	f, err := os.Create(filepath.Join(dir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("entry"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("fsync on the slow disk took %v; want at least the 200ms delay", took)
	}
	b, err := os.ReadFile(filepath.Join(dir, "wal"))
	if err != nil || string(b) != "entry" {
		t.Errorf("read back %q, %v; want \"entry\"", b, err)
	}
}
