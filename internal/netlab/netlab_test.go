package netlab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// timeout bounds every test; conditions are polled within it.
const timeout = time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually is testenv.Poll, for 10 seconds, of a condition that says
// what is wrong with an error.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	testenv.Poll(t, 10*time.Second, what, func() (bool, string) {
		err := cond()
		return err == nil, fmt.Sprint(err)
	})
}

func ping(from *netlab.Host, to netip.Addr, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return from.Ping(ctx, to)
}

// reach waits until from gets an answer to a ping to to.
func reach(t *testing.T, from *netlab.Host, to netip.Addr) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s pings %s", from, to), func() error {
		return ping(from, to, 500*time.Millisecond)
	})
}

// blocked checks that a ping from from to to gets no answer.
func blocked(t *testing.T, from *netlab.Host, to netip.Addr) {
	t.Helper()
	if err := ping(from, to, 300*time.Millisecond); err == nil {
		t.Fatalf("%s got an answer from %s; want none", from, to)
	}
}

func TestHostsAddressesAndReachability(t *testing.T) {
	t.Parallel()
	names := []string{"n1", "n2", "n3", "client"}
	n := testnet.Start(t, netlab.Options{Hosts: names})

	if got := len(n.Hosts()); got != len(names) {
		t.Fatalf("Hosts() has %d hosts, want %d", got, len(names))
	}
	for i, name := range names {
		h := n.Host(name)
		addr := netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)})
		mac := net.HardwareAddr{0x02, 0x68, 0x76, 0, 1, byte(11 + i)}
		if h.Addr != addr || h.Prefix != netip.PrefixFrom(addr, 24) || h.Iface != "eth0" || h.Segment != 1 || !bytes.Equal(h.MAC, mac) {
			t.Errorf("%s: addr %s prefix %s iface %s segment %d mac %s; want %s, %s/24, eth0, 1, %s",
				name, h.Addr, h.Prefix, h.Iface, h.Segment, h.MAC, addr, addr, mac)
		}
		if !strings.HasPrefix(h.Namespace, n.Name()+"-") {
			t.Errorf("%s: namespace %q does not start with %q", name, h.Namespace, n.Name()+"-")
		}
		err := h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			if !bytes.Equal(ifi.HardwareAddr, h.MAC) {
				return fmt.Errorf("eth0 has MAC %s, want %s", ifi.HardwareAddr, h.MAC)
			}
			for _, a := range addrs {
				if a.String() == h.Prefix.String() {
					return nil
				}
			}
			return fmt.Errorf("eth0 has addresses %v, want %s among them", addrs, h.Prefix)
		})
		if err != nil {
			t.Error(err)
		}
	}
	for _, from := range n.Hosts() {
		for _, to := range n.Hosts() {
			if from != to {
				reach(t, from, to.Addr)
			}
		}
	}
}

func TestSocketsMadeInDoStayInTheHost(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "client"}})
	n1, client := n.Host("n1"), n.Host("client")
	ctx := testContext(t)

	server := netip.AddrPortFrom(n1.Addr, 7007)
	if c, err := net.ListenPacket("udp4", server.String()); err == nil {
		c.Close()
		t.Fatalf("the test's own namespace has %s", n1.Addr)
	}
	pc, err := n1.ListenPacket("udp4", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() { // echo
		buf := make([]byte, 1500)
		for {
			size, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:size], from)
		}
	}()

	conn, err := client.DialContext(ctx, "udp4", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(); got != client.Addr {
		t.Fatalf("client socket has address %s, want %s", got, client.Addr)
	}
	done := make(chan error, 1)
	go func() { // used from a goroutine that never entered the namespace
		buf := make([]byte, 64)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := conn.Write([]byte("hello")); err != nil {
				done <- err
				return
			}
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			size, err := conn.Read(buf)
			if err == nil {
				if got := string(buf[:size]); got != "hello" {
					done <- fmt.Errorf("echo %q, want hello", got)
					return
				}
				done <- nil
				return
			}
		}
		done <- errors.New("no echo")
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCutLinkAndRestoreLink(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "n2", "client"}})
	n1, n2, client := n.Host("n1"), n.Host("n2"), n.Host("client")
	reach(t, client, n1.Addr)

	if err := n.CutLink(n1); err != nil {
		t.Fatal(err)
	}
	blocked(t, client, n1.Addr)
	blocked(t, n1, client.Addr)
	reach(t, client, n2.Addr)
	eventually(t, "n1 keeps its address and loses carrier", func() error {
		return n1.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(addrs, func(a net.Addr) bool { return a.String() == n1.Prefix.String() }) {
				return fmt.Errorf("eth0 lost %s: has %v", n1.Prefix, addrs)
			}
			if ifi.Flags&net.FlagRunning != 0 {
				return fmt.Errorf("eth0 is running: %v", ifi.Flags)
			}
			return nil
		})
	})

	if err := n.RestoreLink(n1); err != nil {
		t.Fatal(err)
	}
	reach(t, client, n1.Addr)
	reach(t, n1, client.Addr)
}

