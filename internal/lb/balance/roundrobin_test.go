package balance

import (
	"slices"
	"strings"
	"testing"
)

func TestRoundRobinSequence(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		skip    []int
		want    string // one letter per pick
	}{
		{"5,1,1 smooth", []int{5, 1, 1}, nil, "aabacaa" + "aabacaa"},
		{"equal", []int{1, 1, 1}, nil, "abcabc"},
		{"3,2,1", []int{3, 2, 1}, nil, "abacba" + "abacba"},
		{"5,1,1 with b skipped", []int{5, 1, 1}, []int{1}, "aaacaa" + "aaacaa"},
		{"weight 0 ignored", []int{2, 0, 1}, nil, "aca" + "aca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustNew(t, "roundrobin")
			set, _ := newSet(tt.weights...)
			if got := sequence(a, set, skipSet(tt.skip...), len(tt.want)); got != tt.want {
				t.Errorf("sequence = %s, want %s", got, tt.want)
			}
		})
	}
}

// sequence returns the keys of n picks, concatenated ("-" for none).
func sequence(a Algorithm, set []Backend, skip func(int) bool, n int) string {
	var sb strings.Builder
	for range n {
		if i := a.Pick(set, skip, 0); i < 0 {
			sb.WriteString("-")
		} else {
			sb.WriteString(set[i].Key())
		}
	}
	return sb.String()
}

func TestRoundRobinDistribution(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		skip    []int
		picks   int
		want    []int // per backend, then -1
	}{
		{"3,2,1", []int{3, 2, 1}, nil, 6000, []int{3000, 2000, 1000, 0}},
		{"3,2,1 b skipped keeps 3:1", []int{3, 2, 1}, []int{1}, 4000, []int{3000, 0, 1000, 0}},
		{"256,1", []int{256, 1}, nil, 257 * 10, []int{2560, 10, 0}},
		{"all skipped", []int{3, 2, 1}, []int{0, 1, 2}, 10, []int{0, 0, 0, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, _ := newSet(tt.weights...)
			got := counts(mustNew(t, "roundrobin"), set, skipSet(tt.skip...), tt.picks)
			if !slices.Equal(got, tt.want) {
				t.Errorf("counts = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRoundRobinSkipResumes checks that a backend skipped for a while rejoins
// without a burst: after it returns, every window of total-weight picks holds
// each backend weight times.
func TestRoundRobinSkipResumes(t *testing.T) {
	a := mustNew(t, "roundrobin")
	set, _ := newSet(3, 2, 1)
	sequence(a, set, nil, 4)
	sequence(a, set, skipSet(0), 5)
	for w := range 10 {
		got := counts(a, set, nil, 6)
		if !slices.Equal(got, []int{3, 2, 1, 0}) {
			t.Fatalf("window %d after return: counts = %v, want [3 2 1 0]", w, got)
		}
	}
}

// TestRoundRobinReload checks that the rotation state follows backends by key
// when the set is replaced, and that weight changes apply at once.
func TestRoundRobinReload(t *testing.T) {
	a := mustNew(t, "roundrobin")
	set, fakes := newSet(5, 1, 1)
	if got := sequence(a, set, nil, 3); got != "aab" {
		t.Fatalf("before reload: %s, want aab", got)
	}
	// Same backends, new slice, other order: the sequence continues.
	reordered := []Backend{fakes[2], fakes[0], fakes[1]}
	if got := sequence(a, reordered, nil, 4); got != "acaa" {
		t.Errorf("after reordering reload: %s, want acaa", got)
	}
	// A new backend joins with a fresh state; removed ones are forgotten.
	d := &fakeBackend{key: "d"}
	d.weight.Store(1)
	grown := []Backend{fakes[0], d}
	if got := sequence(a, grown, nil, 6); got != "aaadaa" {
		t.Errorf("after growing reload: %s, want aaadaa", got)
	}
	// Slow start: a weight change on the same slice applies immediately.
	fakes[0].weight.Store(3)
	if got := counts(a, grown, nil, 400); !slices.Equal(got, []int{300, 100, 0}) {
		t.Errorf("after reweight: counts = %v, want [300 100 0]", got)
	}
}
