package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestScheduledRestoreTest: with verify_every, once the cluster has a
// backup, the node that takes backups restores it into a scratch
// directory, recovers it from the archive and queries it, and haven status
// says the restore test passed, for that backup, on that node.
func TestScheduledRestoreTest(t *testing.T) {
	store := t.TempDir()
	path, root, _, _ := backupCluster(t, `{target: "file://`+store+`", verify_every: 1h}`)
	r := haven(t, 3*time.Minute, "backup", "run", "--wait", "-c", path)
	m := regexp.MustCompile(`(?m)^(\d{8}-\d{6}\.\d{3}F)  full .* from (db\d), `).FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("haven backup run --wait: %s", r)
	}
	want := "restore test: passed, " + m[1] + " restored and recovered to "
	var line string
	testenv.Poll(t, 3*time.Minute, "haven status to report the restore test passed", func() (bool, string) {
		st := haven(t, 20*time.Second, "status", "-c", path)
		line = regexp.MustCompile(`(?m)^  restore test: .*$`).FindString(st.stdout)
		return strings.Contains(line, want) && strings.Contains(line, " on "+m[2]+" in "), st.stdout
	})
	t.Log(line)
	// A second restore test may be under way already (seen once in CI: it
	// started as the first one's result was recorded), its scratch copy
	// there until it ends: wait for the directory to be empty.
	testenv.Poll(t, 3*time.Minute, "the restore test's scratch directory emptied", func() (bool, string) {
		left, _ := os.ReadDir(root + "/" + m[2] + "/restore-test")
		return len(left) == 0, fmt.Sprint(len(left), " entries left")
	})
}
