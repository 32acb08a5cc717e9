package splitmix

import (
	"math/bits"
	"testing"
)

// The first outputs of the splitmix64 generator seeded with 0, as the
// reference implementation (prng.di.unimi.it/splitmix64.c) prints them:
// the generator adds the golden gamma, then finalises.
func TestReferenceOutputs(t *testing.T) {
	const gamma = 0x9e3779b97f4a7c15
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f}
	var state uint64
	for i, w := range want {
		state += gamma
		if got := Mix64(state); got != w {
			t.Errorf("output %d: %#x, want %#x", i, got, w)
		}
	}
}

// Flipping one input bit flips about half of the output bits.
func TestAvalanche(t *testing.T) {
	total, n := 0, 0
	for x := uint64(1); x < 1<<12; x++ {
		for b := range 64 {
			total += bits.OnesCount64(Mix64(x) ^ Mix64(x^1<<b))
			n++
		}
	}
	if mean := float64(total) / float64(n); mean < 31 || mean > 33 {
		t.Errorf("one flipped input bit flips %.2f output bits on average, want about 32", mean)
	}
}
