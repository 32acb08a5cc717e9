// Package testnet is internal/netlab for tests: Start builds a network of
// namespace hosts for one test and removes it when the test ends, and
// Require ends a test on a machine that cannot build one. Its types are
// netlab's, under the names tests have always used.
//
// It imports testing, so only tests may import it: programs (the demo, the
// benchmarks) use netlab itself, and cmd/haven's TestBinaryLinksNoTestCode
// keeps it that way for the shipped binary.
package testnet

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/testenv"
)

// The types of a network, from netlab.
type (
	// Net is a network of hosts in namespaces.
	Net = netlab.Net
	// Options describes the hosts of a Net.
	Options = netlab.Options
	// Host is one machine of a Net.
	Host = netlab.Host
	// Proc is a process started by Host.Start.
	Proc = netlab.Proc
	// ARPPacket is an ARP packet that entered a Net's switch.
	ARPPacket = netlab.ARPPacket
	// WANStats counts what a Net's WAN relay did.
	WANStats = netlab.WANStats
)

// Outputs returns the output of each of procs, its last max bytes, under a
// line naming its host, as netlab.Outputs does.
func Outputs(max int, procs ...*Proc) string { return netlab.Outputs(max, procs...) }

// Start is netlab.New for tests: it calls Require (and RequireTUN for a WAN
// delay), builds the network with t.Context and registers its Close with
// t.Cleanup. When the test has failed, the cleanup first logs the tail of
// every started process's output (all of it, one file per process, in the
// directory HAVEN_TEST_LOGS names, when set), and what the WAN relay did if
// there is one.
func Start(t testing.TB, opts Options) *Net {
	t.Helper()
	Require(t)
	if opts.WANDelay > 0 {
		RequireTUN(t)
	}
	n, err := netlab.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			const tail = 4 << 10
			dir := os.Getenv("HAVEN_TEST_LOGS")
			for i, p := range n.Procs() {
				out := p.Output()
				if dir != "" {
					// The whole output, where the test log keeps its tail.
					f := filepath.Join(dir, fmt.Sprintf("%s-%d.log", t.Name(), i))
					if err := os.WriteFile(f, []byte(p.String()+"\n"+out), 0o644); err != nil {
						t.Logf("HAVEN_TEST_LOGS: %v", err)
					}
				}
				if len(out) > tail {
					out = "..." + out[len(out)-tail:]
				}
				t.Logf("testnet: output of %s:\n%s", p, out)
			}
			if st := n.WANStats(); st != (WANStats{}) {
				t.Logf("testnet: wan relay: %+v", st)
			}
		}
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// Require checks what a Net needs: Linux, root, ip from iproute2, nft from
// nftables and kernel support for network namespaces. When something is
// missing it ends the test as testenv.Need does: skipped off CI, failed in
// CI. In -short mode it skips: namespace tests are integration tests.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("testnet: network namespace tests do not run in -short mode")
	}
	testenv.Need(t, runtime.GOOS == "linux", "testnet: needs Linux, not %s", runtime.GOOS)
	testenv.NeedRoot(t)
	testenv.NeedCommand(t, "ip", "iproute2")
	testenv.NeedCommand(t, "nft", "nftables")
	_, err := os.Stat("/proc/self/ns/net")
	testenv.Need(t, err == nil, "testnet: needs a kernel with network namespaces: %v", err)
}

// RequireTUN checks what a WAN delay needs beyond Require: the TUN device
// (/dev/net/tun, module tun). Start calls it when Options.WANDelay is set;
// a test that calls Net.SetWANDelay later calls it itself.
func RequireTUN(t testing.TB) {
	t.Helper()
	_, err := os.Stat("/dev/net/tun")
	testenv.Need(t, err == nil, "testnet: a WAN delay needs the TUN device: %v", err)
}
