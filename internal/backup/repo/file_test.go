package repo

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFile runs the conformance tests on a file repository.
func TestFile(t *testing.T) {
	conformance(t, func(t *testing.T) Repository {
		r, err := OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

// TestFilePutLeavesNoTemporaryFile: a write that fails half way removes
// its temporary file, which List would hide.
func TestFilePutLeavesNoTemporaryFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "c/obj", strings.NewReader("old"), 3); err != nil {
		t.Fatal(err)
	}
	broken := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{})
	if err := r.Put(ctx, "c/obj", broken, -1); err == nil {
		t.Fatal("a put whose reader failed succeeded")
	}
	rc, err := r.Get(ctx, "c/obj")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "old" {
		t.Errorf("after a failed put the object reads %q; want the old %q", b, "old")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "c"))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries after a failed put; want only the object", len(entries))
	}
	if err := r.Put(ctx, "c/short", strings.NewReader("ab"), 3); err == nil {
		t.Error("a put of 2 bytes announced as 3 succeeded")
	}
}

// TestFileDeletePrunes: deleting a directory's last object removes the
// directories it leaves empty, up to the repository's own, and a put into
// a pruned directory makes it again.
func TestFileDeletePrunes(t *testing.T) {
	root := t.TempDir()
	r, err := OpenFile(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"shop/backup/L1/base/1/2", "shop/backup/L2/x"} {
		if err := r.Put(ctx, name, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Delete(ctx, "shop/backup/L1/base/1/2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "shop", "backup", "L1")); !os.IsNotExist(err) {
		t.Errorf("the expired backup's directory is still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(root, "shop", "backup", "L2", "x")); err != nil {
		t.Errorf("the other backup's object: %v", err)
	}
	if err := r.Delete(ctx, "shop/backup/L2/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("the repository's own directory went too: %v", err)
	}
	if err := r.Put(ctx, "shop/backup/L1/base/1/2", strings.NewReader("y"), 1); err != nil {
		t.Errorf("put into a pruned directory: %v", err)
	}
}
