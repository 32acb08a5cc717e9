// Package testenv holds what the tests of every package share: one rule for
// a prerequisite the machine lacks, one way to wait for a condition, and one
// build of the haven binary per test binary. Only tests import it.
//
// A test that needs something the machine may not have (root, a program, a
// kernel feature) asks with Need, NeedRoot or NeedCommand. Off CI the test
// is skipped, saying what is missing and how to get it; in CI (the
// environment has CI=true) it fails instead, since scripts/prereqs.sh
// installs everything the suite needs there and a skipped test would pass
// unseen. A skip that a test chooses, such as in -short mode, is no
// prerequisite and stays a plain t.Skip.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Need ends the test unless ok: it is skipped off CI and fails in CI. The
// formatted reason says what is missing and how to get it, like "needs dig
// (apt-get install bind9-dnsutils)".
func Need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, where scripts/prereqs.sh must provide it", why)
	}
	t.Skip(why)
}

// NeedRoot ends the test, as Need does, unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root (run go test as root)")
}

// NeedCommand ends the test, as Need does, unless the program name is on
// PATH; pkg is the Debian package that has it. It returns the program's
// path.
func NeedCommand(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	Need(t, err == nil, "needs %s (apt-get install %s)", name, pkg)
	return path
}

// Poll calls cond until it reports done, a little longer apart each time
// (from 1ms up to 50ms), and fails the test if timeout passes first, with
// what it waited for and what cond last saw. Like t.Fatal, it must be
// called from the test's goroutine.
func Poll(t testing.TB, timeout time.Duration, what string, cond func() (done bool, seen string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		done, seen := cond()
		if done {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			if strings.Contains(seen, "\n") {
				seen = "\n" + seen
			}
			t.Fatalf("%s: not within %s; last seen: %s", what, timeout, seen)
		}
		time.Sleep(min(pause, left)) // the poll's interval, not a wait for the condition
		pause = min(2*pause, 50*time.Millisecond)
	}
}
