// Package harness is the plumbing that haven's side-by-side benchmarks
// (bench/lb, bench/vip, bench/pg, bench/dr, bench/dns) share: the directories of a
// run (NewDirs), with the clean-up after a run that was killed; Ctrl-C
// (OnInterrupt); short commands with a deadline (Run); Debian packages
// under an -install policy (Policy.Ensure); building haven and describing
// the machine and the versions for a report's header; medians; markdown
// tables and where the report goes (WriteReport).
//
// A harness is a main package run as root from the repository. This
// package logs its progress to stderr (Logf) and leaves every decision
// about what to measure and how to report it to the harness.
package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// Logf writes one line of progress to stderr, after the time of day.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Sleep waits for d or until ctx ends, and reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ExitCode is the exit status of a harness named prog whose run returned
// err under ctx: 0 on success, 130 when it stopped because ctx ended (an
// interrupt), otherwise 1 after printing err to stderr.
func ExitCode(ctx context.Context, prog string, err error) int {
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		Logf("stopped: %v", err)
		return 130
	}
	fmt.Fprintln(os.Stderr, prog+":", err)
	return 1
}

// OnInterrupt makes the first SIGINT, SIGTERM or SIGHUP cancel the run,
// whose waits all watch its context, so that it cleans up after itself.
// A second signal, or a clean-up longer than grace (0: no limit), calls
// kill and exits with 130.
func OnInterrupt(cancel context.CancelFunc, grace time.Duration, kill func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		<-sigs
		Logf("interrupted: cleaning up (again to leave at once)")
		cancel()
		var timeout <-chan time.Time
		if grace > 0 {
			timeout = time.After(grace)
		}
		select {
		case <-sigs:
		case <-timeout:
		}
		kill()
		os.Exit(130)
	}()
}

// WriteReport prints the markdown report md to w and writes it to out, by
// default results/latest.md under here (latest-quick.md for a quick run).
// It returns the path it wrote.
func WriteReport(w io.Writer, here, out string, quick bool, md string) (string, error) {
	fmt.Fprint(w, "\n"+md)
	if out == "" {
		name := "latest.md"
		if quick {
			name = "latest-quick.md"
		}
		out = filepath.Join(here, "results", name)
	}
	return out, os.WriteFile(out, []byte(md), 0o644)
}
