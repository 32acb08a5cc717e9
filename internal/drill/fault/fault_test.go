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
		s, c := stateOf(pid), stateOf(child)
		return s == "S" && c == "S", s + c
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
		{Spec{Kind: Kill, Duration: time.Second}, "name the target role"},
		{Spec{Kind: Fill, Target: "postgres", Level: 101, Duration: time.Second}, "level 101"},
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
	if !reach(a, b.Addr) || !reach(a, c.Addr) {
		t.Fatal("a does not reach b and c before the fault")
	}
	if _, err := m.Inject(Spec{Kind: Drop, Peers: []string{"nobody"}, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), `node "nobody" is not in the configuration`) {
		t.Errorf("a drop of an unknown peer: %v", err)
	}
	if _, err := m.Inject(Spec{Kind: Drop, Peers: []string{"b"}, Duration: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if reach(a, b.Addr) || reach(b, a.Addr) {
		t.Error("a and b reach each other during the drop")
	}
	if !reach(a, c.Addr) {
		t.Error("the drop of b cut a off from c too")
	}
	testenv.Poll(t, 10*time.Second, "a reaches b again after the drop", func() (bool, string) { return reach(a, b.Addr), "" })

	// The kernel ends a drop by itself: add the element as a fault would,
	// and never undo it.
	if err := m.drop.add([]netip.Addr{c.Addr}, 500*time.Millisecond); err != nil {
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
		els, err := cc.GetSetElements(&nftables.Set{Table: o.table, Name: o.v4.Name, KeyType: nftables.TypeIPAddr})
		return err == nil && len(els) == 0 && reach(a, c.Addr), fmt.Sprint(els, err)
	})
}
