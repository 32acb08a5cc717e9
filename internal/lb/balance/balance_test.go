package balance

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeBackend is a Backend whose weight and load tests set.
type fakeBackend struct {
	key    string
	weight atomic.Int64
	load   atomic.Int64
}

func (b *fakeBackend) Weight() int    { return int(b.weight.Load()) }
func (b *fakeBackend) Load() int64    { return b.load.Load() }
func (b *fakeBackend) Key() string    { return b.key }
func (b *fakeBackend) String() string { return b.key }

// newSet returns backends named a, b, c, ... with the given weights.
func newSet(weights ...int) ([]Backend, []*fakeBackend) {
	set := make([]Backend, len(weights))
	fakes := make([]*fakeBackend, len(weights))
	for i, w := range weights {
		f := &fakeBackend{key: name(i)}
		f.weight.Store(int64(w))
		set[i], fakes[i] = f, f
	}
	return set, fakes
}

// name is the key of the i-th test backend: a..z, then b26, b27, ...
func name(i int) string {
	if i < 26 {
		return string(rune('a' + i))
	}
	return fmt.Sprintf("b%d", i)
}

// skipSet returns a skip function for the given indexes.
func skipSet(idx ...int) func(int) bool {
	m := map[int]bool{}
	for _, i := range idx {
		m[i] = true
	}
	return func(i int) bool { return m[i] }
}

func mustNew(t testing.TB, name string) Algorithm {
	t.Helper()
	a, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// counts picks n times and counts the picks of each index (-1 in the last slot).
func counts(alg Algorithm, set []Backend, skip func(int) bool, n int) []int {
	c := make([]int, len(set)+1)
	for range n {
		i := alg.Pick(set, skip, 0)
		if i < 0 {
			c[len(set)]++
			continue
		}
		c[i]++
	}
	return c
}

func TestNew(t *testing.T) {
	for _, n := range Names() {
		if _, err := New(n); err != nil {
			t.Errorf("New(%q): %v", n, err)
		}
	}
	_, err := New("round-robin")
	want := `balance: algorithm "round-robin" is not one of roundrobin, leastconn, source, random2`
	if err == nil || err.Error() != want {
		t.Errorf("New(round-robin) error = %v, want %q", err, want)
	}
}

// TestCommon checks what every algorithm guarantees.
func TestCommon(t *testing.T) {
	for _, alg := range Names() {
		t.Run(alg, func(t *testing.T) {
			tests := []struct {
				name    string
				weights []int
				skip    []int
				want    []int // allowed results
			}{
				{"empty", nil, nil, []int{-1}},
				{"all weight 0", []int{0, 0}, nil, []int{-1}},
				{"all skipped", []int{1, 2, 3}, []int{0, 1, 2}, []int{-1}},
				{"only one usable", []int{1, 0, 5}, []int{2}, []int{0}},
				{"weight 0 never", []int{0, 3, 0, 1}, nil, []int{1, 3}},
				{"skipped never", []int{1, 1, 1, 1}, []int{1, 3}, []int{0, 2}},
				{"negative weight", []int{-1, 1}, nil, []int{1}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					a := mustNew(t, alg)
					set, _ := newSet(tt.weights...)
					for i := range 200 {
						got := a.Pick(set, skipSet(tt.skip...), uint64(i)*0x9e3779b97f4a7c15)
						if !contains(tt.want, got) {
							t.Fatalf("pick %d = %d, want one of %v", i, got, tt.want)
						}
					}
				})
			}
		})
	}
}

func contains(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestNilSkip checks that a nil skip means no backend is skipped.
func TestNilSkip(t *testing.T) {
	for _, alg := range Names() {
		set, _ := newSet(1, 1)
		if got := mustNew(t, alg).Pick(set, nil, 7); got != 0 && got != 1 {
			t.Errorf("%s: Pick with nil skip = %d", alg, got)
		}
	}
}

// TestConcurrent hammers every algorithm from many goroutines while the set is
// replaced and weights and health change; run it with -race.
func TestConcurrent(t *testing.T) {
	for _, alg := range Names() {
		t.Run(alg, func(t *testing.T) {
			a := mustNew(t, alg)
			set, fakes := newSet(3, 2, 1, 1, 4)
			var cur atomic.Pointer[[]Backend]
			cur.Store(&set)
			var down atomic.Int64 // index currently skipped
			skip := func(i int) bool { return int64(i) == down.Load() }

			stop, reloaded := make(chan struct{}), make(chan struct{})
			go func() { // reloads, health and slow start
				defer close(reloaded)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					s := make([]Backend, 2+i%4)
					for j := range s {
						s[j] = fakes[(i+j)%len(fakes)]
					}
					cur.Store(&s)
					down.Store(int64(i % 5))
					fakes[i%len(fakes)].weight.Store(int64(i % 3))
				}
			}()

			var pickers sync.WaitGroup
			var bad atomic.Int64
			for g := range 8 {
				pickers.Go(func() {
					var prev *fakeBackend // in flight until the next pick
					for i := range 5000 {
						s := *cur.Load()
						got := a.Pick(s, skip, HashAddr(netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i)})))
						if got < -1 || got >= len(s) {
							bad.Add(1)
							continue
						}
						if prev != nil {
							prev.load.Add(-1)
							prev = nil
						}
						if got >= 0 {
							prev = s[got].(*fakeBackend)
							prev.load.Add(1)
						}
					}
					if prev != nil {
						prev.load.Add(-1)
					}
				})
			}
			pickers.Wait()
			close(stop)
			<-reloaded
			if n := bad.Load(); n > 0 {
				t.Fatalf("%d picks out of range", n)
			}
		})
	}
}

// TestHashAddr checks that the source hash is stable and ignores how an IPv4
// address is represented.
func TestHashAddr(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.1")
	if HashAddr(v4) != HashAddr(netip.AddrFrom16(v4.As16())) {
		t.Error("IPv4 and IPv4-mapped IPv6 hash differently")
	}
	z := netip.MustParseAddr("fe80::1%eth0")
	if HashAddr(z) != HashAddr(z.WithZone("")) {
		t.Error("zone changes the hash")
	}
	// Golden values: the hash must never change between releases, or every
	// balancer node would remap its source-hashed clients on upgrade.
	for _, tt := range []struct {
		addr string
		want uint64
	}{
		{"192.0.2.1", 0x95ca69fbb770be59},
		{"2001:db8::1", 0xa8865c9ed99bb04e},
	} {
		if got := HashAddr(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("HashAddr(%s) = %#x, want %#x", tt.addr, got, tt.want)
		}
	}
	// Consecutive addresses spread over all high bits.
	seen := map[uint64]bool{}
	for i := range 1024 {
		seen[HashAddr(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))>>56] = true
	}
	if len(seen) < 240 {
		t.Errorf("1024 consecutive addresses cover %d of 256 top bytes", len(seen))
	}
}
