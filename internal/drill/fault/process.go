package fault

import (
	"errors"
	"fmt"
	"syscall"
)

// target finds the pid of spec's role.
func (m *Manager) target(spec Spec) (int, error) {
	if m.env.Process == nil {
		return 0, errors.New("this node runs no process the drills can hit")
	}
	pid, err := m.env.Process(spec.Target)
	if err != nil {
		return 0, err
	}
	if pid <= 1 {
		return 0, fmt.Errorf("%s: no process (pid %d)", spec.Target, pid)
	}
	return pid, nil
}

// kill sends SIGKILL to the role's process: its supervisor sees a crash.
func (m *Manager) kill(spec Spec) (string, undoer, error) {
	pid, err := m.target(spec)
	if err != nil {
		return "", nil, err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", nil, fmt.Errorf("kill -9 %d (%s): %w", pid, spec.Target, err)
	}
	return fmt.Sprintf("SIGKILL to %s (pid %d)", spec.Target, pid), func() error { return nil }, nil
}

// pause stops the role's process, and its whole process group when it
// leads one (postgres and its backends), until the fault ends.
func (m *Manager) pause(spec Spec) (string, undoer, error) {
	pid, err := m.target(spec)
	if err != nil {
		return "", nil, err
	}
	who, what := pid, fmt.Sprintf("pid %d", pid)
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		who, what = -pid, fmt.Sprintf("process group %d", pid)
	}
	if err := syscall.Kill(who, syscall.SIGSTOP); err != nil {
		return "", nil, fmt.Errorf("SIGSTOP to %s (%s): %w", what, spec.Target, err)
	}
	undo := func() error {
		if err := syscall.Kill(who, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("SIGCONT to %s (%s): %w", what, spec.Target, err)
		}
		return nil
	}
	return fmt.Sprintf("SIGSTOP to %s (%s)", spec.Target, what), undo, nil
}
