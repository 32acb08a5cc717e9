package harness

import (
	"context"
	"errors"
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

	"github.com/haven-ha/haven/internal/testenv"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{2, 0.5}, 1.25},
	} {
		in := slices.Clone(tc.in)
		if got := Median(in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("Median changed its input %v to %v", tc.in, in)
		}
	}
	ms := time.Millisecond
	if got := Median([]time.Duration{400 * ms, 100 * ms, 300 * ms, 200 * ms}); got != 250*ms {
		t.Errorf("Median of durations = %v, want 250ms", got)
	}
	if got := Median([]int{1, 2}); got != 1 {
		t.Errorf("Median(1, 2) of ints = %d, want 1 (integer division)", got)
	}
}

func TestPercentile(t *testing.T) {
	var v []int
	for i := 100; i >= 1; i-- {
		v = append(v, i)
	}
	for _, tc := range []struct{ p, want int }{{0, 1}, {50, 51}, {99, 100}, {100, 100}} {
		if got := Percentile(v, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100, %d) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if v[0] != 100 {
		t.Error("Percentile sorted its input")
	}
	if got := Percentile([]time.Duration{3, 1, 2, 4}, 50); got != 3 {
		t.Errorf("Percentile(1..4, 50) = %v, want 3, the upper middle value", got)
	}
	if got := Percentile([]float64(nil), 99); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"one\n", 3, "one"},
		{"\n  a\nb\nc\nd\n\n", 2, "c | d"},
		{"a\nb", 5, "a | b"},
	} {
		if got := LastLines(tc.in, tc.n); got != tc.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
	long := strings.Repeat("x", 1000) + "\nEND"
	got := LastLines(long, 2)
	if !strings.HasPrefix(got, "…") || !strings.HasSuffix(got, "x | END") || len(got) != len("…")+600 {
		t.Errorf("LastLines of a long line = %q (%d bytes), want … and its last 600 bytes", got, len(got))
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "(unknown)",
		"\n \n":                              "(unknown)",
		"\n  nginx version: nginx/1.22.1 \n": "nginx version: nginx/1.22.1",
		"a\nb":                               "a",
	} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "with space", "it's", `'"$HOME; rm -rf /"'`, "a\nb", `\`} {
		q := ShellQuote(s)
		out, err := exec.Command("sh", "-c", "printf %s "+q).Output()
		if err != nil {
			t.Fatalf("sh -c 'printf %%s %s': %v", q, err)
		}
		if string(out) != s {
			t.Errorf("sh read ShellQuote(%q) = %s as %q", s, q, out)
		}
	}
}

func TestTable(t *testing.T) {
	var sb strings.Builder
	tab := NewTable(&sb, Left("target"), Right("runs"), Right("p99"), Left("notes"))
	tab.Row("haven", "10", "2.33ms", "")
	tab.Row("a|b", "3", "1ms", "line\nbreak | pipe")
	tab.Partial([]string{"nginx"}, "failed | to start")
	tab.Partial([]string{"caddy", "n/a: no TCP mode"}, "")
	want := `| target | runs | p99 | notes |
|---|---:|---:|---|
| haven | 10 | 2.33ms |  |
| a\|b | 3 | 1ms | line break \| pipe |
| nginx | | | failed \| to start |
| caddy | n/a: no TCP mode | | |
`
	if got := sb.String(); got != want {
		t.Errorf("table =\n%s\nwant\n%s", got, want)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{{"short", 10, "short"}, {"exact", 5, "exact"}, {"longer", 4, "long…"}, {"", 0, ""}} {
		if got := Truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// deadPID is a pid no process has: Linux's PID_MAX_LIMIT is 2^22.
const deadPID = 1 << 30

// workDir makes a directory of a run under parent whose owner is pid ("" for
// none).
func workDir(t *testing.T, parent, name, owner string) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if owner != "" {
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(owner), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestReapStale(t *testing.T) {
	parent, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dead := workDir(t, parent, "haven-bench-x-dead", strconv.Itoa(deadPID))
	garbled := workDir(t, parent, "haven-bench-x-garbled", "not a pid")
	self := workDir(t, parent, "haven-bench-x-self", strconv.Itoa(os.Getpid())) // an earlier process's pid
	alive := workDir(t, parent, "haven-bench-x-alive", strconv.Itoa(os.Getppid()))
	unowned := workDir(t, parent, "haven-bench-x-unowned", "")
	other := workDir(t, parent, "haven-bench-y-dead", strconv.Itoa(deadPID))

	// A process left over in the dead run's directory.
	leftover := exec.Command("sleep", "60")
	leftover.Dir = dead
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- leftover.Wait() }()
	t.Cleanup(func() { _ = leftover.Process.Kill() })

	notes := reapStale(parent, "haven-bench-x-", true)

	for _, d := range []string{dead, garbled, self} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v); its owner is gone", d, err)
		}
		if !slices.Contains(notes, "removed "+d) {
			t.Errorf("notes %q do not say that %s was removed", notes, d)
		}
	}
	for _, d := range []string{alive, unowned, other} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if want := "killed pid " + strconv.Itoa(leftover.Process.Pid) + " left over in " + dead; !slices.Contains(notes, want) {
		t.Errorf("notes %q do not say %q", notes, want)
	}
	select {
	case err := <-exited:
		if ws, ok := leftover.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the leftover process ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the leftover process is still running 10s after reapStale")
	}
	if len(notes) != 4 {
		t.Errorf("notes = %q, want one kill and three removals", notes)
	}
}

func TestReapStaleLeavesProcessesAlone(t *testing.T) {
	parent, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dead := workDir(t, parent, "haven-bench-x-1", strconv.Itoa(deadPID))
	p := exec.Command("sleep", "60")
	p.Dir = dead
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Process.Kill(); _ = p.Wait() })
	notes := reapStale(parent, "haven-bench-x-", false)
	if want := []string{"removed " + dead}; !slices.Equal(notes, want) {
		t.Errorf("notes = %q, want %q", notes, want)
	}
	if err := p.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process in the stale directory is gone: %v", err)
	}
}

func TestMakeWorkDir(t *testing.T) {
	parent := t.TempDir()
	dir, err := makeWorkDir(parent, "haven-bench-x-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(dir), "haven-bench-x-") || filepath.Dir(dir) != parent {
		t.Errorf("work dir %s, want %s/haven-bench-x-*", dir, parent)
	}
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil || string(data) != strconv.Itoa(os.Getpid()) {
		t.Errorf("owner file = %q, %v; want this process's pid", data, err)
	}
	RemoveWorkDir(dir, true)
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("RemoveWorkDir with keep removed it: %v", err)
	}
	RemoveWorkDir(dir, false)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("RemoveWorkDir left it: %v", err)
	}
}

func TestRawDir(t *testing.T) {
	here := t.TempDir()
	dir, err := newRawDir(here)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(here, dir)
	if !regexp.MustCompile(`^results/raw/\d{8}-\d{6}$`).MatchString(rel) {
		t.Errorf("raw dir %s, want results/raw/YYYYMMDD-HHMMSS", rel)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("raw dir not made: %v", err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bench", "internal", "harness")); err != nil {
		t.Errorf("RepoRoot = %s, which holds no bench/internal/harness", root)
	}
	if _, err := repoRootFrom(t.TempDir()); err == nil || !strings.Contains(err.Error(), "run from inside the haven repository") {
		t.Errorf("repoRootFrom outside the repository: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		p       Policy
		missing int
		want    bool
	}{
		{Auto, 0, false}, {Auto, 2, true},
		{Always, 0, true}, {Always, 1, true},
		{Never, 0, false}, {Never, 3, false},
	} {
		if err := tc.p.Check(); err != nil {
			t.Errorf("%s: %v", tc.p, err)
		}
		if got := tc.p.RunApt(tc.missing); got != tc.want {
			t.Errorf("%s.RunApt(%d) = %v, want %v", tc.p, tc.missing, got, tc.want)
		}
	}
	if err := Policy("maybe").Check(); err == nil || err.Error() != `-install "maybe" is not one of auto, always, never` {
		t.Errorf("Check of maybe = %v", err)
	}
}

func TestParseMachine(t *testing.T) {
	cpuinfo := "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
	if model, n := parseCPUInfo(cpuinfo); model != "AMD EPYC 7B13" || n != 2 {
		t.Errorf("parseCPUInfo = %q, %d; want AMD EPYC 7B13, 2", model, n)
	}
	if got := parseMemTotal("MemTotal:        8131428 kB\nMemFree: 1 kB\n"); got != "7.8 GiB" {
		t.Errorf("parseMemTotal = %q, want 7.8 GiB", got)
	}
	if got := parseMemTotal("MemFree: 1 kB\n"); got != "" {
		t.Errorf("parseMemTotal without MemTotal = %q", got)
	}
	m := Machine()
	if len(m) != 6 || !strings.HasPrefix(m[0], "date: ") || !strings.HasPrefix(m[5], "Debian: ") {
		t.Errorf("Machine() = %q", m)
	}
	if _, err := os.Stat("/proc/loadavg"); err == nil && len(strings.Fields(LoadAverage())) != 3 {
		t.Errorf("LoadAverage() = %q, want three numbers", LoadAverage())
	}
}

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if !Sleep(ctx, time.Millisecond) || !Sleep(ctx, -time.Second) {
		t.Error("Sleep did not report that d passed")
	}
	cancel()
	// Were ctx not watched, Sleep(ctx, time.Hour) would hang the test.
	if Sleep(ctx, time.Hour) || Sleep(ctx, 0) {
		t.Error("Sleep with an ended ctx reported that d passed")
	}
}

func TestExitCode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if got := ExitCode(ctx, "bench/test", nil); got != 0 {
		t.Errorf("ExitCode(nil) = %d, want 0", got)
	}
	if got := ExitCode(ctx, "bench/test", errors.New("boom")); got != 1 {
		t.Errorf("ExitCode(error) = %d, want 1", got)
	}
	cancel()
	if got := ExitCode(ctx, "bench/test", context.Canceled); got != 130 {
		t.Errorf("ExitCode(error after interrupt) = %d, want 130", got)
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	out, err := Run(ctx, 10*time.Second, []string{"HARNESS_TEST=x"}, "sh", "-c", `echo "out $HARNESS_TEST"; echo err >&2`)
	if err != nil || out != "out x\nerr\n" {
		t.Errorf("Run = %q, %v; want both streams and the extra environment", out, err)
	}
	_, err = Run(ctx, 10*time.Second, nil, "sh", "-c", "echo one; echo two; exit 3")
	if err == nil || err.Error() != "sh: exit status 3: one | two" {
		t.Errorf("Run of a failing command: %v", err)
	}
	start := time.Now()
	_, err = Run(ctx, 200*time.Millisecond, nil, "sh", "-c", "sleep 30 & sleep 30")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded (after 200ms)") {
		t.Errorf("Run past its deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run past its deadline returned after %v: the group was not killed", d)
	}
}

func TestWriteTemplate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.conf")
	if err := WriteTemplate(path, "listen {{.Addr}}\n", struct{ Addr string }{"127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(path); string(data) != "listen 127.0.0.1:1\n" {
		t.Errorf("rendered %q", data)
	}
	if err := WriteTemplate(path, "{{.Nope}}", map[string]string{}); err == nil {
		t.Error("a missing key rendered without an error")
	}
}

func TestHeader(t *testing.T) {
	got := Header("haven x benchmark (bench/x)", "3 runs", true, []string{"date: d", "nproc: 2"}, []string{"haven: working tree at abc"})
	want := "# haven x benchmark (bench/x)\n\nRun: QUICK (development) — 3 runs.\n\nMachine: date: d; nproc: 2.\n\nVersions: haven: working tree at abc.\n\n"
	if got != want {
		t.Errorf("Header =\n%q, want\n%q", got, want)
	}
	if got := Header("t", "3 runs", false, nil, nil); !strings.Contains(got, "\nRun: 3 runs.\n") {
		t.Errorf("Header of a full run = %q", got)
	}
}

// WriteReport prints the report and writes it where -o says, else to
// results/latest.md, or latest-quick.md for a quick run.
func TestWriteReport(t *testing.T) {
	here := t.TempDir()
	if err := os.Mkdir(filepath.Join(here, "results"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		out   string
		quick bool
		want  string
	}{
		{"", false, filepath.Join(here, "results", "latest.md")},
		{"", true, filepath.Join(here, "results", "latest-quick.md")},
		{filepath.Join(here, "mine.md"), true, filepath.Join(here, "mine.md")},
	} {
		var printed strings.Builder
		got, err := WriteReport(&printed, here, c.out, c.quick, "# report\n")
		if err != nil || got != c.want {
			t.Errorf("WriteReport(out %q, quick %v) = %q, %v; want %q", c.out, c.quick, got, err, c.want)
		}
		if b, err := os.ReadFile(c.want); err != nil || string(b) != "# report\n" || printed.String() != "\n# report\n" {
			t.Errorf("%s holds %q (%v), printed %q", c.want, b, err, printed.String())
		}
	}
}

// Under -install never a missing package is an error that names it, and
// nothing is installed.
func TestEnsureNever(t *testing.T) {
	err := Never.Ensure(context.Background(), "haven-no-such-package")
	if err == nil || !strings.Contains(err.Error(), "haven-no-such-package not installed and -install is never") {
		t.Errorf("Ensure under never: %v", err)
	}
	if err := Never.Ensure(context.Background()); err != nil {
		t.Errorf("Ensure of nothing: %v", err)
	}
}

// TestReapStaleUnmounts: a killed soak's run leaves a tmpfs mounted in its
// directory (each node's disk); reaping it detaches the mount and removes
// the directory, instead of emptying the tmpfs and leaving both behind.
func TestReapStaleUnmounts(t *testing.T) {
	testenv.NeedRoot(t) // to mount a tmpfs; fails under CI=true
	parent, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dead := workDir(t, parent, "haven-bench-m-dead", strconv.Itoa(deadPID))
	disk := filepath.Join(dead, "soak", "db1")
	if err := os.MkdirAll(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(disk, syscall.MNT_DETACH) })

	reapStale(parent, "haven-bench-m-", false)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("%s is still there (%v)", dead, err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), " "+disk+" ") {
		t.Errorf("%s is still mounted", disk)
	}
}

// The reports' formats: a gap not over is said so, never a huge number.
func TestFormats(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Gap(NotOver), "not over"},
		{Gap(1234 * time.Millisecond), "1.23 s"},
		{Dur(552 * time.Millisecond), "552 ms"},
		{Ms(NotOver), "∞"},
		{Ms(1500 * time.Millisecond), "1500"},
		{Ratio(6*time.Second, time.Second), "6.0×"},
		{Ratio(NotOver, time.Second), "–"},
		{Plural(1, "run", "runs"), "run"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if got := MedianGap([]time.Duration{time.Second, NotOver, NotOver}); got != NotOver {
		t.Errorf("MedianGap with a middle gap not over = %v", got)
	}
}
