// Package harness is the plumbing that haven's side-by-side benchmarks
// (bench/lb, bench/vip, and those to come) share: the directories of a run
// (NewDirs), with the clean-up after a run that was killed; short commands
// with a deadline (Run); Debian packages under an -install policy (Policy,
// AptInstall); building haven and describing the machine and the versions
// for a report's header; medians; and markdown tables.
//
// A harness is a main package run as root from the repository. This
// package logs its progress to stderr (Logf) and leaves every decision
// about what to measure and how to report it to the harness.
package harness

import (
	"context"
	"fmt"
	"os"
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
