package balance

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkPick measures one pick per algorithm on 3 and 16 equal backends
// with light, uneven load and one backend skipped, from one goroutine.
func BenchmarkPick(b *testing.B) {
	for _, alg := range Names() {
		b.Run(alg, func(b *testing.B) {
			for _, n := range []int{3, 16} {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					a, set, skip := benchSetup(b, alg, n, false)
					b.ReportAllocs()
					h := uint64(0)
					for b.Loop() {
						h += 0x9e3779b97f4a7c15
						if a.Pick(set, skip, h) < 0 {
							b.Fatal("no pick")
						}
					}
				})
			}
		})
	}
}

// BenchmarkPickWeighted is BenchmarkPick with distinct weights, which costs
// source hashing a logarithm per backend.
func BenchmarkPickWeighted(b *testing.B) {
	for _, alg := range Names() {
		b.Run(alg, func(b *testing.B) {
			for _, n := range []int{3, 16} {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					a, set, skip := benchSetup(b, alg, n, true)
					b.ReportAllocs()
					h := uint64(0)
					for b.Loop() {
						h += 0x9e3779b97f4a7c15
						if a.Pick(set, skip, h) < 0 {
							b.Fatal("no pick")
						}
					}
				})
			}
		})
	}
}

// BenchmarkPickParallel measures contention: all goroutines share one
// algorithm and one set, as a balancer's connections do.
func BenchmarkPickParallel(b *testing.B) {
	for _, alg := range Names() {
		b.Run(alg, func(b *testing.B) {
			a, set, skip := benchSetup(b, alg, 16, false)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				h := uint64(0)
				for pb.Next() {
					h += 0x9e3779b97f4a7c15
					if a.Pick(set, skip, h) < 0 {
						panic("no pick")
					}
				}
			})
		})
	}
}

func benchSetup(b *testing.B, alg string, n int, weighted bool) (Algorithm, []Backend, func(int) bool) {
	weights := make([]int, n)
	for i := range weights {
		weights[i] = 100
		if weighted {
			weights[i] = 1 + i*7%256
		}
	}
	set, fakes := newSet(weights...)
	for i, f := range fakes {
		f.load.Store(int64(i % 5))
	}
	skip := func(i int) bool { return i == 1 }
	return mustNew(b, alg), set, skip
}

func BenchmarkHashAddr(b *testing.B) {
	clients := make([]netip.Addr, 1024)
	for i := range clients {
		clients[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 8: byte(i), 15: byte(i >> 8)})
	}
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink += HashAddr(clients[i&1023])
	}
	_ = sink
}
