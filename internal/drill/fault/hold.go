package fault

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
//
// With peers the helper also drops their traffic, from the moment it
// stops the agent until it wakes it: a node lost. A drop injected before
// the pause would start selfDelay early, and an agent cut off but still
// running for that long acts on it (gives up a floating address whose
// lease it cannot renew, steps down as primary), which a lost node does
// not.
func (m *Manager) pauseSelf(spec Spec, peers []peer) (string, undoer, error) {
	if len(m.env.HoldCommand) == 0 {
		return "", nil, errors.New("the agent cannot pause itself: it knows no helper command")
	}
	pid := m.env.Self
	// The times are given, not the delays: a helper slow to start (a
	// busy machine) still wakes the agent when the fault ends.
	from := time.Now().Add(selfDelay)
	until := from.Add(spec.Duration)
	args := append(slices.Clone(m.env.HoldCommand[1:]), "--pid", strconv.Itoa(pid), "--from", from.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano))
	addrs, names := addresses(peers)
	cmd := exec.Command(m.env.HoldCommand[0])
	if len(addrs) > 0 {
		var err error
		if args, err = m.holdDrop(cmd, args, addrs); err != nil {
			return "", nil, err
		}
	}
	cmd.Args = append(cmd.Args, args...)
	// Its output goes where the agent's does, as a file: a pipe through
	// the agent would stall while the agent is stopped.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err := cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close() // the helper has its own copy
	}
	if err != nil {
		return "", nil, fmt.Errorf("start the helper that holds the agent: %w", err)
	}
	helper := watch(cmd)
	undo := func() error {
		if err := helper.end(); err != nil {
			return fmt.Errorf("end the agent's pause: %w", err)
		}
		// The helper undoes its drop; this is for a helper that died
		// first (the kernel would end it a moment later).
		if len(addrs) == 0 {
			return nil
		}
		if err := m.drop.del(addrs, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables table inet %s: %w", DropTable, err)
		}
		return nil
	}
	detail := fmt.Sprintf("SIGSTOP to the agent (pid %d) and every process under it in %v, SIGCONT %v later, by a helper (pid %d)", pid, selfDelay, spec.Duration, helper.pid())
	if len(addrs) > 0 {
		detail = fmt.Sprintf("SIGSTOP to the agent (pid %d) and every process under it in %v, its traffic to and from %s dropped from then on, both undone %v later, by a helper (pid %d)", pid, selfDelay, names, spec.Duration, helper.pid())
	}
	return detail, undo, nil
}

// waker is a helper process that wakes what it holds when its time is up
// or when told to end: the agent's pause (pauseSelf) or a pause of
// another process (haven drill hold --wake, startWaker).
type waker struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startWaker starts a helper, in a session of its own, that sends SIGCONT
// to pids at until, or at once when told to end.
func (m *Manager) startWaker(pids []int, until time.Time) (*waker, error) {
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	cmd := exec.Command(m.env.HoldCommand[0], append(slices.Clone(m.env.HoldCommand[1:]),
		"--wake", strings.Join(list, ","), "--until", until.Format(time.RFC3339Nano))...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the helper that wakes it should the agent die: %w", err)
	}
	return watch(cmd), nil
}

// watch follows a started helper until it exits, for end.
func watch(cmd *exec.Cmd) *waker {
	w := &waker{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	return w
}

func (w *waker) pid() int { return w.cmd.Process.Pid }

// end tells the helper to wake what it holds now (SIGTERM) and waits for
// it, holdExit at most.
func (w *waker) end() error {
	select {
	case <-w.done:
		return nil
	default:
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("tell the helper (pid %d) to end: %w", w.pid(), err)
	}
	select {
	case <-w.done:
		return nil
	case <-time.After(holdExit):
		return fmt.Errorf("the helper (pid %d) did not end %v after SIGTERM", w.pid(), holdExit)
	}
}

// Wake is the waker's work (haven drill hold --wake): SIGCONT to pids at
// until, or at once when ctx ends (SIGTERM). A pid gone meanwhile is no
// matter; one reused by another process ignores a SIGCONT.
func Wake(ctx context.Context, pids []int, until time.Time) error {
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

// holdDrop readies the helper's drop of addrs: the table and its rules are
// installed now, so that the helper only adds the elements, and the
// helper is given the drop's network namespace (as its fd 3) when it is
// not the agent's own. It returns args with the helper's flags for it.
func (m *Manager) holdDrop(cmd *exec.Cmd, args []string, addrs []netip.Addr) ([]string, error) {
	if err := m.drop.add(nil, 0, 0); err != nil {
		return nil, fmt.Errorf("nftables table inet %s: %w", DropTable, err)
	}
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = a.String()
	}
	args = append(args, "--drop", strings.Join(list, ","))
	if m.env.Netns != 0 {
		fd, err := unix.Dup(m.env.Netns)
		if err != nil {
			return nil, fmt.Errorf("hand the network namespace to the helper: %w", err)
		}
		cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(fd), "netns")}
		args = append(args, "--netns-fd", "3")
	}
	return args, nil
}

