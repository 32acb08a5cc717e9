package deadman

import (
	"testing"

	"github.com/google/nftables"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestProbe: on this kernel (haven's fences run on it) the probe passes
// and leaves no table behind.
func TestProbe(t *testing.T) {
	testenv.NeedRoot(t)
	if err := Probe(0); err != nil {
		t.Fatal(err)
	}
	cc, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := cc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == ProbeTable {
			t.Fatalf("the probe left table inet %s behind", ProbeTable)
		}
	}
}
