package vip

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/haven-ha/haven/internal/testenv"
)

// The tests build their own hosts: network namespaces a, b and c on one
// Ethernet segment. b carries the segment as a bridge named eth0, with veths
// to a and c, whose ends are named eth0 too. Only 198.18.0.0/15 and
// 2001:2::/48 addresses are used, and nothing is linked to the machine's own
// namespace.

var (
	testVIP4 = netip.MustParsePrefix("198.18.10.100/24")
	testVIP6 = netip.MustParsePrefix("2001:2::100/64")
)

// requirePrereqs ends the test, as testenv.Need does, unless it runs as
// root on Linux with ip and the tools, each one of ip, nft and arping.
func requirePrereqs(t *testing.T, tools ...string) {
	t.Helper()
	testenv.Need(t, runtime.GOOS == "linux", "needs Linux, not %s", runtime.GOOS)
	testenv.NeedRoot(t)
	pkgs := map[string]string{"ip": "iproute2", "nft": "nftables", "arping": "iputils-arping"}
	for _, tool := range append([]string{"ip"}, tools...) {
		testenv.NeedCommand(t, tool, pkgs[tool])
	}
}

type host struct {
	name string // network namespace name
	ns   netns.NsHandle
	mac  net.HardwareAddr
	v4   netip.Addr
	v6   netip.Addr
}

type lan struct{ a, b, c *host }

var lanSeq atomic.Int32

// newLAN builds the three hosts and removes them when the test ends, even if
// it fails.
func newLAN(t *testing.T) *lan {
	t.Helper()
	requirePrereqs(t)
	prefix := fmt.Sprintf("vipt%d-%d", os.Getpid(), lanSeq.Add(1))
	l := &lan{}
	for i, hp := range []**host{&l.a, &l.b, &l.c} {
		h := &host{
			name: prefix + string(rune('a'+i)),
			v4:   netip.AddrFrom4([4]byte{198, 18, 10, byte(i + 1)}),
			v6:   netip.MustParseAddr(fmt.Sprintf("2001:2::%d", i+1)),
		}
		ipCmd(t, "netns", "add", h.name)
		t.Cleanup(func() {
			if h.ns.IsOpen() {
				h.ns.Close()
			}
			if out, err := exec.Command("ip", "netns", "del", h.name).CombinedOutput(); err != nil {
				t.Logf("ip netns del %s: %v: %s", h.name, err, out)
			}
		})
		ns, err := netns.GetFromName(h.name)
		if err != nil {
			t.Fatalf("open namespace %s: %v", h.name, err)
		}
		h.ns = ns
		*hp = h
	}
	b := l.b.name
	ipCmd(t, "-n", b, "link", "add", "eth0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
	for _, h := range []*host{l.a, l.c} {
		port := "p" + h.name[len(h.name)-1:]
		ipCmd(t, "-n", h.name, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", b)
		ipCmd(t, "-n", b, "link", "set", port, "master", "eth0", "up")
	}
	for _, h := range []*host{l.a, l.b, l.c} {
		ipCmd(t, "-n", h.name, "link", "set", "lo", "up")
		ipCmd(t, "-n", h.name, "link", "set", "eth0", "up")
		ipCmd(t, "-n", h.name, "addr", "add", h.v4.String()+"/24", "dev", "eth0")
		ipCmd(t, "-n", h.name, "addr", "add", h.v6.String()+"/64", "dev", "eth0", "nodad")
		h.do(t, func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			h.mac = ifi.HardwareAddr
			return nil
		})
	}
	return l
}

// ipCmd runs ip with args and fails the test on error.
func ipCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// run runs a command inside the host's namespace and returns its combined
// output and error.
func (h *host) run(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.name, name}, args...)...).CombinedOutput()
	return string(out), err
}

// do runs fn on a thread in the host's namespace and fails the test if fn
// fails. Sockets fn creates stay in that namespace.
func (h *host) do(t *testing.T, fn func() error) {
	t.Helper()
	if err := h.try(fn); err != nil {
		t.Fatalf("in %s: %v", h.name, err)
	}
}

// try runs fn on a thread in the host's namespace and returns its error.
func (h *host) try(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(h.ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with the
			// goroutine instead of reusing it in the wrong namespace.
			errc <- fmt.Errorf("restore namespace: %v (fn: %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// arping reports whether one ARP request from h for addr gets a reply.
func (h *host) arping(addr netip.Addr) bool {
	_, err := h.run("arping", "-c1", "-w1", "-I", "eth0", addr.String())
	return err == nil
}

// dial reports whether a TCP connection from h to addr:port opens.
func (h *host) dial(addr netip.Addr, port int, timeout time.Duration) error {
	return h.try(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(addr, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// listen accepts and closes TCP connections on port in h until the test
// ends.
func (h *host) listen(t *testing.T, network string, port int) {
	t.Helper()
	var ln net.Listener
	h.do(t, func() error {
		var err error
		ln, err = net.Listen(network, fmt.Sprintf(":%d", port))
		return err
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

var lladdrRE = regexp.MustCompile(`lladdr ([0-9a-f:]{17})`)

// neighMAC returns the link-layer address in h's neighbour entry for addr
// on eth0, or "" with the entry as seen.
func (h *host) neighMAC(t *testing.T, addr netip.Addr) (string, string) {
	t.Helper()
	out := strings.TrimSpace(ipCmd(t, "-n", h.name, "neigh", "show", addr.String(), "dev", "eth0"))
	if m := lladdrRE.FindStringSubmatch(out); m != nil {
		return m[1], out
	}
	return "", out
}

// sysctl sets a sysctl inside h's namespace.
func (h *host) sysctl(t *testing.T, key, value string) {
	t.Helper()
	if out, err := h.run("sysctl", "-w", key+"="+value); err != nil {
		t.Fatalf("sysctl %s=%s in %s: %v: %s", key, value, h.name, err, out)
	}
}
