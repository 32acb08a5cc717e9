package balance

import "sync"

// roundRobin is nginx's smooth weighted round-robin. Every pick adds each
// usable backend's weight to its current value, picks the backend with the
// largest current value (the first one on ties) and subtracts the total weight
// of the usable backends from it. Weights 5,1,1 give a a b a c a a, and any
// window of total-weight picks holds each backend exactly weight times, so
// heavy backends are interleaved with light ones instead of served in bursts.
// Skipped backends keep their current value, so the others keep their
// proportions while one is down and the rotation resumes where it was.
//
// The current values live under a mutex: the section is a handful of
// additions per backend. They are carried across set changes by Key, so a
// reload does not restart the rotation at the first backend.
type roundRobin struct {
	mu    sync.Mutex
	first *Backend // &backends[0] of the set cur belongs to
	keys  []string
	cur   []int64
}

func (rr *roundRobin) Pick(backends []Backend, skip func(int) bool, _ uint64) int {
	if len(backends) == 0 {
		return -1
	}
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if !sameSet(backends, rr.first, len(rr.cur)) {
		rr.rebuild(backends)
	}
	cur := rr.cur[:len(backends)]
	best, total := -1, int64(0)
	for i, b := range backends {
		if skip != nil && skip(i) {
			continue
		}
		w := b.Weight()
		if w <= 0 {
			continue
		}
		cur[i] += int64(w)
		total += int64(w)
		if best < 0 || cur[i] > cur[best] {
			best = i
		}
	}
	if best >= 0 {
		cur[best] -= total
	}
	return best
}

// rebuild adopts a new backend set, keeping the current value of every
// backend whose key was in the previous set.
func (rr *roundRobin) rebuild(backends []Backend) {
	prev := make(map[string]int64, len(rr.keys))
	for i, k := range rr.keys {
		prev[k] = rr.cur[i]
	}
	keys := make([]string, len(backends))
	cur := make([]int64, len(backends))
	for i, b := range backends {
		keys[i] = b.Key()
		cur[i] = prev[keys[i]]
	}
	rr.first, rr.keys, rr.cur = &backends[0], keys, cur
}
