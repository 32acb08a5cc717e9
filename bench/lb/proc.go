package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// service is one long-running child process (a proxy or a backend). It runs
// in its own process group so that it, its workers and its re-executed
// successors can be signalled and killed together, and so that a Ctrl-C in
// the terminal reaches only the harness, which then stops everything in order.
type service struct {
	name string
	cmd  *exec.Cmd
	log  string // path of the file holding its stdout and stderr
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// pid is the process id of the service's main process.
func (s *service) pid() int { return s.cmd.Process.Pid }

// exited reports whether the main process has exited.
func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the main process only.
func (s *service) signal(sig syscall.Signal) error {
	if s.exited() {
		return fmt.Errorf("%s: already exited", s.name)
	}
	return syscall.Kill(s.pid(), sig)
}

// logTail returns the last n lines of the service's output, on one line.
func (s *service) logTail(n int) string { return fileTail(s.log, n) }

// supervisor starts services and guarantees that every one of them is gone
// when stopAll returns, whatever state they are in.
type supervisor struct {
	dir string // where logs go

	mu    sync.Mutex
	procs []*service
}

// start runs argv as a service with extra environment variables env.
func (sv *supervisor) start(name string, env []string, argv ...string) (*service, error) {
	logPath := filepath.Join(sv.dir, "log", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = sv.dir
	// Pdeathsig is a second line of defence: if the harness is killed with
	// SIGKILL, the main process of every service dies with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &service{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	sv.mu.Lock()
	sv.procs = append(sv.procs, s)
	sv.mu.Unlock()
	return s, nil
}

// stop sends sig to the service's main process, waits up to grace for it to
// exit, then kills its whole process group. It returns once the main process
// has been reaped (or after a last bounded wait).
func (sv *supervisor) stop(s *service, sig syscall.Signal, grace time.Duration) {
	if s == nil {
		return
	}
	if !s.exited() {
		_ = syscall.Kill(s.pid(), sig)
		select {
		case <-s.done:
		case <-time.After(grace):
		}
	}
	// Workers and old generations (HAProxy after a reload, nginx workers)
	// share the group; none may outlive the service.
	_ = syscall.Kill(-s.pid(), syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
	sv.mu.Lock()
	for i, p := range sv.procs {
		if p == s {
			sv.procs = append(sv.procs[:i], sv.procs[i+1:]...)
			break
		}
	}
	sv.mu.Unlock()
}

// stopAll stops every service still known, politely first.
func (sv *supervisor) stopAll() {
	sv.mu.Lock()
	procs := append([]*service(nil), sv.procs...)
	sv.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sv.stop(s, syscall.SIGTERM, 3*time.Second)
		}()
	}
	wg.Wait()
}

// killAll kills every known process group at once; for the second Ctrl-C.
func (sv *supervisor) killAll() {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	for _, s := range sv.procs {
		_ = syscall.Kill(-s.pid(), syscall.SIGKILL)
	}
}

// fileTail returns the last n lines of a file, joined by " | ".
func fileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no output: " + err.Error() + ")"
	}
	return harness.LastLines(string(data), n)
}

// procStat is what /proc/PID/stat says about one process.
type procStat struct {
	pid, ppid int
	// ticks is utime+stime of the process itself plus cutime+cstime, the
	// time of its children that it has reaped (old workers after a reload).
	ticks int64
}

// parseStat parses the contents of /proc/PID/stat. The command name is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStat(data string) (procStat, error) {
	open := strings.IndexByte(data, '(')
	end := strings.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("stat: no command name")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(data[:open]))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: pid: %w", err)
	}
	f := strings.Fields(data[end+1:])
	// f[0] is field 3 (state); utime is field 14, so f[11].
	if len(f) < 15 {
		return procStat{}, errors.New("stat: too few fields")
	}
	st := procStat{pid: pid}
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	for _, s := range f[11:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat: times: %w", err)
		}
		st.ticks += v
	}
	return st, nil
}

