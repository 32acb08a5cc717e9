package keeper

import (
	"testing"

	"github.com/haven-ha/haven/internal/pg"
)

// A narrowing of the sync record counts the standbys kept that have the
// WAL written before it, and its message names where the others are.
func TestFlushedTo(t *testing.T) {
	// db2 streams twice: its old sender, not ended yet, and the new one.
	standbys := []pg.Standby{{Name: "db2", Flush: 0x1000}, {Name: "db2", Flush: 0x5000}, {Name: "db3", Flush: 0x3000}, {Name: "db4", Flush: 0x9000}}
	n, behind := flushedTo(standbys, []string{"db2", "db3", "db5"}, 0x4000)
	if n != 1 {
		t.Errorf("flushedTo counted %d standbys at 0/4000 or beyond, want 1 (db2 by its furthest sender; db4 is not kept)", n)
	}
	if want := "db3 has flushed to 0/3000, db5 does not stream"; behind != want {
		t.Errorf("behind = %q, want %q", behind, want)
	}
}
