package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// Run runs argv to completion within timeout, with the extra environment
// variables env, and returns its combined output. The command runs in a
// process group of its own, which is killed when the deadline passes or
// ctx ends, and its main process dies with the harness (Pdeathsig). The
// error names argv[0] and says either how long it was given or how its
// output ended.
func Run(ctx context.Context, timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%s: %w (after %s)", argv[0], ctx.Err(), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s: %w: %s", argv[0], err, LastLines(out.String(), 5))
	}
	return out.String(), err
}

// LastLines returns the last n lines of s, without leading and trailing
// white space, joined by " | " into one line for a log or an error; of a
// longer result, the last 600 bytes after "…".
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, " | ")
	if len(out) > 600 {
		out = "…" + out[len(out)-600:]
	}
	return out
}

// FirstLine returns the first line of s that is not blank, trimmed, or
// "(unknown)": what a tool's version output says first.
func FirstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "(unknown)"
}

// ShellQuote quotes s as one word for sh.
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// BuildHaven builds the agent, ./cmd/haven of the working tree at root,
// into dir/haven, and returns that path, also when the build failed. A
// harness can go on without haven: the error, which carries the last lines
// of go build's output, is for haven's rows in the report.
func BuildHaven(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "haven")
	Logf("go build -o %s ./cmd/haven", bin)
	cmd := []string{"sh", "-c", "cd " + ShellQuote(root) + " && exec go build -o " + ShellQuote(bin) + " ./cmd/haven"}
	if out, err := Run(ctx, 10*time.Minute, nil, cmd...); err != nil {
		return bin, fmt.Errorf("go build ./cmd/haven failed: %s", LastLines(out, 6))
	}
	return bin, nil
}

// HavenVersion describes the haven under test for a report's versions:
// "haven: working tree at 1a2b3c4", with " (with uncommitted changes)"
// when markDirty is set and git status says so.
func HavenVersion(ctx context.Context, root string, markDirty bool) string {
	v := "haven: working tree"
	if out, err := Run(ctx, 10*time.Second, nil, "git", "-C", root, "rev-parse", "--short", "HEAD"); err == nil {
		v += " at " + strings.TrimSpace(out)
	}
	if !markDirty {
		return v
	}
	if out, err := Run(ctx, 10*time.Second, nil, "git", "-C", root, "status", "--porcelain"); err == nil && strings.TrimSpace(out) != "" {
		v += " (with uncommitted changes)"
	}
	return v
}

// WriteTemplate renders the text/template text with data into the file at
// path. A missing map key is an error.
func WriteTemplate(path, text string, data any) error {
	t, err := template.New(filepath.Base(path)).Option("missingkey=error").Parse(text)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