// processTree returns root and all its live descendants.
func processTree(root int) []procStat {
	ents, _ := os.ReadDir("/proc")
	all := make(map[int]procStat, len(ents))
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		st, err := parseStat(string(data))
		if err != nil {
			continue
		}
		all[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	var out []procStat
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		st, ok := all[p]
		if !ok {
			continue
		}
		out = append(out, st)
		queue = append(queue, children[p]...)
	}
	return out
}

// clkTck is the unit of /proc/PID/stat times.
var clkTck = func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// treeCPU returns the CPU time (user+system) used so far by the process
// tree rooted at pid, including reaped children.
func treeCPU(pid int) time.Duration {
	var ticks int64
	for _, st := range processTree(pid) {
		ticks += st.ticks
	}
	return time.Duration(ticks) * time.Second / time.Duration(clkTck)
}

// treeRSS returns the summed VmRSS of the process tree rooted at pid, in KiB.
func treeRSS(pid int) int64 {
	var kib int64
	for _, st := range processTree(pid) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.pid))
		if err != nil {
			continue
		}
		kib += parseVmRSS(string(data))
	}
	return kib
}

// parseVmRSS returns the VmRSS line of /proc/PID/status in KiB (0 for a
// kernel thread or a zombie, which have none).
func parseVmRSS(status string) int64 {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		v, _ := strconv.ParseInt(f[0], 10, 64)
		return v
	}
	return 0
}

// cpuTimes returns how long CPU cpu (-1: all together) has been busy (user,
// nice, system, irq, softirq) and how much time the hypervisor stole from
// it, from /proc/stat.
func cpuTimes(cpu int) (busy, steal time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	prefix := fmt.Sprintf("cpu%d ", cpu)
	if cpu < 0 {
		prefix = "cpu "
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 9 {
			return 0, 0
		}
		v := make([]int64, len(f))
		for i := 1; i < len(f); i++ {
			v[i], _ = strconv.ParseInt(f[i], 10, 64)
		}
		tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / time.Duration(clkTck) }
		// user nice system idle iowait irq softirq steal
		return tick(v[1] + v[2] + v[3] + v[6] + v[7]), tick(v[8])
	}
	return 0, 0
}

// waitQuiet waits, up to maxWait, for a half-second in which the machine's
// CPUs are less than 10% busy. Between runs nothing of the benchmark's is
// busy, so what it sees is other people's work, which would distort the next
// run. It returns the busy share of the last sample.
func waitQuiet(ctx context.Context, maxWait time.Duration) (busy float64, waited time.Duration) {
	start := time.Now()
	ncpu := float64(runtime.NumCPU()) // as at start, before pinSelf
	for {
		b0, _ := cpuTimes(-1)
		t0 := time.Now()
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return busy, time.Since(start)
		case <-t.C:
		}
		b1, _ := cpuTimes(-1)
		busy = (b1 - b0).Seconds() / (time.Since(t0).Seconds() * ncpu)
		if busy < 0.10 || time.Since(start) >= maxWait {
			return busy, time.Since(start)
		}
	}
}

// tcpCounters reads host-wide TCP counters from /proc/net/netstat (the
// TcpExt lines: a header line of names, then a line of values).
func tcpCounters() map[string]int64 {
	out := map[string]int64{}
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return out
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != values[0] {
			continue
		}
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			out[strings.TrimSuffix(names[0], ":")+"."+names[j]] = v
		}
	}
	return out
}

// tcpTrouble are the counters worth reporting when they move during a run:
// lost or refused connection attempts.
var tcpTrouble = []struct{ key, label string }{
	{"TcpExt.TCPSynRetrans", "SYN retransmits"},
	{"TcpExt.ListenOverflows", "listen overflows"},
	{"TcpExt.PAWSTimewait", "SYNs refused by TIME_WAIT"},
}

// tcpTroubleDelta returns how the trouble counters moved from a to b.
func tcpTroubleDelta(a, b map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, c := range tcpTrouble {
		if d := b[c.key] - a[c.key]; d > 0 {
			out[c.label] = d
		}
	}
	return out
}

// describeTrouble formats counter deltas in tcpTrouble's order.
func describeTrouble(d map[string]int64) string {
	var parts []string
	for _, c := range tcpTrouble {
		if d[c.label] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.label, d[c.label]))
		}
	}
	return strings.Join(parts, ", ")
}
