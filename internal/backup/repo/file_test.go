package repo

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileRoundTrip: what is put is got back whole, listed by prefix in
// order, replaced whole, and gone once deleted; a missing object says so.
func TestFileRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, err := OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	put := func(name, body string) {
		t.Helper()
		if err := r.Put(ctx, name, strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	put("shop/wal/000000010000000000000002", "two")
	put("shop/wal/000000010000000000000001", "one")
	put("shop/base/20261204/manifest.json", "{}")
	put("shop/wal/000000010000000000000001", "one, again")

	rc, err := r.Get(ctx, "shop/wal/000000010000000000000001")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "one, again" {
		t.Errorf("got %q after a replace; want %q", b, "one, again")
	}
	var names []string
	if err := r.List(ctx, "shop/wal/", func(i Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := "shop/wal/000000010000000000000001 shop/wal/000000010000000000000002"; strings.Join(names, " ") != want {
		t.Errorf("listed %v; want %s", names, want)
	}
	if err := r.Delete(ctx, "shop/wal/000000010000000000000002", "shop/wal/none"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Stat(ctx, "shop/wal/000000010000000000000002"); !IsNotExist(err) {
		t.Errorf("stat of a deleted object: %v; want not exist", err)
	}
	if _, err := r.Get(ctx, "../escape"); err == nil {
		t.Error("a name that leaves the repository was accepted")
	}
}

// TestFilePutIsWholeOrNothing: a write that fails half way (its reader
// breaks) leaves the old object as it was and nothing listed beside it.
func TestFilePutIsWholeOrNothing(t *testing.T) {
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

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
