package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// These tests run haven the way a user does: every test runs the binary,
// built once by testenv (with the race detector when the tests have it), as
// a separate process.

func TestMain(m *testing.M) { testenv.Main(m) }

// result is a finished haven command.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%sstderr:\n%s", r.code, r.stdout, r.stderr)
}

// haven runs the binary to completion, for at most timeout.
func haven(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return runHaven(t, testenv.HavenRace(t), timeout, args...)
}

// runHaven runs the haven binary bin to completion, for at most timeout.
func runHaven(t *testing.T, bin string, timeout time.Duration, args ...string) result {
	t.Helper()
	var stdout, stderr testenv.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("haven %s: %v", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return result{exitCode(t, err), stdout.String(), stderr.String()}
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("haven %s: still running after %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, stdout.String(), stderr.String())
	}
	return result{}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	}
	t.Fatalf("haven did not exit normally: %v", err)
	return -1
}

// proc is a long-running haven process (an agent, a demo backend).
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr testenv.Buffer
	done           chan struct{}
	err            error
}

// start runs haven in the background; the test's cleanup kills it if it
// is still running.
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startBinary(t, testenv.HavenRace(t), args...)
}

// startBinary is start with the haven binary at bin.
func startBinary(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("haven %s: %v", strings.Join(args, " "), err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		// A race in a long-running process is reported on its stderr;
		// killed, it never exits with the detector's status.
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("haven %s: the race detector reported a data race", strings.Join(args, " "))
		}
		if t.Failed() {
			t.Logf("haven %s:\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return exitCode(t, p.err)
	case <-time.After(timeout):
		t.Fatalf("haven %s: still running after %s", strings.Join(p.cmd.Args[1:], " "), timeout)
	}
	return -1
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago, below
// the ephemeral range, and that no other freeAddr call of this process has
// returned (testenv.FreePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t, "127.0.0.1")
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		r := haven(t, 10*time.Second, arg)
		if r.code != 0 || r.stdout != "haven "+testenv.Version+"\n" || r.stderr != "" {
			t.Errorf("haven %s:\n%s\nwant exit 0 and \"haven %s\"", arg, r, testenv.Version)
		}
	}
}

func TestUsage(t *testing.T) {
	r := haven(t, 10*time.Second)
	if r.code != 2 || !strings.Contains(r.stderr, "usage:") || !strings.Contains(r.stderr, "haven agent") {
		t.Errorf("haven without a command:\n%s\nwant exit 2 and the usage on stderr", r)
	}
	r = haven(t, 10*time.Second, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "haven check") {
		t.Errorf("haven help:\n%s\nwant exit 0 and the usage on stdout", r)
	}
	r = haven(t, 10*time.Second, "frobnicate")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) {
		t.Errorf("haven frobnicate:\n%s\nwant exit 2 naming the command", r)
	}
	r = haven(t, 10*time.Second, "agent", "-c", "testdata/good.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "-n NODE is required") {
		t.Errorf("haven agent without -n:\n%s\nwant exit 1 saying -n NODE is required", r)
	}
}

// TestHelpPrintsUsageOnce runs -h on every command of haven's usage: each
// prints its usage once (the flag package prints it on -h; a command that
// printed it again showed it twice) and exits 0.
func TestHelpPrintsUsageOnce(t *testing.T) {
	cmds := regexp.MustCompile(`(?m)^  haven (\w+) `).FindAllStringSubmatch(usage, -1)
	if len(cmds) < 10 {
		t.Fatalf("found %d commands in haven's usage, want every one:\n%s", len(cmds), usage)
	}
	for _, m := range cmds {
		cmd := m[1]
		if cmd == "version" {
			continue // it has no flags
		}
		r := haven(t, 10*time.Second, cmd, "-h")
		if n := strings.Count(strings.ToLower(r.stderr), "usage"); r.code != 0 || n != 1 {
			t.Errorf("haven %s -h:\n%s\nwant exit 0 and the usage once (it is there %d times)", cmd, r, n)
		}
	}
}

func TestCheckGoodFile(t *testing.T) {
	r := haven(t, 10*time.Second, "check", "-c", "testdata/good.yaml")
	if r.code != 0 || r.stdout != "testdata/good.yaml: ok (1 node, 1 balancer, 1 check)\n" {
		t.Errorf("haven check on a good file:\n%s", r)
	}
}

