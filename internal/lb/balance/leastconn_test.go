package balance

import (
	"slices"
	"testing"
)

func TestLeastConn(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		loads   []int64
		skip    []int
		want    []int // the allowed picks
	}{
		{"least loaded", []int{1, 1, 1}, []int64{5, 2, 9}, nil, []int{1}},
		{"relative to weight", []int{4, 1, 1}, []int64{8, 3, 4}, nil, []int{0}}, // 2, 3, 4
		{"heavier wins", []int{1, 4, 1}, []int64{2, 7, 3}, nil, []int{1}},       // 2, 1.75, 3
		{"skipped least", []int{1, 1, 1}, []int64{5, 0, 9}, []int{1}, []int{0}},
		{"weight 0 least", []int{1, 0, 1}, []int64{5, 0, 9}, nil, []int{0}},
		{"ties share", []int{2, 1, 2}, []int64{4, 2, 4}, nil, []int{0, 1, 2}},
		{"ratio tie across weights", []int{2, 1, 5}, []int64{2, 1, 9}, nil, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustNew(t, "leastconn")
			set, fakes := newSet(tt.weights...)
			for i, l := range tt.loads {
				fakes[i].load.Store(l)
			}
			got := counts(a, set, skipSet(tt.skip...), 300)
			for i, c := range got[:len(set)] {
				if c > 0 && !contains(tt.want, i) {
					t.Errorf("picked %d %d times, want only %v (counts %v)", i, c, tt.want, got)
				}
			}
			if len(tt.want) > 1 {
				// Ties take turns: every tied backend gets a share.
				for _, i := range tt.want {
					if got[i] < 300/len(tt.want)/2 {
						t.Errorf("tied backend %d picked %d of 300 times (counts %v)", i, got[i], got)
					}
				}
			}
		})
	}
}

// TestLeastConnRotatesTies checks that idle, equal backends are used in turn
// rather than the first one always winning.
func TestLeastConnRotatesTies(t *testing.T) {
	a := mustNew(t, "leastconn")
	set, _ := newSet(1, 1, 1, 1)
	if got := counts(a, set, nil, 400); !slices.Equal(got, []int{100, 100, 100, 100, 0}) {
		t.Errorf("counts = %v, want 100 each", got)
	}
}

// TestLeastConnFollowsLoad simulates requests that stay in flight: each pick
// adds one to the load, so picks end up proportional to weight.
func TestLeastConnFollowsLoad(t *testing.T) {
	a := mustNew(t, "leastconn")
	set, fakes := newSet(3, 2, 1)
	for range 600 {
		fakes[a.Pick(set, nil, 0)].load.Add(1)
	}
	for i, want := range []int64{300, 200, 100} {
		if got := fakes[i].load.Load(); got != want {
			t.Errorf("backend %d load = %d, want %d", i, got, want)
		}
	}
}
