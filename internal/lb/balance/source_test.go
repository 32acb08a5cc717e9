package balance

import (
	"math"
	"net/netip"
	"testing"

	"github.com/haven-ha/haven/internal/splitmix"
)

// addrs returns n distinct client addresses, IPv4 and IPv6 mixed.
func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		if i%4 == 3 {
			out[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		} else {
			out[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
	}
	return out
}

// assign maps every address to the key of its backend ("" for none).
func assign(a Algorithm, set []Backend, skip func(int) bool, clients []netip.Addr) []string {
	out := make([]string, len(clients))
	for i, c := range clients {
		if j := a.Pick(set, skip, HashAddr(c)); j >= 0 {
			out[i] = set[j].Key()
		}
	}
	return out
}

func TestSourceSticky(t *testing.T) {
	set, _ := newSet(1, 1, 1)
	a := mustNew(t, "source")
	for _, c := range addrs(100) {
		h := HashAddr(c)
		first := a.Pick(set, nil, h)
		for range 5 {
			if got := a.Pick(set, nil, h); got != first {
				t.Fatalf("%s: picked %d then %d", c, first, got)
			}
		}
		// A fresh instance (another balancer node) agrees.
		if got := mustNew(t, "source").Pick(set, nil, h); got != first {
			t.Fatalf("%s: another instance picked %d, want %d", c, got, first)
		}
	}
}

// TestSourceMinimalRemap removes, skips and restores one backend of five and
// checks that only the clients that were on it move.
func TestSourceMinimalRemap(t *testing.T) {
	clients := addrs(10000)
	set, fakes := newSet(1, 1, 1, 1, 1)
	a := mustNew(t, "source")
	before := assign(a, set, nil, clients)

	const gone = 2 // backend "c"
	removed := []Backend{fakes[0], fakes[1], fakes[3], fakes[4]}
	reordered := []Backend{fakes[4], fakes[3], fakes[2], fakes[1], fakes[0]}
	cases := []struct {
		name    string
		set     []Backend
		skip    func(int) bool
		weight0 bool // set the backend's weight to 0 instead
	}{
		{"removed", removed, nil, false},
		{"skipped", set, skipSet(gone), false},
		{"weight 0", set, nil, true},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			if tt.weight0 {
				fakes[gone].weight.Store(0)
				defer fakes[gone].weight.Store(1)
			}
			after := assign(a, tt.set, tt.skip, clients)
			onGone := 0
			for i := range clients {
				switch {
				case before[i] == name(gone):
					onGone++
					if after[i] == name(gone) || after[i] == "" {
						t.Fatalf("%s stayed on %q", clients[i], after[i])
					}
				case after[i] != before[i]:
					t.Fatalf("%s moved from %s to %s though %s was not removed", clients[i], before[i], after[i], before[i])
				}
			}
			// About 1/5 of the clients were on it.
			if onGone < 1800 || onGone > 2200 {
				t.Errorf("%d of 10000 clients on the removed backend, want about 2000", onGone)
			}
		})
	}
	// A sixth backend only takes clients, about a sixth of them.
	f := &fakeBackend{key: "new"}
	f.weight.Store(1)
	grown := append(append([]Backend(nil), set...), f)
	taken := 0
	for i, c := range assign(a, grown, nil, clients) {
		switch c {
		case "new":
			taken++
		case before[i]:
		default:
			t.Fatalf("%s moved from %s to %s when a backend was added", clients[i], before[i], c)
		}
	}
	if taken < 1500 || taken > 1850 {
		t.Errorf("the added backend took %d of 10000 clients, want about 1667", taken)
	}
	// Restored, or reordered: everyone is back where they were.
	for _, s := range [][]Backend{set, reordered} {
		after := assign(a, s, nil, clients)
		for i := range clients {
			if after[i] != before[i] {
				t.Fatalf("%s on %s after restore, want %s", clients[i], after[i], before[i])
			}
		}
	}
}