// Hold is the helper's work (haven drill hold): at from, it stops pid
// and every process under it but itself, with the traffic to and from
// drop dropped (in the network namespace netns; zero: its own), and wakes
// them at until, or at once when ctx ends (SIGTERM). The helper must not
// die between the two: nothing else would wake the agent. The drop ends
// by itself a moment after until if it does.
func Hold(ctx context.Context, pid int, from, until time.Time, drop []netip.Addr, netns int) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Until(from)):
	}
	if !time.Now().Before(until) {
		return fmt.Errorf("started after the pause's end (%s): nothing to do", until.Format(time.RFC3339Nano))
	}
	// The Manager installed the table; the helper adds elements only.
	cut := &dropTable{netns: netns, installed: true}
	if len(drop) > 0 {
		if err := cut.add(drop, 0, time.Until(until)+dropLinger); err != nil {
			return fmt.Errorf("drop the traffic to and from %v: nftables table inet %s: %w", drop, DropTable, err)
		}
	}
	var errs []error
	undrop := func() {
		if len(drop) == 0 {
			return
		}
		if err := cut.del(drop, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("end the drop of %v: %w", drop, err))
		}
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		undrop()
		return errors.Join(append(errs, fmt.Errorf("SIGSTOP to pid %d: %w", pid, err))...)
	}
	pids := slices.DeleteFunc(Tree(pid), func(p int) bool { return p == os.Getpid() })
	for _, p := range pids[1:] {
		_ = syscall.Kill(p, syscall.SIGSTOP) // one that ended meanwhile is no matter
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(until)):
	}
	// The network first, as a node that comes back has it before its
	// processes run again.
	undrop()
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("SIGCONT to pid %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// HoldMain is the helper command's main: args are --pid PID --from TIME
// --until TIME (RFC 3339), as pauseSelf gives them, and for a node's loss
// --drop ADDR,ADDR and, when the drop's network namespace is not the
// helper's own, --netns-fd FD; or --wake PID,PID --until TIME, as a
// pause of another process gives them (Wake). SIGTERM and SIGINT end the
// hold at once;
// SIGHUP and SIGPIPE are ignored, for the agent's terminal or log pipe may
// go away meanwhile and the helper must live to wake what it stopped.
func HoldMain(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	pid := fs.Int("pid", 0, "")
	from := fs.String("from", "", "")
	until := fs.String("until", "", "")
	dropList := fs.String("drop", "", "")
	netns := fs.Int("netns-fd", 0, "")
	wake := fs.String("wake", "", "")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	u, uerr := time.Parse(time.RFC3339Nano, *until)
	if *wake != "" {
		var pids []int
		for _, p := range strings.Split(*wake, ",") {
			pid, err := strconv.Atoi(p)
			if err != nil || pid <= 1 {
				return fmt.Errorf("hold: --wake %q: give pids, comma-separated", *wake)
			}
			pids = append(pids, pid)
		}
		if uerr != nil || fs.NArg() > 0 {
			return errors.New("hold: give --wake PID,PID --until TIME (RFC 3339)")
		}
		signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := Wake(ctx, pids, u); err != nil {
			return fmt.Errorf("hold: %w", err)
		}
		return nil
	}
	f, ferr := time.Parse(time.RFC3339Nano, *from)
	if *pid <= 1 || ferr != nil || uerr != nil || !f.Before(u) || fs.NArg() > 0 {
		return errors.New("hold: give --pid PID --from TIME --until TIME (RFC 3339, from before until) [--drop ADDR,ADDR] [--netns-fd FD]")
	}
	var drop []netip.Addr
	for _, a := range strings.FieldsFunc(*dropList, func(r rune) bool { return r == ',' }) {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("hold: --drop: %w", err)
		}
		drop = append(drop, addr)
	}
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Hold(ctx, *pid, f, u, drop, *netns); err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	return nil
}
