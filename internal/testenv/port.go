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
	return freePortOn(t, "127.0.0.1")
}

// FreeAddr is FreePort on another loopback address: "ip:port", the port
// free on ip a moment ago, below the ephemeral range and given once per
// test binary whatever the address.
func FreeAddr(t testing.TB, ip string) string {
	t.Helper()
	return net.JoinHostPort(ip, strconv.Itoa(freePortOn(t, ip)))
}

func freePortOn(t testing.TB, ip string) int {
	t.Helper()
	low := ephemeralLow()
	givenMu.Lock()
	defer givenMu.Unlock()
	for range 200 {
		p := 10000 + rand.IntN(low-10000)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return p
	}
	t.Fatalf("no free TCP port on %s between 10000 and %d", ip, low)
	return 0
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
