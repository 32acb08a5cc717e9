package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/testenv"
)

const testPort = 7777

// The child mode of the test binary: it opens a fence in a namespace and
// kills itself, to show that the expiry needs no process.
const (
	childEnv     = "HAVEN_VIP_TEST_CHILD" // namespace name
	childAddrEnv = "HAVEN_VIP_TEST_ADDRS" // managed addresses, comma-separated; the first is opened
	childTTLEnv  = "HAVEN_VIP_TEST_TTL"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(childOpen(name, os.Getenv(childAddrEnv), os.Getenv(childTTLEnv)))
	}
	testenv.Main(m) // removes the haven binary the e2e tests build
}

func childOpen(nsName, addrList, ttlText string) int {
	fd, err := unix.Open("/var/run/netns/"+nsName, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var addrs []netip.Addr
	for _, s := range strings.Split(addrList, ",") {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	ttl, err := time.ParseDuration(ttlText)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	f := NewFence(FenceConfig{NetNS: fd})
	if err := f.Install(addrs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := f.Open(addrs[0], ttl); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("opened")
	// kill -9 ourselves: nothing of this process is left to close the fence.
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// remaining returns the time left on addr's element in the inet live set, or
// 0 without one.
func remaining(t *testing.T, f *Fence, addr netip.Addr) time.Duration {
	t.Helper()
	cc, err := nftables.New(nftables.WithNetNSFd(f.netns))
	if err != nil {
		t.Fatal(err)
	}
	ft := newFenceTables()
	s := ft.inetLive4
	if addr.Is6() {
		s = ft.inetLive6
	}
	elems, err := cc.GetSetElements(s)
	if err != nil {
		t.Fatalf("list %s: %v", s.Name, err)
	}
	for _, e := range elems {
		if slices.Equal(e.Key, addr.AsSlice()) {
			return e.Expires
		}
	}
	return 0
}

// windowEnds returns the end of addr's window in every window set that
// gates it, and fails the test unless each holds exactly one window for it
// that has not ended (ended ones linger until their elements time out).
func windowEnds(t *testing.T, f *Fence, addr netip.Addr) []time.Time {
	t.Helper()
	perGate, err := f.sw.Windows(addr.AsSlice())
	if err != nil {
		t.Fatal(err)
	}
	var ends []time.Time
	for i, ws := range perGate {
		if len(ws) != 1 {
			t.Fatalf("%s: %d open windows in gate %d, want 1: %v", addr, len(ws), i, ws)
		}
		ends = append(ends, ws[0])
	}
	return ends
}

// mustWindowEnd fails the test unless addr's windows all end in (from, to].
func mustWindowEnd(t *testing.T, f *Fence, addr netip.Addr, from, to time.Time) {
	t.Helper()
	for _, end := range windowEnds(t, f, addr) {
		if !end.After(from) || end.After(to) {
			t.Fatalf("%s: window ends at %s, want in (%s, %s]", addr,
				end.Format(time.StampMicro), from.Format(time.StampMicro), to.Format(time.StampMicro))
		}
	}
}

func nftList(t *testing.T, h *host, args ...string) string {
	t.Helper()
	out, err := h.run("nft", append([]string{"list"}, args...)...)
	if err != nil {
		t.Fatalf("nft list %s in %s: %v: %s", strings.Join(args, " "), h.name, err, out)
	}
	return out
}

func mustLive(t *testing.T, f *Fence, addr netip.Addr, want bool) {
	t.Helper()
	got, err := f.Live(addr)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Live(%s) = %v, want %v", addr, got, want)
	}
}

func TestFenceIPv4(t *testing.T) {
	requirePrereqs(t, "arping", "nft")
	l := newLAN(t)
	a, b := l.a, l.b
	vip := testVIP4.Addr()
	a.do(t, func() error { return AddAddress("eth0", testVIP4) })
	a.listen(t, "tcp", testPort)

	if !b.arping(vip) {
		t.Fatal("before the fence: no ARP reply for the VIP")
	}

	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f.Install([]netip.Addr{vip, testVIP6.Addr()}); err != nil {
		t.Fatal(err)
	}
	t.Logf("fence rules:\n%s\n%s", nftList(t, a, "table", "arp", TableName), nftList(t, a, "table", "inet", TableName))

	// A static neighbour entry in b takes ARP out of the way, to show that
	// the traffic itself is dropped too.
	staticNeigh := func(on bool) {
		if on {
			ipCmd(t, "-n", b.name, "neigh", "replace", vip.String(), "lladdr", a.mac.String(), "dev", "eth0", "nud", "permanent")
		} else {
			ipCmd(t, "-n", b.name, "neigh", "flush", "to", vip.String(), "dev", "eth0", "nud", "all")
		}
	}

	// Installed and closed: silent.
	mustLive(t, f, vip, false)
	if b.arping(vip) {
		t.Fatal("fence closed: ARP reply for the VIP")
	}
	staticNeigh(true)
	if err := b.dial(vip, testPort, 500*time.Millisecond); err == nil {
		t.Fatal("fence closed: TCP connection to the VIP opened")
	}

	// Open: answers.
	if err := f.Open(vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	mustLive(t, f, vip, true)
	if err := b.dial(vip, testPort, time.Second); err != nil {
		t.Fatalf("fence open: TCP to the VIP: %v", err)
	}
	staticNeigh(false)
	if !b.arping(vip) {
		t.Fatal("fence open: no ARP reply")
	}

	// Close: silent at once.
	if err := f.Close(vip); err != nil {
		t.Fatal(err)
	}
	mustLive(t, f, vip, false)
	if b.arping(vip) {
		t.Fatal("fence closed again: ARP reply")
	}
	if err := f.Close(vip); err != nil {
		t.Fatalf("closing a closed address: %v", err)
	}

	// A short window with no refresh closes by itself.
	if err := f.Open(vip, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 5*time.Second, "ARP replies stop after the window", func() (bool, string) {
		return !b.arping(vip), "still answering"
	})
	mustLive(t, f, vip, false)

	// Open again after an expiry.
	if err := f.Open(vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if !b.arping(vip) {
		t.Fatal("reopened after expiry: no ARP reply")
	}

	// A ttl under the kernel's granularity (after the commit margin)
	// closes.
	if err := f.Open(vip, CommitMargin+999*time.Microsecond); !errors.Is(err, ErrExpired) {
		t.Fatalf("Open with too short a ttl: %v, want ErrExpired", err)
	}
	mustLive(t, f, vip, false)
	if err := f.Open(vip, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.OpenUntil(vip, time.Now().Add(-time.Second)); !errors.Is(err, ErrExpired) {
		t.Fatalf("OpenUntil a past deadline: %v, want ErrExpired", err)
	}
	mustLive(t, f, vip, false)

	// Not a managed address.
	if err := f.Open(netip.MustParseAddr("198.18.10.200"), time.Second); err == nil || !strings.Contains(err.Error(), "not a managed address") {
		t.Fatalf("Open of an unmanaged address: %v", err)
	}
}

func TestFenceRefreshReplacesTime(t *testing.T) {
	requirePrereqs(t, "nft")
	l := newLAN(t)
	vip := testVIP4.Addr()
	f := NewFence(FenceConfig{NetNS: int(l.a.ns)})
	if err := f.Install([]netip.Addr{vip, testVIP6.Addr()}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []netip.Addr{vip, testVIP6.Addr()} {
		// Longer: extends.
		if err := f.Open(addr, 400*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := f.Open(addr, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := remaining(t, f, addr); r < 5*time.Second {
			t.Fatalf("%s: after Open(400ms) then Open(10s), %s left", addr, r)
		}
		// Shorter: shortens, it does not keep the longer time, in the
		// live element and in the window.
		before := time.Now()
		if err := f.Open(addr, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := remaining(t, f, addr); r > 2*time.Second || r == 0 {
			t.Fatalf("%s: after Open(10s) then Open(2s), %s left", addr, r)
		}
		mustWindowEnd(t, f, addr, before.Add(2*time.Second), time.Now().Add(2*time.Second))
		// Rounded down, never up.
		if err := f.Open(addr, 5*time.Second+999*time.Microsecond); err != nil {
			t.Fatal(err)
		}
		if r := remaining(t, f, addr); r > 5*time.Second {
			t.Fatalf("%s: after Open(5.000999s), %s left", addr, r)
		}
		// The arp family's set follows the inet one.
		mustLive(t, f, addr, true)
		if err := f.Close(addr); err != nil {
			t.Fatal(err)
		}
		mustLive(t, f, addr, false)
		// Opened again after a close (a plain add, no element to
		// replace): the new window, and then a refresh replaces it.
		if err := f.Open(addr, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := remaining(t, f, addr); r > 2*time.Second || r == 0 {
			t.Fatalf("%s: after Close then Open(2s), %s left", addr, r)
		}
		if err := f.Open(addr, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := remaining(t, f, addr); r < 5*time.Second {
			t.Fatalf("%s: after Close, Open(2s), Open(10s), %s left", addr, r)
		}
		mustLive(t, f, addr, true)

		// A restarted agent's Fence does not know the windows left by
		// the last one: it reads and replaces them.
		g := NewFence(FenceConfig{NetNS: int(l.a.ns)})
		if err := g.Install([]netip.Addr{vip, testVIP6.Addr()}); err != nil {
			t.Fatal(err)
		}
		before = time.Now()
		if err := g.Open(addr, 3*time.Second); err != nil {
			t.Fatalf("%s: a new Fence opening over the windows of an old one: %v", addr, err)
		}
		mustWindowEnd(t, g, addr, before.Add(3*time.Second), time.Now().Add(3*time.Second))
		mustLive(t, g, addr, true)
	}
}

// TestFenceSlowCommit stands for a process suspended between reading the
// clock and committing: the window must still end by the deadline.
func TestFenceSlowCommit(t *testing.T) {
	requirePrereqs(t, "nft")
	l := newLAN(t)
	vip := testVIP4.Addr()
	f := NewFence(FenceConfig{NetNS: int(l.a.ns)})
	if err := f.Install([]netip.Addr{vip}); err != nil {
		t.Fatal(err)
	}
	suspended := 0
	f.sw.SetCommitHooks(func() {
		if suspended == 0 {
			time.Sleep(300 * time.Millisecond)
		}
		suspended++
	}, nil)

	deadline := time.Now().Add(time.Second)
	if err := f.OpenUntil(vip, deadline); err != nil {
		t.Fatal(err)
	}
	left := time.Until(deadline)
	if r := remaining(t, f, vip); r > left || r == 0 {
		t.Fatalf("after a slow commit: element has %s left, the deadline is %s away", r, left)
	}
	if suspended < 2 {
		t.Fatalf("slow commit not redone (%d batches)", suspended)
	}

	// The deadline passes during the suspension: closed, ErrExpired.
	suspended = 0
	if err := f.OpenUntil(vip, time.Now().Add(200*time.Millisecond)); !errors.Is(err, ErrExpired) {
		t.Fatalf("deadline passed during the commit: %v, want ErrExpired", err)
	}
	mustLive(t, f, vip, false)
}

// TestFenceLateCommit stands for a process frozen between reading the clock
// and committing until after the deadline: the batch lands a relative
// timeout computed before the freeze, which outlives the deadline. The
// address must be silent from the deadline on anyway, before OpenUntil
// notices the late commit and closes it.
func TestFenceLateCommit(t *testing.T) {
	requirePrereqs(t, "arping", "nft")
	l := newLAN(t)
	a, b := l.a, l.b
	vip := testVIP4.Addr()
	a.do(t, func() error { return AddAddress("eth0", testVIP4) })
	a.listen(t, "tcp", testPort)
	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f.Install([]netip.Addr{vip}); err != nil {
		t.Fatal(err)
	}
	if err := f.Open(vip, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !b.arping(vip) {
		t.Fatal("fence open: no ARP reply")
	}

	deadline := time.Now().Add(time.Second)
	frozen, checked := false, false
	var answered []string
	before := func() {
		if !frozen {
			frozen = true
			time.Sleep(time.Until(deadline) + 50*time.Millisecond)
		}
	}
	after := func() {
		if checked {
			return
		}
		checked = true
		if r := remaining(t, f, vip); r < 500*time.Millisecond {
			t.Errorf("the late commit left %s on the element: the test needs it live well past the deadline", r)
		}
		ipCmd(t, "-n", b.name, "neigh", "replace", vip.String(), "lladdr", a.mac.String(), "dev", "eth0", "nud", "permanent")
		if err := b.dial(vip, testPort, 200*time.Millisecond); err == nil {
			answered = append(answered, "TCP connection")
		}
		ipCmd(t, "-n", b.name, "neigh", "flush", "to", vip.String(), "dev", "eth0", "nud", "all")
		if b.arping(vip) {
			answered = append(answered, "ARP reply")
		}
	}
	f.sw.SetCommitHooks(before, after)

	if err := f.OpenUntil(vip, deadline); !errors.Is(err, ErrExpired) {
		t.Fatalf("deadline passed during the commit: %v, want ErrExpired", err)
	}
	if !checked {
		t.Fatal("the late batch was not committed")
	}
	if len(answered) > 0 {
		t.Fatalf("after the deadline, while the late commit's element was live: %s", strings.Join(answered, ", "))
	}
	mustLive(t, f, vip, false)
}

// TestFenceExpiresWithoutProcess opens the fence from a child process that
// then kills itself with SIGKILL: the address still goes silent on time.
func TestFenceExpiresWithoutProcess(t *testing.T) {
	requirePrereqs(t, "arping", "nft")
	l := newLAN(t)
	a, b := l.a, l.b
	vip := testVIP4.Addr()
	a.do(t, func() error { return AddAddress("eth0", testVIP4) })

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childEnv+"="+a.name,
		childAddrEnv+"="+vip.String()+","+testVIP6.Addr().String(),
		childTTLEnv+"=3s")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL || !strings.Contains(string(out), "opened") {
		t.Fatalf("child: %v: %s", err, out)
	}

	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	mustLive(t, f, vip, true)
	if !b.arping(vip) {
		t.Fatal("opened by the child: no ARP reply")
	}
	testenv.Poll(t, 10*time.Second, "ARP replies stop with the child dead", func() (bool, string) {
		return !b.arping(vip), "still answering"
	})
	mustLive(t, f, vip, false)
}

var (
	counterRE       = regexp.MustCompile(`counter packets (\d+)`)
	timedElementsRE = regexp.MustCompile(`(?m)^\s*elements = \{[^}]*expires[^}]*\}\n`)
)

func TestFenceIPv6(t *testing.T) {
	requirePrereqs(t, "nft")
	l := newLAN(t)
	a, b := l.a, l.b
	vip := testVIP6.Addr()
	a.do(t, func() error { return AddAddress("eth0", testVIP6) })
	a.listen(t, "tcp6", testPort)

	if err := b.dial(vip, testPort, 2*time.Second); err != nil {
		t.Fatalf("before the fence: %v", err)
	}
	ipCmd(t, "-n", b.name, "-6", "neigh", "flush", "to", vip.String(), "dev", "eth0", "nud", "all")

	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f.Install([]netip.Addr{testVIP4.Addr(), vip}); err != nil {
		t.Fatal(err)
	}

	// Closed: b's neighbour solicitations get no advertisement.
	if err := b.dial(vip, testPort, 1500*time.Millisecond); err == nil {
		t.Fatal("fence closed: TCP connection to the VIP opened")
	}
	if mac, seen := b.neighMAC(t, vip); mac != "" {
		t.Fatalf("fence closed: b resolved the VIP: %s", seen)
	}
	naDrops := 0 // by both gates' rules
	for _, line := range strings.Split(nftList(t, a, "chain", "inet", TableName, chainOutput), "\n") {
		if strings.Contains(line, "nd-neighbor-advert") || strings.Contains(line, "@th,64,128") {
			if m := counterRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[1])
				naDrops += n
			}
		}
	}
	if naDrops == 0 {
		t.Fatalf("no neighbour advertisement dropped by the target rule:\n%s", nftList(t, a, "chain", "inet", TableName, chainOutput))
	}

	// A static entry in b: the traffic itself is dropped too.
	ipCmd(t, "-n", b.name, "-6", "neigh", "replace", vip.String(), "lladdr", a.mac.String(), "dev", "eth0", "nud", "permanent")
	if err := b.dial(vip, testPort, 500*time.Millisecond); err == nil {
		t.Fatal("fence closed: TCP connection to the VIP opened with a static neighbour")
	}
	ipCmd(t, "-n", b.name, "-6", "neigh", "flush", "to", vip.String(), "dev", "eth0", "nud", "all")

	// Open: b resolves and connects.
	if err := f.Open(vip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 5*time.Second, "TCP to the VIP with the fence open", func() (bool, string) {
		err := b.dial(vip, testPort, time.Second)
		return err == nil, fmt.Sprint(err)
	})
	if mac, seen := b.neighMAC(t, vip); mac != a.mac.String() {
		t.Fatalf("fence open: b's entry for the VIP: %s, want %s", seen, a.mac)
	}
}

func TestFenceInstallRemove(t *testing.T) {
	requirePrereqs(t, "nft")
	l := newLAN(t)
	a := l.a
	vip := testVIP4.Addr()
	vip2 := netip.MustParseAddr("198.18.10.101")

	// A table that is not ours, with a chain and a rule.
	for _, args := range [][]string{
		{"add", "table", "inet", "foreign"},
		{"add", "set", "inet", "foreign", "live4", "{ type ipv4_addr; }"},
		{"add", "chain", "inet", "foreign", "input", "{ type filter hook input priority 0; policy accept; }"},
		{"add", "rule", "inet", "foreign", "input", "ip saddr @live4 counter"},
		{"add", "table", "arp", "foreign"},
	} {
		if out, err := a.run("nft", args...); err != nil {
			t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	foreign := nftList(t, a, "table", "inet", "foreign")

	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f.Install([]netip.Addr{vip, testVIP6.Addr()}); err != nil {
		t.Fatal(err)
	}
	// Timed elements (Install may probe the kernel with one) change as
	// they age: compare without them.
	tables := func() string {
		all := nftList(t, a, "table", "inet", TableName) + nftList(t, a, "table", "arp", TableName)
		return timedElementsRE.ReplaceAllString(all, "")
	}
	first := tables()
	if err := f.Install([]netip.Addr{testVIP6.Addr(), vip, vip}); err != nil {
		t.Fatal(err)
	}
	if again := tables(); again != first {
		t.Fatalf("second Install changed the tables:\n%s\nthen:\n%s", first, again)
	}

	// Another process's Fence on the same namespace sees the same state, and
	// replacing the managed set keeps the live elements.
	if err := f.Open(vip, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	f2 := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f2.Install([]netip.Addr{vip, vip2}); err != nil {
		t.Fatal(err)
	}
	mustLive(t, f2, vip, true)
	for _, fam := range []string{"arp", "inet"} {
		managed := nftList(t, a, "set", fam, TableName, setManaged4)
		if !strings.Contains(managed, vip2.String()) {
			t.Fatalf("managed set in %s after reinstall:\n%s", fam, managed)
		}
	}
	if managed := nftList(t, a, "set", "inet", TableName, setManaged6); strings.Contains(managed, testVIP6.Addr().String()) {
		t.Fatalf("%s still managed after reinstall without it:\n%s", testVIP6.Addr(), managed)
	}

	if err := f2.Remove(); err != nil {
		t.Fatal(err)
	}
	if tables := nftList(t, a, "tables"); strings.Contains(tables, TableName) {
		t.Fatalf("after Remove:\n%s", tables)
	}
	if err := f2.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if err := f.Close(vip); err == nil {
		t.Fatal("Close with no fence installed: no error")
	}
	if got := nftList(t, a, "table", "inet", "foreign"); got != foreign {
		t.Fatalf("foreign table changed:\n%s\nthen:\n%s", foreign, got)
	}
	if tables := nftList(t, a, "tables"); !strings.Contains(tables, "table arp foreign") {
		t.Fatalf("foreign arp table gone:\n%s", tables)
	}
}

// TestKernelElementTimeout records how this kernel treats a set element's
// timeout when the element is added again, and checks the add-delete-add
// batch that Open relies on.
func TestKernelElementTimeout(t *testing.T) {
	requirePrereqs(t)
	l := newLAN(t)
	vip := testVIP4.Addr()
	f := NewFence(FenceConfig{NetNS: int(l.a.ns)})
	if err := f.Install([]netip.Addr{vip}); err != nil {
		t.Fatal(err)
	}
	set := newFenceTables().inetLive4
	key := vip.AsSlice()
	batch := func(build func(cc *nftables.Conn) error) error { return f.flush(build) }
	add := func(cc *nftables.Conn, ttl time.Duration) error {
		return cc.SetAddElements(set, []nftables.SetElement{{Key: key, Timeout: ttl}})
	}
	del := func(cc *nftables.Conn) error {
		return cc.SetDeleteElements(set, []nftables.SetElement{{Key: key}})
	}

	// Plain add over an existing element.
	if err := batch(func(cc *nftables.Conn) error { return add(cc, 60*time.Second) }); err != nil {
		t.Fatal(err)
	}
	if err := batch(func(cc *nftables.Conn) error { return add(cc, 2*time.Second) }); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, f, vip); r <= 2*time.Second {
		t.Logf("kernel: a plain add of an existing element replaces its timeout (%s left of 2s)", r)
	} else {
		t.Logf("kernel: a plain add of an existing element keeps its old timeout (%s left, 2s asked)", r)
	}

	// add, delete, add over an existing element, shorter.
	if err := batch(func(cc *nftables.Conn) error { return add(cc, 60*time.Second) }); err != nil {
		t.Fatal(err)
	}
	err := batch(func(cc *nftables.Conn) error {
		if err := add(cc, 3*time.Second); err != nil {
			return err
		}
		if err := del(cc); err != nil {
			return err
		}
		return add(cc, 3*time.Second)
	})
	if err != nil {
		t.Fatalf("add-delete-add over an existing element: %v", err)
	}
	if r := remaining(t, f, vip); r > 3*time.Second || r == 0 {
		t.Fatalf("add-delete-add over an existing element: %s left, want at most 3s", r)
	}

	// delete then add of a missing element fails the whole batch.
	if err := batch(del); err != nil {
		t.Fatal(err)
	}
	err = batch(func(cc *nftables.Conn) error {
		if err := del(cc); err != nil {
			return err
		}
		return add(cc, 3*time.Second)
	})
	t.Logf("kernel: delete+add of a missing element: %v", err)
	if err == nil {
		t.Logf("kernel: (delete of a missing element is not an error here)")
	} else if r := remaining(t, f, vip); r != 0 {
		t.Fatalf("failed batch left an element: %s", r)
	}

	// add, delete, add of a missing element.
	err = batch(func(cc *nftables.Conn) error {
		if err := add(cc, 3*time.Second); err != nil {
			return err
		}
		if err := del(cc); err != nil {
			return err
		}
		return add(cc, 3*time.Second)
	})
	if err != nil {
		t.Fatalf("add-delete-add of a missing element: %v", err)
	}
	if r := remaining(t, f, vip); r > 3*time.Second || r == 0 {
		t.Fatalf("add-delete-add of a missing element: %s left", r)
	}
	t.Logf("kernel: add-delete-add in one batch works over an existing and a missing element")
}

func TestNormalize(t *testing.T) {
	got, err := normalize([]netip.Addr{
		netip.MustParseAddr("2001:2::100"),
		netip.MustParseAddr("::ffff:198.18.1.100"),
		netip.MustParseAddr("198.18.1.100"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("198.18.1.100"), netip.MustParseAddr("2001:2::100")}
	if !slices.Equal(got, want) {
		t.Fatalf("normalize = %v, want %v", got, want)
	}
	if _, err := normalize([]netip.Addr{{}}); err == nil {
		t.Fatal("normalize of an invalid address: no error")
	}
	if _, err := normalize([]netip.Addr{netip.MustParseAddr("fe80::1%eth0")}); err == nil {
		t.Fatal("normalize of a zoned address: no error")
	}
}
