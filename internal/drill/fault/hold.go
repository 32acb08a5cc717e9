package fault

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// selfDelay is how long after answering a fault on the agent itself the
// agent is hit: long enough for the answer to get out.
const selfDelay = 500 * time.Millisecond

// holdExit bounds the wait for the helper to end once told to.
const holdExit = 5 * time.Second

// pauseSelf pauses the agent and every process under it (postgres among
// them). A stopped process cannot send itself SIGCONT, so a helper does
// both: Env.HoldCommand, in a session of its own so that it outlives the
// agent, stops the tree selfDelay after the answer and wakes it when the
// fault ends. Undoing the fault before the helper ends (the agent stops)
// tells it, with SIGTERM, to wake the tree now.
func (m *Manager) pauseSelf(spec Spec) (string, undoer, error) {
	if len(m.env.HoldCommand) == 0 {
		return "", nil, errors.New("the agent cannot pause itself: it knows no helper command")
	}
	pid := m.env.Self
	// The times are given, not the delays: a helper slow to start (a
	// busy machine) still wakes the agent when the fault ends.
	from := time.Now().Add(selfDelay)
	until := from.Add(spec.Duration)
	args := append(slices.Clone(m.env.HoldCommand[1:]), "--pid", strconv.Itoa(pid), "--from", from.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano))
	cmd := exec.Command(m.env.HoldCommand[0], args...)
	// Its output goes where the agent's does, as a file: a pipe through
	// the agent would stall while the agent is stopped.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start the helper that holds the agent: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	undo := func() error {
		select {
		case <-done:
			return nil
		default:
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("tell the helper (pid %d) to end the agent's pause: %w", cmd.Process.Pid, err)
		}
		select {
		case <-done:
			return nil
		case <-time.After(holdExit):
			return fmt.Errorf("the helper (pid %d) did not end %v after SIGTERM", cmd.Process.Pid, holdExit)
		}
	}
	return fmt.Sprintf("SIGSTOP to the agent (pid %d) and every process under it in %v, SIGCONT %v later, by a helper (pid %d)", pid, selfDelay, spec.Duration, cmd.Process.Pid), undo, nil
}

// Hold is the helper's work (haven drill hold): at from, it stops pid
// and every process under it but itself, and wakes them at until, or at
// once when ctx ends (SIGTERM). The helper must not die between the two:
// nothing else would wake the agent.
func Hold(ctx context.Context, pid int, from, until time.Time) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Until(from)):
	}
	if !time.Now().Before(until) {
		return fmt.Errorf("started after the pause's end (%s): nothing to do", until.Format(time.RFC3339Nano))
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP to pid %d: %w", pid, err)
	}
	pids := slices.DeleteFunc(Tree(pid), func(p int) bool { return p == os.Getpid() })
	for _, p := range pids[1:] {
		_ = syscall.Kill(p, syscall.SIGSTOP) // one that ended meanwhile is no matter
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(until)):
	}
	var errs []error
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("SIGCONT to pid %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// HoldMain is the helper command's main: args are --pid PID --from TIME
// --until TIME (RFC 3339), as pauseSelf gives them. SIGTERM and SIGINT
// end the hold at once; SIGHUP and SIGPIPE are ignored, for the agent's
// terminal or log pipe may go away meanwhile and the helper must live to
// wake what it stopped.
func HoldMain(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pid := fs.Int("pid", 0, "")
	from := fs.String("from", "", "")
	until := fs.String("until", "", "")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	f, ferr := time.Parse(time.RFC3339Nano, *from)
	u, uerr := time.Parse(time.RFC3339Nano, *until)
	if *pid <= 1 || ferr != nil || uerr != nil || !f.Before(u) || fs.NArg() > 0 {
		return errors.New("hold: give --pid PID --from TIME --until TIME (RFC 3339, from before until)")
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Hold(ctx, *pid, f, u); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	return nil
}
