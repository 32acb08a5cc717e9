package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// proc is one long-running child process: a name server or a target's
// listener. It runs in a process group of its own, so that a Ctrl-C in the
// terminal reaches only the harness, and it dies with the harness
// (Pdeathsig).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // its stdout and stderr
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procs starts processes and guarantees that none is left when stopAll
// returns.
type procs struct {
	dir string // where the logs go

	mu  sync.Mutex
	all []*proc
}

// start runs argv in dir with its output in dir/NAME.log.
func (ps *procs) start(name string, argv ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = ps.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p, nil
}

// kill kills p's process group at once and waits (at most 5 s) until it
// is reaped.
func (ps *procs) kill(p *proc) {
	ps.stop(p, syscall.SIGKILL, 0)
}

// stop sends sig to p, waits up to grace, then kills its process group.
func (ps *procs) stop(p *proc, sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	if !p.exited() {
		_ = syscall.Kill(p.cmd.Process.Pid, sig)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		harness.Logf("%s: not reaped 5 s after SIGKILL", p.name)
	}
	ps.mu.Lock()
	for i, q := range ps.all {
		if q == p {
			ps.all = append(ps.all[:i], ps.all[i+1:]...)
			break
		}
	}
	ps.mu.Unlock()
}

// stopAll stops every process still running, politely first.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	all := append([]*proc(nil), ps.all...)
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Go(func() { ps.stop(p, syscall.SIGTERM, 3*time.Second) })
	}
	wg.Wait()
}

// killAll kills every process group at once: for a second Ctrl-C.
func (ps *procs) killAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.all {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// tail is the last n lines of p's output, on one line.
func (p *proc) tail(n int) string {
	data, _ := os.ReadFile(p.log)
	return harness.LastLines(string(data), n)
}
