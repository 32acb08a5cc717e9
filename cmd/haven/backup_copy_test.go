package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/backup/repo"
)

// haven backup copy NAME copies what the other repository lacks, and
// again copies nothing; a repository not in the file, or the one copied
// from, is refused.
func TestBackupCopy(t *testing.T) {
	dir := t.TempDir()
	east, west := filepath.Join(dir, "east"), filepath.Join(dir, "west")
	cfg := backupConfig(t, dir, `    repositories:
      - {name: east, url: "file://`+east+`"}
      - {name: west, url: "file://`+west+`"}
`)
	src, err := repo.OpenFile(east)
	if err != nil {
		t.Fatal(err)
	}
	objects := map[string]string{"shop/base/L1/data/PG_VERSION": "15\n", "shop/base/L1/manifest.json": "{}", "shop/wal/000000010000000000000001": "wal", "other/wal/x": "another cluster's"}
	for name, body := range objects {
		if err := src.Put(context.Background(), name, strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "copy", "-c", cfg, "west"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "copied 3 objects") {
		t.Fatalf("backup copy west: exit %d, %s%s; want 3 objects copied", code, stdout.String(), stderr.String())
	}
	for name, body := range objects {
		got, err := os.ReadFile(filepath.Join(west, filepath.FromSlash(name)))
		switch {
		case strings.HasPrefix(name, "other/") && err == nil:
			t.Errorf("another cluster's %s was copied", name)
		case !strings.HasPrefix(name, "other/") && string(got) != body:
			t.Errorf("west's %s: %q, %v; want %q", name, got, err, body)
		}
	}
	stdout.Reset()
	if code := run([]string{"backup", "copy", "-c", cfg, "west"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "copied 0 objects (0 B), 3 already there") {
		t.Errorf("backup copy west again: exit %d, %s; want nothing copied", code, stdout.String())
	}
	for _, tc := range []struct{ name, want string }{{"north", `no repository "north"`}, {"east", "is the repository copied from"}} {
		stderr.Reset()
		if code := run([]string{"backup", "copy", "-c", cfg, tc.name}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("backup copy %s: exit %d, %s; want 1 and %q", tc.name, code, stderr.String(), tc.want)
		}
	}
}