func TestPartitionAndHeal(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "n2", "client"}})
	n1, n2, client := n.Host("n1"), n.Host("n2"), n.Host("client")
	ctx := testContext(t)
	// n2 holds a floating address: a partition cuts n1 from it too.
	vip := netip.MustParseAddr("198.18.1.100")
	if out, err := n2.Command(ctx, "ip", "addr", "add", vip.String()+"/24", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("add %s to n2: %v: %s", vip, err, out)
	}
	reach(t, n1, n2.Addr)
	reach(t, n2, n1.Addr)
	reach(t, n1, vip)

	if err := n.Partition(n1, n2); err != nil {
		t.Fatal(err)
	}
	blocked(t, n1, n2.Addr)
	blocked(t, n2, n1.Addr)
	blocked(t, n1, vip)
	for _, h := range []*netlab.Host{n1, n2} {
		reach(t, h, client.Addr)
		reach(t, client, h.Addr)
	}
	for _, h := range n.Hosts() {
		out, err := h.Command(ctx, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset on %s: %v: %s", h, err, out)
		}
		if len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("%s has nftables rules it did not make:\n%s", h, out)
		}
	}

	if err := n.Heal(n1, n2); err != nil {
		t.Fatal(err)
	}
	reach(t, n1, n2.Addr)
	reach(t, n2, n1.Addr)
	reach(t, n1, vip)
}

func TestLoss(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "client"}})
	n1, client := n.Host("n1"), n.Host("client")
	ctx := testContext(t)
	reach(t, client, n1.Addr)
	reach(t, n1, client.Addr)

	if err := n.Loss(client, n1, 100); err != nil {
		t.Fatal(err)
	}
	blocked(t, client, n1.Addr)
	blocked(t, n1, client.Addr)

	if err := n.Loss(client, n1, 0); err != nil {
		t.Fatal(err)
	}
	reach(t, client, n1.Addr)
	for i := range 20 {
		if err := ping(client, n1.Addr, 5*time.Second); err != nil {
			t.Fatalf("ping %d with no loss: %v", i, err)
		}
	}

	// Half lost: of 200 datagrams, some arrive and some do not.
	sink, err := n1.ListenPacket("udp4", netip.AddrPortFrom(n1.Addr, 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	conn, err := client.DialContext(ctx, "udp4", sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := n.Loss(client, n1, 50); err != nil {
		t.Fatal(err)
	}
	const sent = 200
	for range sent {
		if _, err := conn.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.HealAll(); err != nil {
		t.Fatal(err)
	}
	received := 0
	buf := make([]byte, 64)
	eventually(t, "the end marker arrives", func() error {
		if _, err := conn.Write([]byte("end")); err != nil {
			return err
		}
		sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			size, _, err := sink.ReadFrom(buf)
			if err != nil {
				return err
			}
			switch string(buf[:size]) {
			case "data":
				received++
			case "end":
				return nil
			}
		}
	})
	if received == 0 || received == sent {
		t.Fatalf("with 50%% loss, %d of %d datagrams arrived", received, sent)
	}
	t.Logf("with 50%% loss, %d of %d datagrams arrived", received, sent)
}

// procState returns the state letter of /proc/PID/stat: S, R, T...
func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "", fmt.Errorf("cannot parse %q", s)
	}
	return s[i+2 : i+3], nil
}

func waitState(t *testing.T, p *netlab.Proc, stopped bool) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s stopped=%v", p, stopped), func() error {
		state, err := procState(p.PID)
		if err != nil {
			return err
		}
		if (state == "T") != stopped {
			return fmt.Errorf("in state %s", state)
		}
		return nil
	})
}

func TestProcFreezeThawKill(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}})
	n1 := n.Host("n1")
	p, err := n1.Start(testContext(t), "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec enters the namespace, then execs sleep in its place.
	eventually(t, fmt.Sprintf("PID %d becomes sleep itself", p.PID), func() error {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID))
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(comm)); got != "sleep" {
			return fmt.Errorf("it is %s", got)
		}
		return nil
	})
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/netns/"+n1.Namespace, &st); err != nil {
		t.Fatal(err)
	}
	if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID)); err != nil || link != fmt.Sprintf("net:[%d]", st.Ino) {
		t.Fatalf("%s is in namespace %s (%v), want net:[%d] of %s", p, link, err, st.Ino, n1.Namespace)
	}

	if err := p.Freeze(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, true)
	if err := p.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, false)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err = p.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("Wait after Kill: %v, want killed", err)
	}
	if err := p.Freeze(); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Freeze after exit: %v, want %v", err, os.ErrProcessDone)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("Kill after exit: %v", err)
	}
}

