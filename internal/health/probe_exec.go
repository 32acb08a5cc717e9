package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/haven-ha/haven/internal/config"
)

const (
	// stderrTail is how much of a command's stderr is kept: enough for its
	// last line, never the whole output of a chatty script.
	stderrTail = 4 << 10
	// maxLine bounds the stderr line quoted in an error.
	maxLine = 200
	// execWaitDelay bounds how long a probe waits, after the command exits
	// or is killed, for descendants that escaped its process group and
	// still hold its stderr.
	execWaitDelay = 250 * time.Millisecond
)

// execProber runs a command; exit status 0 passes.
type execProber struct {
	argv []string
	name string // for errors: the command's base name
}

func newExecProber(c *config.ExecProbe) (*execProber, error) {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return nil, errors.New("exec.command is empty: want a program and its arguments")
	}
	return &execProber{argv: c.Command, name: filepath.Base(c.Command[0])}, nil
}

func (p *execProber) Probe(ctx context.Context, target string) error {
	host, port := splitTarget(target)
	cmd := exec.CommandContext(ctx, p.argv[0], p.argv[1:]...)
	cmd.Env = append(os.Environ(),
		"HAVEN_TARGET="+target, "HAVEN_TARGET_HOST="+host, "HAVEN_TARGET_PORT="+port)
	// Its own process group, so that a timeout kills the command and
	// whatever it started (a shell and its curl), not just the leader.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execWaitDelay
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stderr = stderr // stdout goes to /dev/null

	err := cmd.Run()
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		// ErrWaitDelay comes with a zero exit: the command passed but left
		// a child holding stderr open; the verdict is the command's.
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("exec: %s: %w (killed)", p.name, ctxCause(ctx, err))
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return fmt.Errorf("exec: %s: %w", p.name, err) // did not start
	}
	if line := stderr.lastLine(); line != "" {
		return fmt.Errorf("exec: %s: %w: %s", p.name, err, line)
	}
	return fmt.Errorf("exec: %s: %w", p.name, err)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = t.b[:copy(t.b, t.b[over:])]
	}
	t.b = append(t.b, p...)
	return n, nil
}

// lastLine returns the last non-empty line, trimmed and bounded.
func (t *tailBuffer) lastLine() string {
	b := bytes.TrimRight(t.b, " \t\r\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	if len(s) > maxLine {
		s = s[:maxLine]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}