// TestSourceSecondChoice checks that the fallback for a hash is deterministic:
// skipping the first and second choice gives the third, whatever the set.
func TestSourceSecondChoice(t *testing.T) {
	set, _ := newSet(1, 2, 3, 4, 5, 6)
	a := mustNew(t, "source")
	for _, c := range addrs(200) {
		h := HashAddr(c)
		first := a.Pick(set, nil, h)
		second := a.Pick(set, skipSet(first), h)
		third := a.Pick(set, skipSet(first, second), h)
		if first == second || second == third || first == third {
			t.Fatalf("%s: choices %d %d %d not distinct", c, first, second, third)
		}
		if got := a.Pick(set, skipSet(second, first), h); got != third {
			t.Fatalf("%s: third choice %d, then %d", c, third, got)
		}
	}
}

// TestSourceWeights checks that each backend receives a share of the clients
// proportional to its weight.
func TestSourceWeights(t *testing.T) {
	clients := addrs(100000)
	tests := []struct {
		name    string
		weights []int
	}{
		{"equal", []int{1, 1, 1, 1}},
		{"1,2,3,4", []int{1, 2, 3, 4}},
		{"256,1,16", []int{256, 1, 16}},
		{"mixed equal and not", []int{2, 2, 1, 5, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, _ := newSet(tt.weights...)
			a := mustNew(t, "source")
			got := make([]int, len(set))
			for _, c := range clients {
				got[a.Pick(set, nil, HashAddr(c))]++
			}
			total := 0
			for _, w := range tt.weights {
				total += w
			}
			for i, w := range tt.weights {
				want := float64(len(clients)) * float64(w) / float64(total)
				// 5 standard deviations of a binomial, plus 0.5% for the hash.
				tol := 5*math.Sqrt(want*(1-float64(w)/float64(total))) + 0.005*float64(len(clients))
				if math.Abs(float64(got[i])-want) > tol {
					t.Errorf("backend %d (weight %d): %d clients, want %.0f ± %.0f", i, w, got[i], want, tol)
				}
			}
		})
	}
}

// TestSourceReweight checks that a weight change (slow start) only moves
// clients to or from the reweighted backend.
func TestSourceReweight(t *testing.T) {
	clients := addrs(10000)
	set, fakes := newSet(4, 4, 4, 4)
	a := mustNew(t, "source")
	full := assign(a, set, nil, clients)
	fakes[1].weight.Store(1)
	slow := assign(a, set, nil, clients)
	on := 0
	for i := range clients {
		if slow[i] == "b" {
			on++
		}
		if slow[i] != full[i] && full[i] != "b" {
			t.Fatalf("%s moved from %s to %s; only b's clients may move", clients[i], full[i], slow[i])
		}
	}
	// b now has weight 1 of 13.
	if on < 10000/13*8/10 || on > 10000/13*12/10 {
		t.Errorf("b has %d clients at weight 1 of 13, want about %d", on, 10000/13)
	}
}

// TestSourceMatchesReference checks the shortcuts of Pick (comparing equal
// weights by u, bounding scores to skip logarithms) against scoring every
// backend in full.
func TestSourceMatchesReference(t *testing.T) {
	weightSets := [][]int{
		{1, 1, 1, 1},
		{1, 2, 3, 4, 5, 6, 7, 8},
		{256, 1, 256, 1, 128},
		{3, 3, 7, 3, 7, 1, 1, 200, 2, 2, 9, 100, 100, 5, 6, 6},
	}
	a := mustNew(t, "source").(*source)
	for _, weights := range weightSets {
		set, _ := newSet(weights...)
		for _, c := range addrs(20000) {
			h := HashAddr(c)
			want, wantScore := -1, 0.0
			for i, b := range set {
				sc := score(unit(splitmix.Mix64(h^hashKey(b.Key()))), b.Weight())
				if sc > wantScore {
					want, wantScore = i, sc
				}
			}
			if got := a.Pick(set, nil, h); got != want {
				t.Fatalf("weights %v, client %s: Pick = %d, full scoring gives %d", weights, c, got, want)
			}
		}
	}
}