func TestProcSignal(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}})
	p, err := n.Host("n1").Start(testContext(t), "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("Wait after SIGTERM: %v, want terminated", err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit: %v, want %v", err, os.ErrProcessDone)
	}
}

func TestProcOutput(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}})
	p, err := n.Host("n1").Start(testContext(t), "sh", "-c", "echo to stdout; echo to stderr >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	if out := p.Output(); !strings.Contains(out, "to stdout\n") || !strings.Contains(out, "to stderr\n") {
		t.Fatalf("Output() = %q, want both lines", out)
	}
}

func TestWatchARPNamesTheHostThatAnswers(t *testing.T) {
	t.Parallel()
	testenv.NeedCommand(t, "arping", "iputils-arping")
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "n2", "client"}})
	n2, client := n.Host("n2"), n.Host("client")
	ctx := testContext(t)
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	arps, err := n.WatchARP(watchCtx)
	if err != nil {
		t.Fatal(err)
	}

	vip := netip.MustParseAddr("198.18.1.100")
	if out, err := n2.Command(ctx, "ip", "addr", "add", vip.String()+"/24", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("add %s to n2: %v: %s", vip, err, out)
	}
	eventually(t, "arping "+vip.String(), func() error {
		out, err := client.Command(ctx, "arping", "-c", "1", "-w", "1", "-I", "eth0", vip.String()).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	var seen []string
	var request, reply bool
	deadline := time.After(10 * time.Second)
	for !request || !reply {
		select {
		case p := <-arps:
			seen = append(seen, p.String())
			switch {
			case p.Op == netlab.ARPRequest && p.From == client && p.TargetIP == vip &&
				p.SenderIP == client.Addr && bytes.Equal(p.SenderMAC, client.MAC):
				request = true
			case p.Op == netlab.ARPReply && p.From == n2 && p.SenderIP == vip &&
				bytes.Equal(p.SenderMAC, n2.MAC) && p.TargetIP == client.Addr:
				reply = true
			}
		case <-deadline:
			t.Fatalf("saw request %v, reply %v; packets:\n%s", request, reply, strings.Join(seen, "\n"))
		}
	}

	stop()
	for {
		select {
		case _, ok := <-arps:
			if !ok {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the channel stays open after the context ended")
		}
	}
}

func namespaces(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			names = append(names, f[0])
		}
	}
	return names
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	testnet.Require(t)
	ctx := testContext(t)
	n, err := netlab.New(ctx, netlab.Options{Hosts: []string{"n1", "n2"}, Segment2: []string{"w1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if got := namespaces(t, n.Name()+"-"); len(got) != 5 {
		t.Fatalf("namespaces %v, want switch, router and 3 hosts", got)
	}
	frozen, err := n.Host("n1").Start(ctx, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := frozen.Freeze(); err != nil {
		t.Fatal(err)
	}
	waitState(t, frozen, true)
	untracked := n.Host("n2").Command(ctx, "sleep", "60")
	if err := untracked.Start(); err != nil {
		t.Fatal(err)
	}
	untrackedDone := make(chan error, 1)
	go func() { untrackedDone <- untracked.Wait() }()
	if err := n.Partition(n.Host("n1"), n.Host("w1")); err != nil {
		t.Fatal(err)
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := namespaces(t, n.Name()+"-"); len(got) != 0 {
		t.Fatalf("after Close, namespaces %v remain", got)
	}
	select {
	case <-frozen.Done():
	default:
		t.Fatal("Close returned before the frozen process was reaped")
	}
	select {
	case <-untrackedDone:
	case <-time.After(10 * time.Second):
		t.Fatal("a process started with Command survived Close")
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Host("n1").Start(ctx, "true"); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	if err := n.Partition(n.Host("n1"), n.Host("n2")); err == nil {
		t.Fatal("Partition after Close succeeded")
	}
}

func TestSweepRemovesNamespacesOfDeadProcesses(t *testing.T) {
	t.Parallel()
	testnet.Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("hv%d-1-n1", dead.ProcessState.Pid())
	mine := fmt.Sprintf("hv%d-999999-n1", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", mine).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", mine, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", mine).Run() })
	// The stale namespace looks dead to every Sweep, and the test
	// processes of other packages sweep when they start a network: one may
	// remove it while it is being made. Make it again then.
	var orphanDone chan error
	for attempt := 1; orphanDone == nil; attempt++ {
		if attempt > 5 {
			t.Fatalf("could not set up %s with a process in it: other sweeps kept removing it", stale)
		}
		orphanDone = staleWithOrphan(t, stale)
	}
	if err := netlab.Sweep(); err != nil {
		t.Fatal(err)
	}
	if got := namespaces(t, stale); len(got) != 0 {
		t.Errorf("Sweep left %v of a dead process", got)
	}
	if got := namespaces(t, mine); len(got) != 1 {
		t.Errorf("Sweep removed %s of a live process", mine)
	}
	select {
	case <-orphanDone:
	case <-time.After(10 * time.Second):
		t.Error("Sweep left a process running in the stale namespace")
	}
}

// staleWithOrphan makes namespace ns with a process in it, and returns a
// channel that gets the process's end; nil when another process's Sweep
// removed the namespace meanwhile.
func staleWithOrphan(t *testing.T, ns string) chan error {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Logf("ip netns add %s: %v: %s", ns, err, out)
		exec.Command("ip", "netns", "del", ns).Run()
		return nil
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	orphan := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- orphan.Wait() }()
	// ip netns exec enters the namespace after it starts: wait until the
	// namespace holds the process, or Sweep may look before it does.
	exited := false
	testenv.Poll(t, 10*time.Second, "the orphan entering "+ns, func() (bool, string) {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return true, ""
		}
		select {
		case <-done: // the namespace went before the process entered it
			exited = true
			return true, ""
		default:
			return false, "no process in it"
		}
	})
	if exited {
		return nil
	}
	return done
}

func TestSecondSegmentThroughRouter(t *testing.T) {
	t.Parallel()
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1", "client"}, Segment2: []string{"w1"}, MTU: 1400})
	n1, client, w1, router := n.Host("n1"), n.Host("client"), n.Host("w1"), n.Host(netlab.RouterName)
	if w1.Addr != netip.MustParseAddr("198.18.2.11") || w1.Segment != 2 {
		t.Fatalf("w1 has %s on segment %d, want 198.18.2.11 on 2", w1.Addr, w1.Segment)
	}
	if router.Addr != netip.MustParseAddr("198.18.1.1") {
		t.Fatalf("router has %s, want 198.18.1.1", router.Addr)
	}
	err := w1.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if ifi.MTU != 1400 {
			return fmt.Errorf("eth0 has MTU %d, want 1400", ifi.MTU)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reach(t, w1, n1.Addr)
	reach(t, n1, w1.Addr)
	reach(t, w1, router.Addr)

	if err := n.Partition(n1, w1); err != nil {
		t.Fatal(err)
	}
	blocked(t, w1, n1.Addr)
	blocked(t, n1, w1.Addr)
	reach(t, client, w1.Addr)
	if err := n.Heal(n1, w1); err != nil {
		t.Fatal(err)
	}
	reach(t, w1, n1.Addr)

	if err := n.CutLink(router); err != nil {
		t.Fatal(err)
	}
	blocked(t, w1, n1.Addr)
	reach(t, n1, client.Addr)
	if err := n.HealAll(); err != nil {
		t.Fatal(err)
	}
	reach(t, w1, n1.Addr)
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts netlab.Options
		want string
	}{
		{netlab.Options{}, "no hosts"},
		{netlab.Options{Hosts: []string{"n1", "n1"}}, `"n1" appears twice`},
		{netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"n1"}}, `"n1" appears twice`},
		{netlab.Options{Hosts: []string{"router"}}, `"router" is reserved`},
		{netlab.Options{Hosts: []string{"switch"}}, `"switch" is reserved`},
		{netlab.Options{Hosts: []string{"averylonghostname"}}, `"averylonghostname" is not`},
		{netlab.Options{Hosts: []string{"N1"}}, `"N1" is not`},
		{netlab.Options{Hosts: []string{"n1"}, MTU: 20}, "mtu 20"},
		{netlab.Options{Hosts: []string{"n1"}, Segment3: []string{"n1"}}, `"n1" appears twice`},
		{netlab.Options{Hosts: []string{"n1"}, WANDelay: time.Millisecond}, "needs a second or third segment"},
		{netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}, WANDelay: -time.Millisecond}, "is negative"},
		{netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}, WANDelay: time.Millisecond, WANJitter: 2 * time.Millisecond}, "wan jitter 2ms is not between 0 and the wan delay 1ms"},
	} {
		_, err := netlab.New(context.Background(), tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", tc.opts, err, tc.want)
		}
	}
}
