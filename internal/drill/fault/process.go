package fault

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target finds the pid of spec's target: a role's process, a named
// process or the agent.
func (m *Manager) target(spec Spec) (int, error) {
	var (
		pid int
		err error
	)
	switch name, named := strings.CutPrefix(spec.Target, ProcessPrefix); {
	case spec.Target == TargetAgent:
		pid = m.env.Self
	case named:
		var p Process
		if p, err = m.process(name); err == nil {
			pid, err = p.PID()
		}
	case m.env.Process == nil:
		return 0, errors.New("this node runs no process the drills can hit")
	default:
		pid, err = m.env.Process(spec.Target)
	}
	if err != nil {
		return 0, err
	}
	if pid <= 1 {
		return 0, fmt.Errorf("%s: no process (pid %d)", spec.Target, pid)
	}
	return pid, nil
}

// process returns the named process of Env.Processes.
func (m *Manager) process(name string) (Process, error) {
	if m.env.Processes == nil {
		return Process{}, fmt.Errorf("process %q: drills.processes names none", name)
	}
	return m.env.Processes(name)
}

// Process is a process besides haven's own that faults may hit
// (drills.processes), found by its pid file or by its systemd unit.
type Process struct {
	PIDFile string
	Unit    string
}

// PID reads the process's pid now: from its pid file, or the unit's
// MainPID as systemd reports it.
func (p Process) PID() (int, error) {
	if p.PIDFile != "" {
		b, err := os.ReadFile(p.PIDFile)
		if err != nil {
			return 0, fmt.Errorf("pid file: %w (does this node run the process?)", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, fmt.Errorf("pid file %s: %q is not a pid", p.PIDFile, bytes.TrimSpace(b))
		}
		return pid, nil
	}
	out, err := systemctl("show", "-p", "MainPID", "--value", p.Unit)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(out)
	switch {
	case err != nil:
		return 0, fmt.Errorf("systemctl show -p MainPID %s: %q is not a pid", p.Unit, out)
	case pid == 0:
		return 0, fmt.Errorf("unit %s runs no process now (MainPID 0)", p.Unit)
	}
	return pid, nil
}

// kill sends SIGKILL to the target's process: its supervisor sees a
// crash. The agent kills itself a moment after answering, so that the
// answer gets out.
func (m *Manager) kill(spec Spec) (string, undoer, error) {
	pid, err := m.target(spec)
	if err != nil {
		return "", nil, err
	}
	if spec.Target == TargetAgent {
		time.AfterFunc(selfDelay, func() {
			m.log.Warn("drill: the agent kills itself, as asked", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		})
		return fmt.Sprintf("SIGKILL to the agent (pid %d) in %v: its supervisor starts it again", pid, selfDelay), func() error { return nil }, nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", nil, fmt.Errorf("kill -9 %d (%s): %w", pid, spec.Target, err)
	}
	return fmt.Sprintf("SIGKILL to %s (pid %d)", spec.Target, pid), func() error { return nil }, nil
}

// pause stops the target's process and every process under it until the
// fault ends: postgres's backends are children of the postmaster, each
// in a session of its own (InitPostmasterChild calls setsid), so that
// stopping the postmaster's process group would leave them answering. A
// stopped postmaster forks no new ones.
func (m *Manager) pause(spec Spec) (string, undoer, error) {
	pid, err := m.target(spec)
	if err != nil {
		return "", nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return "", nil, fmt.Errorf("SIGSTOP to pid %d (%s): %w", pid, spec.Target, err)
	}
	pids := Tree(pid)
	for _, p := range pids[1:] {
		_ = syscall.Kill(p, syscall.SIGSTOP) // one that ended meanwhile is no matter
	}
	undo := func() error {
		var errs []error
		for _, p := range pids {
			if err := syscall.Kill(p, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("SIGCONT to pid %d (%s): %w", p, spec.Target, err))
			}
		}
		return errors.Join(errs...)
	}
	if err := waitStopped(pids, stopWait); err != nil {
		_ = undo()
		return "", nil, fmt.Errorf("pause %s: %w", spec.Target, err)
	}
	detail := fmt.Sprintf("SIGSTOP to %s (pid %d and %d processes under it)", spec.Target, pid, len(pids)-1)
	if len(m.env.HoldCommand) == 0 {
		return detail, undo, nil
	}
	// A helper of its own session wakes them at the end too: the agent
	// that stopped them may be killed meanwhile (a drill's next fault,
	// an operator), and nothing else would ever send SIGCONT.
	helper, err := m.startWaker(pids, time.Now().Add(spec.Duration))
	if err != nil {
		_ = undo()
		return "", nil, fmt.Errorf("pause %s: %w", spec.Target, err)
	}
	return detail + fmt.Sprintf(", woken %v later (by a helper too, pid %d, should the agent die)", spec.Duration, helper.pid()),
		func() error { return errors.Join(undo(), helper.end()) }, nil
}

// stopWait bounds the wait for a stop signal to take effect: the kernel
// delivers it when the process next runs, which on a busy machine is not
// at once.
const stopWait = 2 * time.Second

// waitStopped waits until every process in pids is stopped (or gone), so
// that a pause reported as injected is one: a backend still running
// would answer the drill's writes.
func waitStopped(pids []int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		running := 0
		for _, p := range pids {
			// T and t are stopped; Z (a zombie: exited, not yet reaped by
			// the parent this pause stops) and X run no more either.
			if s := stateOf(p); s != "" && !strings.Contains("TtZX", s) {
				running = p
				break
			}
		}
		if running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not stopped %v after SIGSTOP (state %s)", running, limit, stateOf(running))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Tree lists pid and every process under it, from /proc: what must be
// stopped to freeze a postgres (its backends each run in a session of
// their own, out of the postmaster's process group).
func Tree(pid int) []int { return append([]int{pid}, descendants(pid)...) }

// descendants lists the processes under pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := parentOf(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}

// parentOf reads a process's parent from /proc/PID/stat (0 if gone).
func parentOf(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// stateOf reads a process's state letter from /proc/PID/stat ("" if gone).
func stateOf(pid int) string {
	f := statFields(pid)
	if len(f) < 1 {
		return ""
	}
	return f[0]
}

// statFields reads /proc/PID/stat's fields after the command name: state,
// ppid, ... (nil if the process is gone).
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}
