package balance

import "sync/atomic"

// leastConn picks the usable backend with the lowest Load/Weight, comparing
// load_a*weight_b with load_b*weight_a so that no division or float is
// involved. The scan starts one index further on every call and keeps the
// first backend of the lowest ratio, so backends that tie (typically all idle
// ones) take turns instead of the first always winning.
type leastConn struct {
	next atomic.Uint64
}

func (lc *leastConn) Pick(backends []Backend, skip func(int) bool, _ uint64) int {
	n := len(backends)
	if n == 0 {
		return -1
	}
	i := int(lc.next.Add(1) % uint64(n))
	best, bestLoad, bestW := -1, int64(0), int64(0)
	for range n {
		if skip == nil || !skip(i) {
			b := backends[i]
			if w := int64(b.Weight()); w > 0 {
				l := b.Load()
				if best < 0 || l*bestW < bestLoad*w {
					best, bestLoad, bestW = i, l, w
				}
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	return best
}
