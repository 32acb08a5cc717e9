package balance

import (
	"math/bits"
	"math/rand/v2"
)

// random2 is the power of two choices: it draws two distinct usable backends,
// each with probability proportional to its weight, and keeps the one with the
// lower Load/Weight (the first drawn on a tie). It spreads load nearly as
// evenly as least connections without a shared scan order, and unlike least
// connections it does not herd every balancer node onto the same idle backend.
//
// Random numbers come from math/rand/v2's global generator, which is per
// thread and takes no lock. Usable backends are collected in arrays on the
// stack for sets of up to stackBackends; larger sets are walked again instead.
type random2 struct {
	rnd func() uint64 // nil: rand.Uint64; set by tests for reproducibility
}

const stackBackends = 64

func (r *random2) uint64() uint64 {
	if r.rnd != nil {
		return r.rnd()
	}
	return rand.Uint64()
}

// below returns a uniform number in [0, n).
func (r *random2) below(n int64) int64 {
	hi, _ := bits.Mul64(r.uint64(), uint64(n))
	return int64(hi)
}

func (r *random2) Pick(backends []Backend, skip func(int) bool, _ uint64) int {
	if len(backends) > stackBackends {
		return r.pickLarge(backends, skip)
	}
	var idx [stackBackends]int
	var cum [stackBackends]int64 // cumulative weights of idx[:m]
	m, total := 0, int64(0)
	for i, b := range backends {
		if skip != nil && skip(i) {
			continue
		}
		if w := int64(b.Weight()); w > 0 {
			total += w
			idx[m], cum[m] = i, total
			m++
		}
	}
	switch m {
	case 0:
		return -1
	case 1:
		return idx[0]
	}
	a := search(cum[:m], r.below(total))
	wa, start := cum[a], int64(0)
	if a > 0 {
		start = cum[a-1]
		wa -= start
	}
	// Draw the second from the weight outside a's range.
	x := r.below(total - wa)
	if x >= start {
		x += wa
	}
	b := search(cum[:m], x)
	wb := cum[b]
	if b > 0 {
		wb -= cum[b-1]
	}
	return lessLoaded(backends, idx[a], wa, idx[b], wb)
}

// search returns the first j with cum[j] > x.
func search(cum []int64, x int64) int {
	lo, hi := 0, len(cum)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if cum[mid] > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// lessLoaded returns a, or b when b's Load/Weight is strictly lower.
func lessLoaded(backends []Backend, a int, wa int64, b int, wb int64) int {
	if backends[b].Load()*wa < backends[a].Load()*wb {
		return b
	}
	return a
}

// pickLarge is Pick for sets too large for the stack arrays: it walks the set
// once to total the weights and once more per draw. skip or weights may change
// between walks; a draw then lands on the last usable backend it saw.
func (r *random2) pickLarge(backends []Backend, skip func(int) bool) int {
	m, total := 0, int64(0)
	for i, b := range backends {
		if skip != nil && skip(i) {
			continue
		}
		if w := int64(b.Weight()); w > 0 {
			total += w
			m++
		}
	}
	if m == 0 {
		return -1
	}
	a, wa := walk(backends, skip, r.below(total), -1)
	if m == 1 || a < 0 || wa >= total {
		return a
	}
	b, wb := walk(backends, skip, r.below(total-wa), a)
	if b < 0 {
		return a
	}
	return lessLoaded(backends, a, wa, b, wb)
}

// walk returns the usable backend (other than except) whose cumulative weight
// range holds x, and its weight.
func walk(backends []Backend, skip func(int) bool, x int64, except int) (int, int64) {
	last, lastW, sum := -1, int64(0), int64(0)
	for i, b := range backends {
		if i == except || skip != nil && skip(i) {
			continue
		}
		w := int64(b.Weight())
		if w <= 0 {
			continue
		}
		if sum += w; sum > x {
			return i, w
		}
		last, lastW = i, w
	}
	return last, lastW
}
