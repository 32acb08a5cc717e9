package fault

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestMain runs the helper of an agent's pause when the test binary is
// started as one (HoldCommand below), and the tests otherwise.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "hold" {
		if err := HoldMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holdCommand is this test binary as the helper: TestMain runs HoldMain.
func holdCommand() []string { return []string{os.Args[0], "hold"} }

// treeStates reads the state of the sleeper and its child.
func treeStates(pids ...int) string {
	var b strings.Builder
	for _, p := range pids {
		b.WriteString(stateOf(p))
	}
	return b.String()
}

// awake says whether states (treeStates) are of processes that all live
// and none stopped: sleeping, or running for a moment on a busy machine.
func awake(states string) bool {
	return strings.Trim(states, "SR") == "" && states != ""
}

// sleeperTree starts a sleeper and waits for its child.
func sleeperTree(t *testing.T) (pid, child int) {
	t.Helper()
	cmd := sleeper(t)
	pid = cmd.Process.Pid
	testenv.Poll(t, 5*time.Second, "the sleeper's child", func() (bool, string) {
		if d := descendants(pid); len(d) > 0 {
			child = d[0]
		}
		return child != 0, ""
	})
	return pid, child
}

// TestNamedProcess pauses and kills a process of drills.processes found by
// its pid file, read at each injection.
func TestNamedProcess(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "app.pid")
	procs := map[string]Process{"app": {PIDFile: pidFile}, "gone": {PIDFile: filepath.Join(dir, "gone.pid")}}
	m := NewManager(Env{Processes: func(name string) (Process, error) {
		p, ok := procs[name]
		if !ok {
			return Process{}, fmt.Errorf("process %q is not in drills.processes", name)
		}
		return p, nil
	}})
	t.Cleanup(func() { m.Close() })
	for _, tc := range []struct {
		target, pidFile, want string
	}{
		{"process:nope", "", `process "nope" is not in drills.processes`},
		{"process:gone", "", "gone.pid: no such file or directory (does this node run the process?)"},
		{"process:app", "garbage\n", `"garbage" is not a pid`},
	} {
		if tc.pidFile != "" {
			if err := os.WriteFile(pidFile, []byte(tc.pidFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.Inject(Spec{Kind: Pause, Target: tc.target, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pause %s: %v, want %q", tc.target, err, tc.want)
		}
	}

	pid, child := sleeperTree(t)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := m.Inject(Spec{Kind: Pause, Target: "process:app", Duration: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s := treeStates(pid, child); s != "TT" {
		t.Errorf("paused: states %s, want TT", s)
	}
	if !strings.Contains(f.Detail, fmt.Sprintf("SIGSTOP to process:app (pid %d and 1 processes under it)", pid)) {
		t.Errorf("the pause's detail: %s", f.Detail)
	}
	testenv.Poll(t, 10*time.Second, "the pause undone when its time is up", func() (bool, string) {
		s := treeStates(pid, child)
		return awake(s), s
	})
	if _, err := m.Inject(Spec{Kind: Kill, Target: "process:app", Duration: time.Second}); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 10*time.Second, "the process killed", func() (bool, string) {
		s := stateOf(pid)
		return s == "" || s == "Z", s
	})
}

// TestPauseOutlivesTheAgent: a pause of another process than the agent
// is also held by a helper of its own session, which wakes the process
// at the end when the agent that paused it is gone (stands for it here: a
// fault whose timer and undo never run).
func TestPauseOutlivesTheAgent(t *testing.T) {
	pid, child := sleeperTree(t)
	pidFile := filepath.Join(t.TempDir(), "app.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := NewManager(Env{HoldCommand: holdCommand(), Processes: func(string) (Process, error) { return Process{PIDFile: pidFile}, nil }})
	f, err := m.Inject(Spec{Kind: Pause, Target: "process:app", Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	helper := 0
	if _, err := fmt.Sscanf(f.Detail[strings.Index(f.Detail, "helper too, pid ")+len("helper too, pid "):], "%d", &helper); err != nil || helper == 0 {
		t.Fatalf("the pause names no helper: %s", f.Detail)
	}
	if sid, _ := unix.Getsid(helper); sid != helper {
		t.Errorf("the helper (pid %d) is in session %d, want one of its own: it must outlive the agent", helper, sid)
	}
	// The agent dies: nothing of it undoes the fault.
	m.mu.Lock()
	m.faults[f.ID].timer.Stop()
	delete(m.faults, f.ID)
	m.mu.Unlock()
	if s := treeStates(pid, child); s != "TT" {
		t.Errorf("paused: states %s, want TT", s)
	}
	testenv.Poll(t, 10*time.Second, "the helper wakes the process and its child", func() (bool, string) {
		s := treeStates(pid, child)
		return awake(s), s
	})
	testenv.Poll(t, 10*time.Second, "the helper gone", func() (bool, string) {
		s := stateOf(helper)
		return s == "" || s == "Z", s
	})
}

// TestStop: a stop needs a process with a unit; with systemd running, it
// stops the unit and starts it again.
func TestStop(t *testing.T) {
	m := NewManager(Env{Processes: func(name string) (Process, error) {
		switch name {
		case "app":
			return Process{PIDFile: "/run/app.pid"}, nil
		case "unit":
			return Process{Unit: "haven-drill-test-sleeper.service"}, nil
		}
		return Process{}, fmt.Errorf("process %q is not in drills.processes", name)
	}})
	t.Cleanup(func() { m.Close() })
	for _, tc := range []struct {
		target, want string
	}{
		{"postgres", `target "postgres": a stop hits a process:NAME of drills.processes that has a unit`},
		{"agent", `target "agent": a stop hits a process:NAME`},
		{"process:app", "process:app: give the process a unit (drills.processes.app.unit): a pid file cannot be started again"},
		{"process:nope", `process "nope" is not in drills.processes`},
	} {
		if _, err := m.Inject(Spec{Kind: Stop, Target: tc.target, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("stop %s: %v, want %q", tc.target, err, tc.want)
		}
	}
	needSystemd(t)
	unit := "haven-drill-test-sleeper.service"
	if out, err := exec.Command("systemd-run", "--unit", unit, "--property", "Restart=no", "sleep", "600").CombinedOutput(); err != nil {
		t.Fatalf("systemd-run: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("systemctl", "stop", unit).Run() })
	active := func() string {
		out, _ := exec.Command("systemctl", "is-active", unit).Output()
		return strings.TrimSpace(string(out))
	}
	if _, err := m.Inject(Spec{Kind: Stop, Target: "process:unit", Duration: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if s := active(); s == "active" {
		t.Errorf("the unit is %s during the stop", s)
	}
	testenv.Poll(t, 30*time.Second, "the unit started again", func() (bool, string) {
		s := active()
		return s == "active", s
	})
}

// needSystemd skips a test that needs a running systemd: the machines the
// tests run on (containers) have none, CI's included.
func needSystemd(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("no systemctl: the stop of a unit needs systemd")
	}
	out, _ := exec.Command("systemctl", "is-system-running").Output()
	switch s := strings.TrimSpace(string(out)); s {
	case "running", "degraded":
	default:
		t.Skipf("systemd is not running here (systemctl is-system-running: %q): the stop of a unit needs it", s)
	}
}

// TestAgentPause pauses "the agent" (a sleeper standing in for it, as
// Env.Self) through the helper: stopped a moment after the answer, with
// the process under it, and woken by the helper after the duration; a
// pause ended before the helper acts stops nothing.
func TestAgentPause(t *testing.T) {
	pid, child := sleeperTree(t)
	m := NewManager(Env{Self: pid, HoldCommand: holdCommand()})
	t.Cleanup(func() { m.Close() })
	f, err := m.Inject(Spec{Kind: Pause, Target: TargetAgent, Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s := treeStates(pid, child); strings.Contains(s, "T") {
		t.Errorf("states %s at the answer, want none stopped (T): the agent is paused only after it answers", s)
	}
	if want := f.Started.Add(selfDelay + 2*time.Second); !f.Until.Equal(want) {
		t.Errorf("the pause lasts until %v, want %v (the delay and the duration)", f.Until, want)
	}
	testenv.Poll(t, 10*time.Second, "the helper stops the tree", func() (bool, string) {
		s := treeStates(pid, child)
		return s == "TT", s
	})
	testenv.Poll(t, 10*time.Second, "the helper wakes the tree", func() (bool, string) {
		s := treeStates(pid, child)
		return awake(s), s
	})
	testenv.Poll(t, 10*time.Second, "the fault ends", func() (bool, string) {
		return len(m.List()) == 0, fmt.Sprint(m.List())
	})

	// Ended before the helper acts: it stops nothing.
	if _, err := m.Inject(Spec{Kind: Pause, Target: TargetAgent, Duration: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * selfDelay)
	for time.Now().Before(deadline) {
		if s := treeStates(pid, child); !awake(s) {
			t.Fatalf("states %s after the pause was ended early, want none stopped (T)", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentKill kills "the agent" (a sleeper as Env.Self) a moment after
// the answer.
func TestAgentKill(t *testing.T) {
	cmd := sleeper(t)
	m := NewManager(Env{Self: cmd.Process.Pid})
	t.Cleanup(func() { m.Close() })
	f, err := m.Inject(Spec{Kind: Kill, Target: TargetAgent, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.Detail, "its supervisor starts it again") {
		t.Errorf("the kill's detail: %s", f.Detail)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the killed agent ended with %v, want SIGKILL", err)
	}
	if m2 := NewManager(Env{}); true {
		if _, err := m2.Inject(Spec{Kind: Pause, Target: TargetAgent, Duration: time.Second}); err == nil || !strings.Contains(err.Error(), "knows no helper command") {
			t.Errorf("a pause of the agent without a helper: %v", err)
		}
	}
}
