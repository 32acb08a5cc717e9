package volume

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
)

func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCopyAndRestore copies a volume's files, then what changed, and
// restores the copy elsewhere: the files of the last pass, identical,
// without haven's probe files, and without the files deleted before it.
func TestCopyAndRestore(t *testing.T) {
	ctx := context.Background()
	vol, store, restored := t.TempDir(), t.TempDir(), t.TempDir()
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCopier(CopyConfig{Volume: "files", Dir: vol, Store: r, Prefix: "shop/volumes/files"})
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, vol, map[string]string{"a.txt": "a", "uploads/2026/b.jpg": "bee", "gone.txt": "soon gone", ".haven/probe-app1": "probe"})
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Files != 3 || st.Uploaded != 3 || st.LastPass.IsZero() || st.Err != "" {
		t.Fatalf("first pass: %+v, want 3 files uploaded", st)
	}
	before := time.Now()
	writeTree(t, vol, map[string]string{"a.txt": "a, longer now", "c.txt": "new"})
	if err := os.Remove(filepath.Join(vol, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if st.Files != 3 || st.Uploaded != 2 || st.Deleted != 1 || st.LastPass.Before(before) {
		t.Fatalf("second pass: %+v, want 3 files, 2 uploaded (a changed, c new), 1 deleted, a pass after the changes", st)
	}
	if _, err := r.Stat(ctx, "shop/volumes/files/files/gone.txt"); !errors.Is(err, repo.ErrNotExist) {
		t.Errorf("a file deleted from the volume is still in the copy: %v", err)
	}
	// A new copier (another node, a restarted agent) starts from the
	// repository's manifest: nothing to upload.
	c2, _ := NewCopier(CopyConfig{Volume: "files", Dir: vol, Store: r, Prefix: "shop/volumes/files"})
	if err := c2.Pass(ctx); err != nil || c2.Status().Uploaded != 0 {
		t.Errorf("a second copier uploaded %d files (%v), want 0: it reads the manifest", c2.Status().Uploaded, err)
	}
	rs, err := Restore(ctx, r, "shop/volumes/files", restored)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a.txt": "a, longer now", "uploads/2026/b.jpg": "bee", "c.txt": "new"}
	got := readTree(t, restored)
	if rs.Files != 3 || len(got) != len(want) {
		t.Fatalf("restored %d files: %v, want %v", rs.Files, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("restored %s = %q, want %q", k, got[k], v)
		}
	}
	if fi, err := os.Stat(filepath.Join(restored, "a.txt")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("restored mode: %v %v, want 0640", fi.Mode(), err)
	}
}

// TestRestoreRefusesDamage: an object that does not match the manifest's
// digest is not restored and is named; the others are restored.
func TestRestoreRefusesDamage(t *testing.T) {
	ctx := context.Background()
	vol, store, restored := t.TempDir(), t.TempDir(), t.TempDir()
	r, _ := repo.OpenFile(store)
	c, _ := NewCopier(CopyConfig{Volume: "files", Dir: vol, Store: r, Prefix: "v"})
	writeTree(t, vol, map[string]string{"a.txt": "the original"})
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	writeTree(t, vol, map[string]string{"b.txt": "intact"})
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "v/files/a.txt", strings.NewReader("tampered"), 8); err != nil {
		t.Fatal(err)
	}
	st, err := Restore(ctx, r, "v", restored)
	if err == nil || !strings.Contains(err.Error(), "1 files of the copy do not match") || st.Files != 1 {
		t.Fatalf("restore of a damaged object: %v (%d restored), want it named and the intact file restored", err, st.Files)
	}
	if got := readTree(t, restored); got["b.txt"] != "intact" || len(got) != 1 {
		t.Errorf("restored %v, want b.txt only (no damaged file, no temporary file left)", got)
	}
}

// TestCopyGrowingFile: a file that grows between the walk's look at it and
// its upload (a log being appended to) is copied as the walk saw it, and
// restores with that content, instead of failing every pass.
func TestCopyGrowingFile(t *testing.T) {
	ctx := context.Background()
	vol, store, restored := t.TempDir(), t.TempDir(), t.TempDir()
	r, _ := repo.OpenFile(store)
	c, _ := NewCopier(CopyConfig{Volume: "files", Dir: vol, Store: r, Prefix: "v"})
	writeTree(t, vol, map[string]string{"app.log": "line 1\n"})
	p := filepath.Join(vol, "app.log")
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("line 2\n")
	f.Close()
	e, err := c.upload(ctx, p, "app.log", info)
	if err != nil || e.Size != 7 {
		t.Fatalf("upload of a grown file: %+v, %v; want its first 7 bytes", e, err)
	}
	if err := c.putManifest(ctx, &Manifest{Files: map[string]Entry{"app.log": e}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, r, "v", restored); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, restored); got["app.log"] != "line 1\n" {
		t.Errorf("restored %q, want the file as the walk saw it", got["app.log"])
	}
}

// TestRestoreRefusesEscape: a manifest altered to name a path outside the
// target directory is refused before anything is written there.
func TestRestoreRefusesEscape(t *testing.T) {
	ctx := context.Background()
	store, parent := t.TempDir(), t.TempDir()
	restored := filepath.Join(parent, "restored")
	r, _ := repo.OpenFile(store)
	// The object the altered name leads to exists, with the digest the
	// manifest gives: without the check, the restore would write it.
	m := `{"volume":"files","files":{"../escaped":{"size":1,"mode":420,"sha256":"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}}}`
	if err := r.Put(ctx, "v/manifest.json", strings.NewReader(m), int64(len(m))); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "v/escaped", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, r, "v", restored); err == nil || !strings.Contains(err.Error(), "not a path inside") {
		t.Fatalf("restore of a manifest naming ../escaped: %v, want it refused", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "escaped")); err == nil {
		t.Errorf("the restore wrote outside its directory")
	}
}

// TestCopyKeepsCopyOfAnUnmountedVolume: a pass over a directory that is
// not the volume (its mount gone), or that holds no file where the copy
// has some, deletes nothing from the copy.
func TestCopyKeepsCopyOfAnUnmountedVolume(t *testing.T) {
	ctx := context.Background()
	vol, store := t.TempDir(), t.TempDir()
	r, _ := repo.OpenFile(store)
	var mounted error
	c, _ := NewCopier(CopyConfig{Volume: "files", Dir: vol, Store: r, Prefix: "v", Mounted: func() error { return mounted }})
	writeTree(t, vol, map[string]string{"a.txt": "a", "b.txt": "b"})
	if err := c.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.txt", "b.txt"} {
		os.Remove(filepath.Join(vol, name))
	}
	mounted = errors.New("no GlusterFS mount")
	if err := c.Pass(ctx); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("a pass without the mount: %v, want it refused", err)
	}
	mounted = nil
	if err := c.Pass(ctx); err == nil || !strings.Contains(err.Error(), "holds no file") {
		t.Errorf("a pass over an empty volume: %v, want it refused", err)
	}
	m, err := ReadManifest(ctx, r, "v")
	if err != nil || len(m.Files) != 2 {
		t.Fatalf("the copy after the refused passes: %v, %v; want its 2 files", m, err)
	}
	if st := c.Status(); st.Failures != 2 || st.Err == "" {
		t.Errorf("status %+v: want 2 failures and the last one's reason", st)
	}
}
