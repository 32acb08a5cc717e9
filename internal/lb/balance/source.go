package balance

import (
	"math"
	"sync/atomic"

	"github.com/haven-ha/haven/internal/splitmix"
)

// source is weighted rendezvous (highest random weight) hashing. For a client
// hash h, every usable backend i draws u_i = mix(h ^ hash(key_i)), read as a
// uniform number in (0,1), and scores w_i / -ln(u_i); the highest score wins.
// The score is an exponential race, so a backend wins a share w_i/Σw of the
// clients exactly, not approximately.
//
// Rendezvous rather than a ring with virtual nodes, because:
//
//   - Remapping is minimal by construction. A client's backend is the
//     argmax over the usable set of scores that depend only on the client and
//     that backend's key, so removing or skipping a backend moves only the
//     clients that were on it, each to its own second choice; when the
//     backend returns they move back. A new backend takes its share from
//     every other one and moves no client between the others. Index order
//     plays no part, and every balancer node maps a client alike (up to the
//     last bit of math.Log, should nodes differ in architecture).
//   - Weights are read on every call. Slow start changes effective weights
//     continuously; a ring would have to be rebuilt (and its memory
//     reallocated) at every step, rendezvous just scores with the new weight,
//     and only clients won or lost by the reweighted backend move.
//   - It needs no memory but one key hash per backend (built once per set)
//     and no rebuild on a health change; a ring with 100 points per unit of
//     weight costs up to 25,600 points per backend.
//
// The price is O(n) work per call, against O(log n) for a ring: a hash mix
// and a comparison per backend. Scores of equal weights are compared by u
// alone, and a cheap upper bound rules out most other losers, so only a few
// logarithms are taken per call. Source hashing serves sets of tens of
// backends, where this is well under the cost of accepting the connection.
//
// Skipped and weight-0 backends are left out of the argmax, which is the
// deterministic fallback order for that hash: the next highest score.
type source struct {
	set atomic.Pointer[keySet]
}

// keySet caches the key hashes of one backend set.
type keySet struct {
	first *Backend
	hash  []uint64
}

func (s *source) keyHashes(backends []Backend) []uint64 {
	ks := s.set.Load()
	if ks != nil && sameSet(backends, ks.first, len(ks.hash)) {
		return ks.hash
	}
	ks = &keySet{first: &backends[0], hash: make([]uint64, len(backends))}
	for i, b := range backends {
		ks.hash[i] = hashKey(b.Key())
	}
	s.set.Store(ks)
	return ks.hash
}

func (s *source) Pick(backends []Backend, skip func(int) bool, hash uint64) int {
	if len(backends) == 0 {
		return -1
	}
	kh := s.keyHashes(backends)
	kh = kh[:len(backends)]
	best, bestW, bestU := -1, 0, uint64(0)
	bestScore, scored := 0.0, false
	for i, b := range backends {
		if skip != nil && skip(i) {
			continue
		}
		w := b.Weight()
		if w <= 0 {
			continue
		}
		u := splitmix.Mix64(hash ^ kh[i])
		switch {
		case best < 0:
			best, bestW, bestU, scored = i, w, u, false
		case w == bestW:
			// The score is monotonic in u for a given weight.
			if u > bestU {
				best, bestU, scored = i, u, false
			}
		default:
			if !scored {
				bestScore, scored = score(unit(bestU), bestW), true
			}
			// -ln(f) = g + g²/2 + g³/3 + ... with g = 1-f, so w over the first
			// three terms bounds the score from above (the margin covers
			// rounding): most losers cost no logarithm.
			f := unit(u)
			g := 1 - f
			if float64(w)*(1+1e-9) < bestScore*(g+g*g*(0.5+g*(1.0/3))) {
				continue
			}
			// Ties on the score (rounding) go to the larger u, which keeps the
			// order total and the result independent of index order.
			if sc := score(f, w); sc > bestScore || sc == bestScore && u > bestU {
				best, bestW, bestU, bestScore = i, w, u, sc
			}
		}
	}
	return best
}

// unit maps u to a float in (0,1), uniform if u is.
func unit(u uint64) float64 {
	return (float64(u>>11) + 0.5) * (1.0 / (1 << 53))
}

// score is the rendezvous score of weight w for a draw f in (0,1).
func score(f float64, w int) float64 {
	return float64(w) / -math.Log(f)
}