// TestCheckAssessesTheTier: with a database, haven check says which of the
// guide's tiers the file reaches and which objective it cannot keep, and
// still exits 0 (advice, not a problem of the file).
func TestCheckAssessesTheTier(t *testing.T) {
	b, err := os.ReadFile("../../internal/drill/testdata/warm-standby.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	doc := strings.Replace(string(b), "objectives: {rto: 30s, rpo: 5s}", "objectives: {rto: 30s, rpo: 0s}", 1)
	for name, content := range map[string]string{"haven.yaml": doc, "pg-replication.password": "secret\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := haven(t, 10*time.Second, "check", "-c", filepath.Join(dir, "haven.yaml"))
	if r.code != 0 || !strings.Contains(r.stdout, "\ntier: warm standby\n") || !strings.Contains(r.stdout, "objective not kept: region: RPO 0s: up to 5s may be lost") {
		t.Errorf("haven check of a warm standby with an RPO of 0 and async DR:\n%s", r)
	}
}

func TestCheckBadFileListsEveryProblem(t *testing.T) {
	r := haven(t, 10*time.Second, "check", "-c", "testdata/two-problems.bad.yaml")
	if r.code != 1 {
		t.Fatalf("haven check on a bad file:\n%s\nwant exit 1", r)
	}
	want := []string{
		`testdata/two-problems.bad.yaml:11:16: balancers.web.algorithm: "round-robin" is not one of roundrobin, leastconn, source, random2`,
		`testdata/two-problems.bad.yaml:13:35: balancers.web.backends[0].wieght: unknown key (did you mean weight?)`,
		`testdata/two-problems.bad.yaml: 2 problem(s)`,
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("haven check output lacks\n  %s\ngot:\n%s", w, r.stderr)
		}
	}
	// Every problem line carries file:line:col.
	pos := regexp.MustCompile(`^testdata/two-problems\.bad\.yaml:\d+:\d+: `)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	for _, l := range lines[:len(lines)-1] {
		if !pos.MatchString(l) {
			t.Errorf("problem line without file:line:col: %q", l)
		}
	}
}

func TestCheckMissingFile(t *testing.T) {
	r := haven(t, 10*time.Second, "check", "-c", "testdata/nope.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "testdata/nope.yaml") || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("haven check on a missing file:\n%s\nwant exit 1 naming the file", r)
	}
}

// yamlBlocks returns the ```yaml blocks of a Markdown file.
func yamlBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestDocExamplesPassCheck runs `haven check` on every haven.yaml example
// of the README, docs/admin.md and docs/vip.md, as a reader would after
// copying it.
// A token file named by an example is created beside it.
func TestDocExamplesPassCheck(t *testing.T) {
	tokenFile := regexp.MustCompile(`token_file: *"?([^"\s}]+)`)
	for _, doc := range []string{"../../README.md", "../../docs/admin.md", "../../docs/vip.md"} {
		blocks := yamlBlocks(t, doc)
		if len(blocks) == 0 {
			t.Errorf("%s has no yaml example", doc)
		}
		for i, y := range blocks {
			if !strings.Contains(y, "cluster:") {
				continue // a fragment, not a whole haven.yaml
			}
			dir := t.TempDir()
			if m := tokenFile.FindStringSubmatch(y); m != nil && !filepath.IsAbs(m[1]) {
				if err := os.WriteFile(filepath.Join(dir, m[1]), []byte("example-token\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "haven.yaml")
			if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
				t.Fatal(err)
			}
			if r := haven(t, 10*time.Second, "check", "-c", path); r.code != 0 {
				t.Errorf("%s: yaml example %d fails haven check:\n%s\n%s", doc, i+1, r, y)
			}
		}
	}
}

func TestStatusWithoutAgent(t *testing.T) {
	// Run it a few times: the balancers come out in the same (sorted) order
	// each time, and an unreachable node makes the exit status 1.
	for range 3 {
		r := haven(t, 20*time.Second, "status", "-c", "testdata/two-balancers.yaml")
		if r.code != 1 || !strings.HasPrefix(r.stdout, "lb1: unreachable: node lb1: ") || !strings.Contains(r.stdout, "is its agent running?") {
			t.Fatalf("haven status with no agent:\n%s\nwant exit 1 and lb1 unreachable", r)
		}
		api := strings.Index(r.stdout, "balancer api (http, 127.0.0.1:8081)")
		mail := strings.Index(r.stdout, "balancer mail (tcp, 127.0.0.1:8025)")
		web := strings.Index(r.stdout, "balancer web (http, 127.0.0.1:8080)")
		if api < 0 || mail < api || web < mail {
			t.Fatalf("haven status lists the balancers out of order (want api, mail, web):\n%s", r.stdout)
		}
	}
	r := haven(t, 20*time.Second, "lb", "status", "-c", "testdata/two-balancers.yaml")
	if r.code != 1 || !strings.Contains(r.stderr, "say which balancer with -b (balancers: [api mail web])") {
		t.Errorf("haven lb status with three balancers and no -b:\n%s", r)
	}
}

// haven drill says what is missing before it asks any agent.
func TestDrillNeedsANode(t *testing.T) {
	r := haven(t, 10*time.Second, "drill", "fault", "--kind", "pause", "--for", "5s", "-c", "testdata/good.yaml")
	if r.code == 0 || !strings.Contains(r.stderr, "give the node to inject the fault on: -n NODE") {
		t.Errorf("haven drill fault without -n:\n%s", r)
	}
}

// haven drill run says where it cannot write the report before the drill,
// not after it.
func TestDrillReportNeedsADirectory(t *testing.T) {
	r := haven(t, 10*time.Second, "drill", "run", "primary-pause", "--url", "http://127.0.0.1:9/", "--html", "/nonexistent/report.html", "-c", "testdata/good.yaml")
	if r.code == 0 || !strings.Contains(r.stderr, "--html /nonexistent/report.html: no directory /nonexistent to write the report in") {
		t.Errorf("haven drill run --html into no directory:\n%s", r)
	}
}

// TestConfigFromEnvironment: without -c every command reads the file in
// $HAVEN_CONFIG (the systemd unit's), and -c still wins over it.
func TestConfigFromEnvironment(t *testing.T) {
	var out, errb strings.Builder
	t.Setenv("HAVEN_CONFIG", "testdata/good.yaml")
	if code := run([]string{"check"}, &out, &errb); code != 0 {
		t.Fatalf("haven check with HAVEN_CONFIG=testdata/good.yaml: exit %d\n%s%s", code, out.String(), errb.String())
	}
	missing := filepath.Join(t.TempDir(), "nowhere.yaml")
	t.Setenv("HAVEN_CONFIG", missing)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check"}, &out, &errb); code == 0 || !strings.Contains(out.String()+errb.String(), missing) {
		t.Fatalf("haven check with HAVEN_CONFIG=%s: exit %d\n%s%s\nwant a failure naming the file", missing, code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-c", "testdata/good.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("haven check -c testdata/good.yaml beside HAVEN_CONFIG=%s: exit %d\n%s%s", missing, code, out.String(), errb.String())
	}
}
