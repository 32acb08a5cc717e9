package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago,
// below the kernel's ephemeral range. A port from that range, which is
// what listening on port 0 gives, can be taken between the test's look
// and its server's bind as the source port of any connection the machine
// opens, and stays taken for that connection's life: a keeper test's
// postgres could not bind its port for a minute in CI ("Address already
// in use"), the port held by another package's client. The kernel never
// picks a source port below the range.
//
// A port is given once per test binary: two servers of one test, each
// asking before either binds, never get the same one.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, "127.0.0.1", 1)
}

// FreeAddr is FreePort on another loopback address: "ip:port", the port
// free on ip a moment ago, below the ephemeral range and given once per
// test binary whatever the address.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	return net.JoinHostPort(ip, strconv.Itoa(FreePorts(t, ip, 1)))
}

// FreePorts returns the first of n consecutive ports that were free on ip
// ("0.0.0.0": every address) a moment ago, below the ephemeral range, none
// of them given before in this test binary, and marks all n given.
func FreePorts(t testing.TB, ip string, n int) int {
	t.Helper()
	low := ephemeralLow()
	givenMu.Lock()
	defer givenMu.Unlock()
	for range 200 {
		p := 10000 + rand.IntN(low-10000-n)
		if !runFree(ip, p, n) {
			continue
		}
		for i := range n {
			given[p+i] = true
		}
		return p
	}
	t.Fatalf("no %d free consecutive TCP ports on %s between 10000 and %d", n, ip, low)
	return 0
}

// runFree reports whether ports p to p+n-1 are neither given nor taken on
// ip. Called with givenMu held.
func runFree(ip string, p, n int) bool {
	for i := range n {
		if given[p+i] {
			return false
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p+i)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				return n
			}
		}
	}
	return 32768
}
