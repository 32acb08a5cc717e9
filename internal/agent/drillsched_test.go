package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
)

func TestDrillDue(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	e := &config.DrillSchedule{Scenario: "primary-kill", Every: config.Duration(time.Hour)}
	for _, tc := range []struct {
		last *DrillRecord
		want bool
	}{
		{nil, true},
		{&DrillRecord{Ended: now.Add(-59 * time.Minute)}, false},
		{&DrillRecord{Ended: now.Add(-time.Hour)}, true},
		{&DrillRecord{Ended: now.Add(-2 * time.Hour), Error: "no primary"}, true},
		{&DrillRecord{Ended: now.Add(-time.Minute), Error: "no primary"}, false},
		{&DrillRecord{Ended: now.Add(-2 * time.Minute), Error: "no primary"}, true},
	} {
		if got := due(e, tc.last, now); got != tc.want {
			t.Errorf("last %+v: due %v, want %v", tc.last, got, tc.want)
		}
	}
}

// fakeDrill writes a script that stands for haven drill run: it records
// its pid, then does what body says.
func fakeDrill(t *testing.T, body string) (bin, pidFile string) {
	t.Helper()
	dir := t.TempDir()
	bin, pidFile = filepath.Join(dir, "drill"), filepath.Join(dir, "pid")
	script := "#!/bin/sh\necho $$ >" + pidFile + "\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, pidFile
}

// TestRunDetached: the drill runs out of the agent's process tree (a
// pause of the agent and everything under it does not stop it), its
// result is read whatever its exit status, and a failure or a hang says
// what happened.
func TestRunDetached(t *testing.T) {
	bin, pidFile := fakeDrill(t, `sleep 1; echo '{"scenario":"primary-kill","met":false,"reasons":["database: RTO 1s: stopped for 3s"]}'; exit 1`)
	done := make(chan struct{})
	var inTree bool
	go func() {
		defer close(done)
		for range 50 {
			if b, err := os.ReadFile(pidFile); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				inTree = slices.Contains(fault.Tree(os.Getpid()), pid)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r, err := runDetached(context.Background(), 30*time.Second, bin)
	<-done
	if err != nil || r.Scenario != "primary-kill" || r.Met || len(r.Reasons) != 1 {
		t.Errorf("a drill that did not keep its objectives: %+v, %v", r, err)
	}
	if inTree {
		t.Error("the drill runs under the agent: a pause of the agent's tree would stop it")
	}

	bin, _ = fakeDrill(t, `echo "drill: connect to the database through --dsn: refused" >&2; exit 1`)
	if _, err := runDetached(context.Background(), 30*time.Second, bin); err == nil || !strings.Contains(err.Error(), "the drill exited 1: drill: connect to the database through --dsn: refused") {
		t.Errorf("a drill that could not run: %v", err)
	}
	bin, _ = fakeDrill(t, `sleep 30`)
	if _, err := runDetached(context.Background(), time.Second, bin); err == nil || !strings.Contains(err.Error(), "the drill exited 137") && !strings.Contains(err.Error(), "did not end") {
		t.Errorf("a drill that hangs: %v", err)
	}
}
