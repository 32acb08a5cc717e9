package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/haven-ha/haven/internal/pg"
)

func touch(t *testing.T, dir, name string, size int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHavenEnd(t *testing.T) {
	dir := t.TempDir()
	if _, err := havenEnd(filepath.Join(dir, "missing")); err == nil {
		t.Error("havenEnd of a missing directory: no error")
	}
	check := func(want pg.LSN) {
		t.Helper()
		got, err := havenEnd(dir)
		if err != nil || got != want {
			t.Errorf("havenEnd = %v, %v; want %v", got, err, want)
		}
	}
	check(0)
	// Pieces of segment 3 from 0 to 0x3000, then a gap.
	touch(t, dir, "000000010000000000000003.00000000.partial", 0x1000)
	touch(t, dir, "000000010000000000000003.00001000.partial", 0x2000)
	touch(t, dir, "000000010000000000000003.00005000.partial", 0x1000)
	check(pg.LSN(3*segSize + 0x3000))
	// A temporary file and a history file count for nothing.
	touch(t, dir, "000000010000000000000009.x.haven-tmp", 10)
	touch(t, dir, "00000002.history", 10)
	check(pg.LSN(3*segSize + 0x3000))
	// A whole segment 3: its end; segment 0x100 is the first of log 1.
	touch(t, dir, "000000010000000000000003", 0)
	check(pg.LSN(4 * segSize))
	touch(t, dir, "000000010000000100000000.00000000.partial", 0x10)
	check(pg.LSN(0x100000000 + 0x10))
}

func TestPgBackRestEnd(t *testing.T) {
	dir := t.TempDir()
	ids := filepath.Join(dir, "15-1", "0000000100000000")
	touch(t, dir, "archive.info", 1)
	touch(t, ids, "000000010000000000000004-2b5ef4d0e2ff6b1b94c9c6d0c48d5a3ad64c3b8e.lz4", 1)
	touch(t, ids, "000000010000000000000005-2b5ef4d0e2ff6b1b94c9c6d0c48d5a3ad64c3b8e.lz4.pgbackrest.tmp", 1)
	touch(t, ids, "000000010000000000000002.00000028.backup", 1)
	got, err := pgbrEnd(dir)
	if want := pg.LSN(5 * segSize); err != nil || got != want {
		t.Errorf("pgbrEnd = %v, %v; want %v (the end of segment 4; the temporary file of 5 does not count)", got, err, want)
	}
	touch(t, filepath.Join(dir, "15-1", "0000000100000001"), "000000010000000100000000-2b5ef4d0e2ff6b1b94c9c6d0c48d5a3ad64c3b8e", 1)
	if got, _ := pgbrEnd(dir); got != pg.LSN(0x100000000+segSize) {
		t.Errorf("pgbrEnd = %v after a segment of log 1, want %v", got, pg.LSN(0x100000000+segSize))
	}
}
