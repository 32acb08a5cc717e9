package balance

import (
	"math"
	"math/rand/v2"
	"testing"
)

// seeded returns a random2 with a reproducible generator.
func seeded(seed uint64) *random2 {
	return &random2{rnd: rand.New(rand.NewPCG(seed, 1)).Uint64}
}

// TestRandom2TwoDistinct checks that the two draws are distinct: with two
// usable backends, the less loaded always wins.
func TestRandom2TwoDistinct(t *testing.T) {
	set, fakes := newSet(1, 5, 1)
	fakes[0].load.Store(3)
	fakes[2].load.Store(2)
	a := seeded(1)
	for i := range 1000 {
		if got := a.Pick(set, skipSet(1), 0); got != 2 {
			t.Fatalf("pick %d = %d, want 2 (the less loaded of the two usable)", i, got)
		}
	}
}

// TestRandom2PrefersLessLoaded checks how often the least loaded backend wins:
// with n equal backends it is drawn in one of the two draws with probability
// 2/n and then always wins; the most loaded wins only if drawn twice, never.
func TestRandom2PrefersLessLoaded(t *testing.T) {
	const picks = 30000
	tests := []struct {
		name    string
		weights []int
		loads   []int64
		want    []float64 // expected share per backend
	}{
		// Loads differ: least loaded is in the pair 2/3 of the time (C(3,2)=3
		// pairs, 2 contain it); the middle wins only against the most loaded.
		{"equal weights", []int{1, 1, 1}, []int64{0, 5, 9}, []float64{2.0 / 3, 1.0 / 3, 0}},
		// Relative to weight: 8/4 = 2 is less than 3/1.
		{"relative to weight", []int{4, 1}, []int64{8, 3}, []float64{1, 0}},
		// Equal load: the first draw wins, so shares follow weights.
		{"idle follows weights", []int{3, 1}, []int64{0, 0}, []float64{0.75, 0.25}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, fakes := newSet(tt.weights...)
			for i, l := range tt.loads {
				fakes[i].load.Store(l)
			}
			got := counts(seeded(2), set, nil, picks)
			for i, share := range tt.want {
				want := share * picks
				if math.Abs(float64(got[i])-want) > 0.02*picks {
					t.Errorf("backend %d: %d of %d picks, want about %.0f", i, got[i], picks, want)
				}
			}
		})
	}
}

// TestRandom2Weights checks that with equal load/weight every backend is drawn
// in proportion to its weight, for small sets and sets walked without the
// stack arrays.
func TestRandom2Weights(t *testing.T) {
	for _, n := range []int{5, stackBackends + 36} {
		weights := make([]int, n)
		total := 0
		for i := range weights {
			weights[i] = 1 + i%4
			total += weights[i]
		}
		set, _ := newSet(weights...)
		skip := func(i int) bool { return i == 0 }
		total -= weights[0]
		const picks = 100000
		got := counts(seeded(3), set, skip, picks)
		if got[0] != 0 || got[n] != 0 {
			t.Fatalf("n=%d: skipped backend picked %d times, none %d times", n, got[0], got[n])
		}
		for i := 1; i < n; i++ {
			want := float64(picks) * float64(weights[i]) / float64(total)
			if math.Abs(float64(got[i])-want) > 6*math.Sqrt(want)+0.01*want {
				t.Errorf("n=%d backend %d (weight %d): %d picks, want about %.0f", n, i, weights[i], got[i], want)
			}
		}
	}
}

// TestRandom2Large checks the walked path's edge cases.
func TestRandom2Large(t *testing.T) {
	weights := make([]int, stackBackends+1)
	set, fakes := newSet(weights...)
	a := seeded(4)
	if got := a.Pick(set, nil, 0); got != -1 {
		t.Errorf("all weight 0: %d, want -1", got)
	}
	fakes[40].weight.Store(7)
	if got := a.Pick(set, nil, 0); got != 40 {
		t.Errorf("one usable: %d, want 40", got)
	}
	fakes[50].weight.Store(1)
	fakes[50].load.Store(10)
	for range 100 {
		if got := a.Pick(set, nil, 0); got != 40 {
			t.Fatalf("two usable: %d, want the less loaded 40", got)
		}
	}
}
