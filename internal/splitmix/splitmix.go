// Package splitmix is splitmix64's finaliser (Steele, Lea and Flood,
// "Fast splittable pseudorandom number generators", 2014, with Stafford's
// Mix13 constants): a bijection of a uint64 with full avalanche, so that
// inputs differing in one bit give outputs differing in about half of
// theirs. It costs two multiplications and three shifts.
//
// Two roles hash with it: the load balancer's source hashing
// (internal/lb/balance) and the traffic manager's rendezvous hashing
// (internal/gtm). It lives in a package of its own because roles do not
// import each other, and a copy in each would drift.
package splitmix

// Mix64 returns the finalised x. Mix64(0) is 0; it is not a hash of
// strings or bytes by itself, but spreads a word that already holds them
// (an FNV-1a sum, two halves of an address) over all 64 bits.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
