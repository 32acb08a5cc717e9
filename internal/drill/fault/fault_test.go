package fault

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// state is a process's state letter in /proc (S sleeping, T stopped).
// sleeper starts a process that does nothing for a while, with a child in
// a session of its own, as postgres's backends are.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "setsid sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range descendants(cmd.Process.Pid) {
			syscall.Kill(p, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

func TestPauseAndKill(t *testing.T) {
	cmd := sleeper(t)
	pid := cmd.Process.Pid
	var child int
	testenv.Poll(t, 5*time.Second, "the sleeper's child", func() (bool, string) {
		if d := descendants(pid); len(d) > 0 {
			child = d[0]
		}
		return child != 0, ""
	})
	var undone atomic.Int32 // told from the Manager's timer
	m := NewManager(Env{
		Process: func(role string) (int, error) {
			if role != "postgres" {
				return 0, fmt.Errorf("no role %s here", role)
			}
			return pid, nil
		},
		Undone: func(Kind) { undone.Add(1) },
	})
	t.Cleanup(func() { m.Close() })

	f, err := m.Inject(Spec{Kind: Pause, Target: "postgres", Duration: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{pid, child} {
		if s := stateOf(p); s != "T" {
			t.Errorf("paused: pid %d in state %s, want T (stopped)", p, s)
		}
	}
	if _, err := m.Inject(Spec{Kind: Pause, Target: "postgres", Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "active already: fault "+f.ID) {
		t.Errorf("a second pause of the same role: %v", err)
	}
	testenv.Poll(t, 10*time.Second, "the pause undone when its time is up", func() (bool, string) {
		s := stateOf(pid) + stateOf(child)
		return len(s) == 2 && awake(s), s
	})
	if len(m.List()) != 0 || undone.Load() != 1 {
		t.Errorf("after the pause: active %v, %d undone", m.List(), undone.Load())
	}

	if _, err := m.Inject(Spec{Kind: Kill, Target: "etcd", Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "no role etcd here") {
		t.Errorf("a kill of a role this node does not run: %v", err)
	}
	if _, err := m.Inject(Spec{Kind: Kill, Target: "postgres", Duration: time.Second}); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the killed process ended with %v, want SIGKILL", err)
	}
}

// begun waits until f has begun: a cut begins cutDelay after its answer.
func begun(f Fault) {
	time.Sleep(time.Until(f.Until.Add(-f.Spec.Duration)) + 50*time.Millisecond)
}

func TestRefusesBadSpecs(t *testing.T) {
	m := NewManager(Env{MaxDuration: time.Minute})
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Kind: "explode", Target: "postgres", Duration: time.Second}, `kind "explode" is not one of`},
		{Spec{Kind: Pause, Target: "postgres"}, "duration 0s: give one from 100ms to 1m0s"},
		{Spec{Kind: Pause, Target: "postgres", Duration: time.Hour}, "duration 1h0m0s"},
		{Spec{Kind: Drop, Duration: time.Second}, "name the peers"},
		{Spec{Kind: Kill, Duration: time.Second}, "name the target (postgres, agent or process:NAME)"},
		{Spec{Kind: Fill, Target: "postgres", Level: 101, Duration: time.Second}, "fill: level 101: give a percentage from 1 to 100"},
		{Spec{Kind: Fill, Target: "agent", Level: 50, Duration: time.Second}, "a fill fills a role's data directory"},
		{Spec{Kind: Loss, Duration: time.Second, Level: 10}, "loss: name the peers"},
		{Spec{Kind: Loss, Peers: []string{"b"}, Duration: time.Second}, "loss: level 0: give a percentage from 1 to 100"},
		{Spec{Kind: Loss, Peers: []string{"b"}, Level: 20, Duration: time.Second}, "this node knows no peers"},
		{Spec{Kind: Stop, Target: "postgres", Duration: time.Second}, "a stop hits a process:NAME"},
		{Spec{Kind: Pause, Target: "process:app", Duration: time.Second}, `process "app": drills.processes names none`},
		{Spec{Kind: Pause, Target: "postgres", Peers: []string{"b"}, Duration: time.Second}, `pause of "postgres": peers go with a drop, a loss or a pause of the agent`},
		{Spec{Kind: Kill, Target: "agent", Peers: []string{"b"}, Duration: time.Second}, `kill of "agent": peers go with`},
	} {
		if _, err := m.Inject(tc.spec); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
		}
	}
}

