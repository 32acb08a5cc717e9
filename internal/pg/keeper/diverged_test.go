package keeper

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRemoveDiverged: the copies an earlier failed rewind moved aside go,
// the data directory itself and a sibling that only shares a prefix stay.
func TestRemoveDiverged(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "pg")
	for _, d := range []string{"pg", "pg.diverged-20261205T124927", "pg.diverged-20261205T130600", "pg2", "pg-old"} {
		if err := os.MkdirAll(filepath.Join(dir, d, "base"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := removeDiverged(data)
	if err != nil || len(removed) != 2 {
		t.Fatalf("removeDiverged = %v, %v; want the two diverged copies", removed, err)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if !slices.Equal(left, []string{"pg", "pg-old", "pg2"}) {
		t.Fatalf("left %v, want pg, pg-old and pg2", left)
	}
}
