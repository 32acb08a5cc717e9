package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// TestFaultsUndoneWithTheClientKilled is issue 17's "every fault undone
// after its duration with the drill client killed mid-drill": one agent
// (a database node, in a network namespace) with drills enabled; haven
// drill fault injects each kind, and is killed (SIGKILL) as soon as it has
// printed the fault. The faults are seen to act, then, once their
// durations have passed, to be gone: no nftables set element left, no
// process stopped, no fill file, the agent answering.
func TestFaultsUndoneWithTheClientKilled(t *testing.T) {
	bindir := needDatabase(t)
	testnet.Require(t)
	base := testenv.SearchableDir(t)
	// The node's data on a file system of its own, which a fill fills
	// rather than the machine's; mounted before the network starts, so
	// that it is unmounted after the agent is gone.
	root := filepath.Join(base, "data")
	if err := os.Mkdir(root, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=256m,mode=0711"); err != nil {
		t.Fatalf("mount a tmpfs for the node's data: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	paused, killed := faultSleeper(t), faultSleeper(t)
	for name, pid := range map[string]int{"paused": paused, "killed": killed} {
		if err := os.WriteFile(filepath.Join(base, name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(base, "haven.yaml")
	cfg := fmt.Sprintf(`cluster: faults
regions:
  lab:
    nodes:
      db1: {address: 198.18.1.11, zone: a, admin: "127.0.0.1:9701"}
      web1: {address: 198.18.1.12, zone: b}
coordination:
  members: [db1]
  data_dir: %[1]s/{node}/etcd
database:
  nodes: [db1]
  data_dir: %[1]s/{node}/pg
  bindir: %[2]s
  replication: {mode: async, password_file: %[3]s/replication.password}
  settings: {dynamic_shared_memory_type: mmap}
balancers:
  web:
    nodes: [db1]
    listen: 198.18.1.11:8080
    backends: [{address: "198.18.1.12:8080"}]
drills:
  enabled: true
  max_duration: 1m
  processes:
    paused: {pid_file: %[3]s/paused.pid}
    killed: {pid_file: %[3]s/killed.pid}
`, root, bindir, base)
	for name, content := range map[string]string{"haven.yaml": cfg, "replication.password": "faults-secret\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	n := testnet.Start(t, testnet.Options{Hosts: []string{"db1", "web1"}})
	db1 := n.Host("db1")
	bin := testenv.Haven(t)
	agent, err := db1.Start(context.Background(), bin, "agent", "-c", path, "-n", "db1")
	if err != nil {
		t.Fatal(err)
	}
	// cli runs haven in db1's namespace, where the agent's admin address
	// is.
	cli := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := db1.Command(ctx, bin, append(args, "-c", path)...).CombinedOutput()
		return string(out), err
	}
	primary := regexp.MustCompile(`(?m)^db1\s+primary\s`)
	testenv.Poll(t, 90*time.Second, "db1 the primary, in haven pg status", func() (bool, string) {
		select {
		case <-agent.Done():
			t.Fatalf("the agent exited:\n%s", agent.Output())
		default:
		}
		out, err := cli("pg", "status")
		return err == nil && primary.MatchString(out), out
	})
	pgData := filepath.Join(root, "db1", "pg")
	fillFile := filepath.Join(pgData, ".haven-drill-fill")
	full := fullness(t, root)
	level := full + (100-full)/2

	// inject runs haven drill fault and kills it with SIGKILL as soon as
	// it has printed the fault: the client dies mid-drill.
	inject := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var stderr testenv.Buffer
		cmd := db1.Command(ctx, bin, append([]string{"drill", "fault", "-c", path, "-n", "db1"}, args...)...)
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if !strings.HasPrefix(line, "fault ") {
			t.Fatalf("haven drill fault %s: %q\n%s", strings.Join(args, " "), line, stderr.String())
		}
		t.Logf("haven drill fault %s: %s", strings.Join(args, " "), strings.TrimSpace(line))
		return line
	}
	inject("--kind", "pause", "--target", "process:paused", "--for", "8s")
	inject("--kind", "drop", "--peers", "web1", "--for", "8s")
	inject("--kind", "loss", "--level", "50", "--peers", "198.18.1.12:8080", "--for", "8s")
	inject("--kind", "fill", "--level", strconv.Itoa(level), "--for", "8s")
	inject("--kind", "kill", "--target", "process:killed", "--for", "1s")

	// The faults act.
	if s := treeState(paused); !strings.Contains(s, "T") || strings.Trim(s, "T") != "" {
		t.Errorf("process:paused during its pause: states %q, want every one T", s)
	}
	// A cut begins a moment after its answer (fault.cutDelay), so the
	// elements are waited for, well inside the faults' 8 seconds.
	testenv.Poll(t, 5*time.Second, "web1 in the drop and loss sets", func() (bool, string) {
		out, err := db1.Command(context.Background(), "nft", "list", "table", "inet", fault.DropTable).CombinedOutput()
		return err == nil && strings.Count(string(out), "198.18.1.12") >= 2 && strings.Contains(string(out), "numgen random mod 100 < 50"), fmt.Sprintf("%v\n%s", err, out)
	})
	if _, err := os.Stat(fillFile); err != nil {
		t.Errorf("the fill file during the fill: %v", err)
	}
	testenv.Poll(t, 10*time.Second, "process:killed killed", func() (bool, string) {
		s := procStateOf(killed)
		return s == "" || s == "Z", s
	})

	// The agent's own pause: the agent and every process under it (its
	// postgres) stopped by the helper a moment after the answer.
	line := inject("--kind", "pause", "--target", "agent", "--for", "4s")
	m := regexp.MustCompile(`by a helper \(pid (\d+)\)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("the agent's pause names no helper: %s", line)
	}
	helper, _ := strconv.Atoi(m[1])
	agentPID := agent.PID
	testenv.Poll(t, 10*time.Second, "the agent and its postgres stopped (all but the helper)", func() (bool, string) {
		s := treeState(agentPID, helper)
		return len(s) > 1 && strings.Trim(s, "T") == "", s
	})

	// Every fault undone, though no client is left to ask.
	testenv.Poll(t, 60*time.Second, "every fault undone", func() (bool, string) {
		var left []string
		out, err := db1.Command(context.Background(), "nft", "list", "table", "inet", fault.DropTable).CombinedOutput()
		if err == nil && strings.Contains(string(out), "elements") {
			left = append(left, "nftables set elements:\n"+string(out))
		}
		for name, pid := range map[string]int{"process:paused": paused, "the agent": agentPID} {
			if s := treeState(pid); strings.Contains(s, "T") {
				left = append(left, fmt.Sprintf("%s's processes in states %s", name, s))
			}
		}
		if _, err := os.Stat(fillFile); err == nil {
			left = append(left, "the fill file")
		}
		if out, err := cli("drill", "faults", "-n", "db1"); err != nil || strings.TrimSpace(out) != "NODE  ID  KIND  UNTIL  WHAT" {
			left = append(left, fmt.Sprintf("haven drill faults: %v\n%s", err, out))
		}
		return len(left) == 0, strings.Join(left, "; ")
	})
	if p := fullness(t, root); p >= level {
		t.Errorf("the file system is %d%% full after the fill, as during it", p)
	}
	if log := agent.Output(); strings.Count(log, "fault undone") < 5 {
		t.Errorf("the agent logged %d faults undone, want 5 or more:\n%s", strings.Count(log, "fault undone"), log)
	}
}

// faultSleeper starts a process with a child, as a named process a fault
// hits; the test's cleanup wakes and ends both.
func faultSleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 600 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	testenv.Poll(t, 5*time.Second, "the sleeper's child", func() (bool, string) {
		return len(fault.Tree(cmd.Process.Pid)) > 1, ""
	})
	return cmd.Process.Pid
}

// procStateOf reads a process's state letter from /proc ("" if gone).
func procStateOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b)[strings.LastIndex(string(b), ")")+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// treeState is the state letters of pid and every process under it, but
// those of except.
func treeState(pid int, except ...int) string {
	var b strings.Builder
	for _, p := range fault.Tree(pid) {
		if !slices.Contains(except, p) {
			b.WriteString(procStateOf(p))
		}
	}
	return b.String()
}

// fullness is how full dir's file system is, in percent, as df counts.
func fullness(t *testing.T, dir string) int {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int((st.Blocks - st.Bfree) * 100 / (st.Blocks - st.Bfree + st.Bavail))
}