// TestFill fills a small tmpfs to 90% and empties it when the fault ends;
// Recover removes a fill a killed agent left.
func TestFill(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	full := func() int {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int((st.Blocks - st.Bfree) * 100 / (st.Blocks - st.Bfree + st.Bavail))
	}
	m := NewManager(Env{DataDir: func(string) (string, error) { return dir, nil }})
	t.Cleanup(func() { m.Close() })
	if _, err := m.Inject(Spec{Kind: Fill, Target: "postgres", Level: 90, Duration: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if p := full(); p < 89 || p > 91 {
		t.Errorf("filled to %d%%, want 90%%", p)
	}
	testenv.Poll(t, 10*time.Second, "the fill removed when its time is up", func() (bool, string) {
		p := full()
		return p < 5, fmt.Sprint(p, "%")
	})
	// A fill left behind by a killed agent.
	if _, err := m.Inject(Spec{Kind: Fill, Target: "postgres", Level: 50, Duration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// A disk already fuller than asked: refused as such, nothing injected
	// (a soak draws another fault on it).
	other := NewManager(Env{DataDir: func(string) (string, error) { return dir, nil }})
	if _, err := other.Inject(Spec{Kind: Fill, Target: "postgres", Level: 30, Duration: time.Minute}); !errors.Is(err, ErrAlreadyFull) {
		t.Errorf("a 30%% fill of a disk 50%% full: %v, want ErrAlreadyFull", err)
	}
	if err := NewManager(Env{}).Recover(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, fillName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Recover left the fill file: %v", err)
	}
}

// TestDrop cuts one host off from a peer: pings fail during the fault and
// pass after it, and the kernel ends a drop whose undo never comes (a
// killed agent).
func TestDrop(t *testing.T) {
	n := testnet.Start(t, testnet.Options{Hosts: []string{"a", "b", "c"}})
	a, b, c := n.Hosts()[0], n.Hosts()[1], n.Hosts()[2]
	fd, err := unix.Open("/var/run/netns/"+a.Namespace, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	peers := map[string]netip.Addr{"b": b.Addr, "c": c.Addr}
	m := NewManager(Env{Netns: fd, Address: func(node string) ([]netip.Addr, error) {
		addr, ok := peers[node]
		if !ok {
			return nil, fmt.Errorf("node %q is not in the configuration", node)
		}
		return []netip.Addr{addr}, nil
	}})
	t.Cleanup(func() { m.Close(); m.Recover() })
	reach := func(h interface {
		Ping(context.Context, netip.Addr) error
	}, dst netip.Addr) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return h.Ping(ctx, dst) == nil
	}
	// Before the fault, the paths need only to work: a host's first ping
	// waits for the neighbour's address to resolve, and a busy machine can
	// hold any ping up past a short timeout.
	for _, dst := range []netip.Addr{b.Addr, c.Addr} {
		testenv.Poll(t, 10*time.Second, "a reaches "+dst.String()+" before the fault", func() (bool, string) { return reach(a, dst), "" })
	}
	if _, err := m.Inject(Spec{Kind: Drop, Peers: []string{"nobody"}, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), `node "nobody" is not in the configuration`) {
		t.Errorf("a drop of an unknown peer: %v", err)
	}
	f, err := m.Inject(Spec{Kind: Drop, Peers: []string{"b"}, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The answer gets out before the cut begins: the drill's client may be
	// one of the peers.
	if !reach(b, a.Addr) {
		t.Error("the drop began before the answer could get out")
	}
	begun(f)
	if reach(a, b.Addr) || reach(b, a.Addr) {
		t.Error("a and b reach each other during the drop")
	}
	testenv.Poll(t, 10*time.Second, "a reaches c during the drop of b", func() (bool, string) { return reach(a, c.Addr), "" })
	testenv.Poll(t, 10*time.Second, "a reaches b again after the drop", func() (bool, string) { return reach(a, b.Addr), "" })

	// The kernel ends a drop by itself: add the element as a fault would
	// (under the Manager's lock, as a cut's timer does), and never undo it.
	m.mu.Lock()
	err = m.drop.add([]netip.Addr{c.Addr}, 0, 500*time.Millisecond)
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if reach(a, c.Addr) {
		t.Error("a reaches c through a drop")
	}
	testenv.Poll(t, 10*time.Second, "the kernel ends the drop", func() (bool, string) {
		cc, err := nftables.New(nftables.WithNetNSFd(fd))
		if err != nil {
			return false, err.Error()
		}
		o := newDropObjects()
		els, err := cc.GetSetElements(&nftables.Set{Table: o.table, Name: o.drop.v4.Name, KeyType: nftables.TypeIPAddr})
		return err == nil && len(els) == 0 && reach(a, c.Addr), fmt.Sprint(els, err)
	})
}

// TestLoss thins out the traffic between one host and two peers: a loss
// of 100% passes nothing, one of 50% passes some pings and loses others,
// a second loss of a peer under one is refused, a drop of it is not, and
// the kernel ends a loss whose undo never comes.
func TestLoss(t *testing.T) {
	n := testnet.Start(t, testnet.Options{Hosts: []string{"a", "b", "c"}})
	a, b, c := n.Hosts()[0], n.Hosts()[1], n.Hosts()[2]
	fd, err := unix.Open("/var/run/netns/"+a.Namespace, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	peers := map[string]netip.Addr{"b": b.Addr, "c": c.Addr, c.Addr.String(): c.Addr}
	m := NewManager(Env{Netns: fd, Address: func(p string) ([]netip.Addr, error) {
		addr, ok := peers[p]
		if !ok {
			return nil, fmt.Errorf("%q is not a node or backend haven.yaml names", p)
		}
		return []netip.Addr{addr}, nil
	}})
	t.Cleanup(func() { m.Close(); m.Recover() })
	// pings counts the pings from a to dst that come back, of tries.
	pings := func(dst netip.Addr, tries int) int {
		ok := 0
		for range tries {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			if a.Ping(ctx, dst) == nil {
				ok++
			}
			cancel()
		}
		return ok
	}
	for _, dst := range []netip.Addr{b.Addr, c.Addr} { // the paths work (TestDrop says why it polls)
		testenv.Poll(t, 10*time.Second, "a reaches "+dst.String()+" before the fault", func() (bool, string) { return pings(dst, 1) == 1, "" })
	}

	all, err := m.Inject(Spec{Kind: Loss, Peers: []string{"b"}, Level: 100, Duration: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	begun(all)
	if got := pings(b.Addr, 10); got != 0 {
		t.Errorf("a loss of 100%%: %d of 10 pings to b came back", got)
	}
	if _, err := m.Inject(Spec{Kind: Loss, Peers: []string{"b"}, Level: 10, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "b ("+b.Addr.String()+") is under a loss already: fault "+all.ID) {
		t.Errorf("a second loss of b: %v", err)
	}
	drop, err := m.Inject(Spec{Kind: Drop, Peers: []string{"b"}, Duration: 5 * time.Second})
	if err != nil {
		t.Errorf("a drop of b under a loss: %v", err)
	}

	half, err := m.Inject(Spec{Kind: Loss, Peers: []string{"c"}, Level: 50, Duration: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	begun(half)
	if !strings.Contains(half.Detail, "dropping 50% of the packets to and from c "+c.Addr.String()) {
		t.Errorf("the loss's detail: %s", half.Detail)
	}
	// A ping crosses the loss twice (request and reply): about a quarter
	// come back. None or all of 40 would be a chance below 1 in 10^5.
	got := pings(c.Addr, 40)
	t.Logf("a loss of 50%%: %d of 40 pings to c came back", got)
	if got == 0 || got == 40 {
		t.Errorf("a loss of 50%%: %d of 40 pings to c came back, want some and not all", got)
	}
	out, err := a.Command(t.Context(), "nft", "list", "table", "inet", DropTable).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "numgen random mod 100 < 50") {
		t.Errorf("nft list table inet %s: %v\n%s", DropTable, err, out)
	}
	if _, err := m.Inject(Spec{Kind: Loss, Peers: []string{c.Addr.String()}, Level: 20, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "is under a loss already: fault "+half.ID) {
		t.Errorf("a loss of c's address while c is under one: %v", err)
	}
	for _, id := range []string{all.ID, drop.ID, half.ID} {
		if err := m.Stop(id); err != nil {
			t.Errorf("stop fault %s: %v", id, err)
		}
	}
	if got := pings(c.Addr, 10); got != 10 {
		t.Errorf("after the loss: %d of 10 pings to c came back", got)
	}
	if got := pings(b.Addr, 10); got != 10 {
		t.Errorf("after the loss and drop: %d of 10 pings to b came back", got)
	}

	// The kernel ends a loss by itself: add the element as a fault would
	// (under the Manager's lock), and never undo it.
	m.mu.Lock()
	err = m.drop.add([]netip.Addr{c.Addr}, 100, 500*time.Millisecond)
	m.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := pings(c.Addr, 3); got != 0 {
		t.Errorf("a reaches c through a loss of 100%%: %d of 3", got)
	}
	testenv.Poll(t, 10*time.Second, "the kernel ends the loss", func() (bool, string) {
		out, err := a.Command(t.Context(), "nft", "list", "set", "inet", DropTable, "loss100_4").CombinedOutput()
		return err == nil && !strings.Contains(string(out), "elements") && pings(c.Addr, 1) == 1, string(out)
	})
}

// TestNodeLoss pauses "the agent" (a sleeper as Env.Self) with a peer's
// traffic dropped, as the node-loss drills do: nothing is cut off at the
// answer, while the agent runs; from the moment the helper stops it the
// peer is cut off, and both end together; a drop of the same peer
// meanwhile is refused.
func TestNodeLoss(t *testing.T) {
	n := testnet.Start(t, testnet.Options{Hosts: []string{"a", "b", "c"}})
	a, b, c := n.Hosts()[0], n.Hosts()[1], n.Hosts()[2]
	fd, err := unix.Open("/var/run/netns/"+a.Namespace, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	pid, child := sleeperTree(t)
	peers := map[string]netip.Addr{"b": b.Addr, "c": c.Addr}
	m := NewManager(Env{Netns: fd, Self: pid, HoldCommand: holdCommand(), Address: func(node string) ([]netip.Addr, error) {
		return []netip.Addr{peers[node]}, nil
	}})
	t.Cleanup(func() { m.Close(); m.Recover() })
	reach := func(dst netip.Addr) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return a.Ping(ctx, dst) == nil
	}
	dropped := func() []nftables.SetElement {
		cc, err := nftables.New(nftables.WithNetNSFd(fd))
		if err != nil {
			t.Fatal(err)
		}
		o := newDropObjects()
		els, _ := cc.GetSetElements(&nftables.Set{Table: o.table, Name: o.drop.v4.Name, KeyType: nftables.TypeIPAddr})
		return els
	}
	f, err := m.Inject(Spec{Kind: Pause, Target: TargetAgent, Peers: []string{"b"}, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if els := dropped(); len(els) > 0 {
		t.Errorf("b dropped at the answer (%v): the drop starts when the agent stops, not before", els)
	}
	if want := "its traffic to and from b " + b.Addr.String() + " dropped from then on"; !strings.Contains(f.Detail, want) {
		t.Errorf("the fault's detail %q does not say %q", f.Detail, want)
	}
	if _, err := m.Inject(Spec{Kind: Drop, Peers: []string{"b"}, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "is under a pause already") {
		t.Errorf("a drop of b during the node's loss: %v", err)
	}
	testenv.Poll(t, 10*time.Second, "the helper stops the tree", func() (bool, string) {
		s := treeStates(pid, child)
		return s == "TT", s
	})
	if reach(b.Addr) {
		t.Error("a reaches b while its agent is stopped")
	}
	if !reach(c.Addr) {
		t.Error("the node's loss cut a off from c, not named")
	}
	testenv.Poll(t, 10*time.Second, "the helper wakes the tree and ends the drop", func() (bool, string) {
		s := treeStates(pid, child)
		els := dropped()
		return awake(s) && len(els) == 0, fmt.Sprint(s, els)
	})
	if !reach(b.Addr) {
		t.Error("a does not reach b after the node's loss")
	}
	testenv.Poll(t, 10*time.Second, "the fault ends", func() (bool, string) {
		return len(m.List()) == 0, fmt.Sprint(m.List())
	})
}

// TestPauseWithAZombie: a process under the role that exited and was not
// reaped yet (a backend that ended as the pause began) runs no more: the
// pause counts it stopped instead of failing after its bound.
func TestPauseWithAZombie(t *testing.T) {
	// sleep becomes the parent of the exited true and never reaps it.
	cmd := exec.Command("sh", "-c", "true & exec sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	testenv.Poll(t, 5*time.Second, "a zombie under the sleeper", func() (bool, string) {
		for _, p := range descendants(pid) {
			if stateOf(p) == "Z" {
				return true, ""
			}
		}
		return false, fmt.Sprint(descendants(pid))
	})
	m := NewManager(Env{Process: func(string) (int, error) { return pid, nil }})
	t.Cleanup(func() { m.Close() })
	if _, err := m.Inject(Spec{Kind: Pause, Target: "postgres", Duration: 300 * time.Millisecond}); err != nil {
		t.Fatalf("a pause of a tree with a zombie in it: %v", err)
	}
	if s := stateOf(pid); s != "T" {
		t.Errorf("the sleeper is in state %s, want T", s)
	}
}
