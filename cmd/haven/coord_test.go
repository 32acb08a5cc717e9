package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestCoord runs haven coord against an agent that runs the group's one
// etcd member: members shows it leading and healthy, snapshot saves a
// database file etcd could restore (bolt's magic, its checksum printed),
// defrag reports the sizes, haven doctor finds the group healthy, and
// alarms disarm says none was raised. Then restore: refused while the
// agent runs; with it stopped, the member's data is moved aside and made
// from the snapshot, and the agent started again finds the operator's
// drain the snapshot held, though it was lifted after the snapshot.
func TestCoord(t *testing.T) {
	backend := startBackend(t, "app1")
	admin, listen, client, peer := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	port := func(a string) string { return a[strings.LastIndex(a, ":")+1:] }
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haven.yaml")
	doc := e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: backend}}, "") +
		fmt.Sprintf("coordination: {members: [lb1], client_port: %s, peer_port: %s, data_dir: %q}\n", port(client), port(peer), filepath.Join(testenv.MemoryDir(t), "{node}"))
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	agentProc := start(t, "agent", "-c", cfg, "-n", "lb1")
	row := regexp.MustCompile(`(?m)^lb1\s+[0-9a-f]+\s+leader\s+ok\s+`)
	testenv.Poll(t, time.Minute, "lb1 leading in haven coord members", func() (bool, string) {
		r := haven(t, 20*time.Second, "coord", "members", "-c", cfg)
		return r.code == 0 && row.MatchString(r.stdout), r.String()
	})

	if r := haven(t, 30*time.Second, "lb", "drain", "app1", "--reason", "before the snapshot", "-c", cfg); r.code != 0 {
		t.Fatalf("haven lb drain: %s", r)
	}
	snap := filepath.Join(dir, "etcd.snapshot")
	r := haven(t, 60*time.Second, "coord", "snapshot", snap, "-c", cfg)
	if r.code != 0 || !regexp.MustCompile(`saved .*etcd.snapshot: .* from lb1, sha256 [0-9a-f]{64}`).MatchString(r.stdout) {
		t.Fatalf("haven coord snapshot:\n%s", r)
	}
	b, err := os.ReadFile(snap)
	// A bolt file starts with a meta page: a 16-byte page header, then
	// the magic 0xED0CDAED.
	if err != nil || len(b) < 4096 || binary.LittleEndian.Uint32(b[16:20]) != 0xED0CDAED {
		t.Fatalf("the snapshot (%d bytes, %v) is not an etcd database file", len(b), err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".haven-snapshot-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	r = haven(t, 60*time.Second, "coord", "defrag", "-c", cfg)
	if r.code != 0 || !regexp.MustCompile(`(?m)^lb1: .* -> .* in `).MatchString(r.stdout) {
		t.Errorf("haven coord defrag:\n%s", r)
	}
	// haven doctor on the running cluster: the group's health.
	r = haven(t, 20*time.Second, "doctor", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "lb1 leads") || !strings.Contains(r.stdout, "lb1: answers, database") {
		t.Errorf("haven doctor on the running cluster:\n%s", r)
	}
	r = haven(t, 20*time.Second, "coord", "alarms", "disarm", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "no alarm was raised") {
		t.Errorf("haven coord alarms disarm:\n%s", r)
	}

	if r := haven(t, 30*time.Second, "lb", "enable", "app1", "-c", cfg); r.code != 0 {
		t.Fatalf("haven lb enable: %s", r)
	}
	if r := haven(t, 30*time.Second, "coord", "restore", snap, "-n", "lb1", "-c", cfg); r.code == 0 || !strings.Contains(r.stderr, "stop its agent first") {
		t.Errorf("haven coord restore while the agent runs: %s\nwant it refused", r)
	}
	if err := agentProc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := agentProc.wait(t, time.Minute); code != 0 {
		t.Fatalf("the agent exited %d on SIGTERM", code)
	}
	r = haven(t, time.Minute, "coord", "restore", snap, "-n", "lb1", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "moved lb1's old data to ") || !regexp.MustCompile(`restored .*etcd.snapshot \(revision \d+, \d+ keys, .*\) into .* as member lb1 of lb1`).MatchString(r.stdout) {
		t.Fatalf("haven coord restore: %s", r)
	}
	start(t, "agent", "-c", cfg, "-n", "lb1")
	testenv.Poll(t, time.Minute, "the snapshot's drain of app1 back after the restore", func() (bool, string) {
		r := haven(t, 20*time.Second, "lb", "status", "-o", "json", "-c", cfg)
		return r.code == 0 && strings.Contains(r.stdout, `"reason": "before the snapshot"`), r.String()
	})
}
