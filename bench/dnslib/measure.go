package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	dns1 "github.com/miekg/dns"
)

// micro runs the Go benchmarks count times and prints the medians. Each
// round runs every benchmark once (go test -count 1), so a machine that
// gets busier or quieter meanwhile weighs on both libraries alike.
func micro(ctx context.Context, count int) error {
	dir, err := os.MkdirTemp("", "dnslib")
	if err != nil {
		return fmt.Errorf("benchmarks: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "dnslib.test")
	build := []string{"go", "test", "-c", "-o", bin}
	argv := []string{bin, "-test.run", "^$", "-test.bench", ".", "-test.benchmem", "-test.count", "1"}
	fmt.Printf("### Per message\n\n`%s`, then %d rounds of `%s` (what `go test -run '^$' -bench . -benchmem` runs)\n\n",
		strings.Join(build, " "), count, strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, build[0], build[1:]...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("benchmarks: build: %w\n%s", err, out)
	}
	var all []byte
	for round := range count {
		load := loadavg()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("benchmarks: round %d: %w\n%s", round+1, err, out)
		}
		fmt.Fprintf(os.Stderr, "benchmarks round %d done (load before: %s)\n", round+1, load)
		fmt.Printf("- round %d: load before %s\n", round+1, load)
		all = append(all, out...)
	}
	res, err := parseBench(all)
	if err != nil {
		return err
	}
	fmt.Printf("\n%s\nload after: %s\n\n", benchTable(res), loadavg())
	return nil
}

// benchResult is one benchmark's runs.
type benchResult struct {
	ns     []float64
	allocs int
	bytes  int
}

// parseBench reads go test -bench output into results by name (without
// the -GOMAXPROCS suffix), in order of first appearance.
func parseBench(out []byte) (map[string]*benchResult, error) {
	res := map[string]*benchResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || !strings.HasPrefix(f[0], "Benchmark") || f[3] != "ns/op" {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		ns, err1 := strconv.ParseFloat(f[2], 64)
		b, err2 := strconv.Atoi(f[4])
		a, err3 := strconv.Atoi(f[6])
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("benchmark line %q: %w", sc.Text(), err)
		}
		r := res[name]
		if r == nil {
			r = &benchResult{}
			res[name] = r
		}
		r.ns, r.bytes, r.allocs = append(r.ns, ns), b, a
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("benchmarks printed no results:\n%s", out)
	}
	return res, nil
}

// benchTable is the markdown table of res: one row per benchmark and
// query, the libraries side by side, medians of the runs.
func benchTable(res map[string]*benchResult) string {
	var b strings.Builder
	b.WriteString("| benchmark | v1 ns/op | v1 allocs (B) | v2 ns/op | v2 allocs (B) | v2÷v1 ns: medians (fastest runs) | v1compress ns/op | v1compress allocs (B) |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, bench := range []string{"Answer", "Unpack", "Pack"} {
		for _, q := range queries() {
			v1, v2, v1c := res[bench+"/v1/"+q.name], res[bench+"/v2/"+q.name], res[bench+"/v1compress/"+q.name]
			if v1 == nil || v2 == nil {
				continue
			}
			fmt.Fprintf(&b, "| %s %s | %.0f | %d (%d) | %.0f | %d (%d) | %.2f (%.2f) |", bench, q.name,
				median(v1.ns), v1.allocs, v1.bytes, median(v2.ns), v2.allocs, v2.bytes,
				median(v2.ns)/median(v1.ns), slices.Min(v2.ns)/slices.Min(v1.ns))
			if v1c != nil {
				fmt.Fprintf(&b, " %.0f | %d (%d) |\n", median(v1c.ns), v1c.allocs, v1c.bytes)
			} else {
				b.WriteString(" | |\n")
			}
		}
	}
	return b.String()
}

// ecsOption is dnsperf's -E for ECS 198.18.0.0/24: family 1, source 24,
// scope 0, the address cut to 3 octets.
const ecsOption = "8:00011800c61200"

// workloads are the dnsperf cells: every query the same A question, with
// no EDNS or with an OPT carrying ECS.
var workloads = []struct {
	name string
	args []string
}{
	{"plain", nil},
	{"ecs", []string{"-E", ecsOption}},
}

// perfResult is what one dnsperf run reports, and the CPU time the server
// used in it.
type perfResult struct {
	qps       float64
	sent      int
	completed int
	lost      int
	cpu       time.Duration // the server's user+system time, start to stop
}

// cpuPerQuery is the server's CPU time per answered query: unlike QPS it
// hardly moves when other processes share the CPU.
func (r perfResult) cpuPerQuery() time.Duration {
	if r.completed == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.completed)
}

// throughput starts each library's server in turn, pinned to CPU 1, and
// loads it with dnsperf pinned to CPU 0; rounds alternate the order.
func throughput(ctx context.Context, opt options) error {
	if runtime.NumCPU() < 2 {
		return errors.New("throughput: needs 2 CPUs: the server runs on CPU 1, dnsperf on CPU 0")
	}
	for _, p := range []string{"taskset", "dnsperf"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("throughput: %s not found (apt-get install -y dnsperf util-linux): %w", p, err)
		}
	}
	host, _, err := net.SplitHostPort(opt.addr)
	if err != nil || host != "127.0.0.1" {
		return fmt.Errorf("throughput: -addr %q: want 127.0.0.1:PORT", opt.addr)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	dir, err := os.MkdirTemp("", "dnslib")
	if err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	defer os.RemoveAll(dir)
	qfile := filepath.Join(dir, "queries")
	if err := os.WriteFile(qfile, []byte(qname+" A\n"), 0o644); err != nil {
		return fmt.Errorf("throughput: %w", err)
	}

	fmt.Printf("### Throughput (dnsperf, %d runs of %s per cell)\n\n", opt.runs, opt.duration)
	fmt.Printf("server: `taskset -c 1 <this program> -serve LIB -addr %s`\n", opt.addr)
	fmt.Printf("load: `%s`\n\n", strings.Join(dnsperfArgs(opt.addr, qfile, opt.duration, nil), " "))
	res := map[string][]perfResult{}
	libs := []string{"v1", "v2"}
	for round := range opt.runs {
		for _, w := range workloads {
			for _, lib := range libs {
				load := loadavg()
				r, err := perfRun(ctx, self, lib, opt, qfile, w.args)
				if err != nil {
					return fmt.Errorf("throughput: %s %s round %d: %w", lib, w.name, round+1, err)
				}
				fmt.Fprintf(os.Stderr, "round %d %-5s %s: %.0f QPS, %d lost of %d, server CPU %.2f µs/query (load before: %s)\n",
					round+1, w.name, lib, r.qps, r.lost, r.sent, micros(r.cpuPerQuery()), load)
				fmt.Printf("- round %d %s %s: load before %s\n", round+1, w.name, lib, load)
				res[lib+"/"+w.name] = append(res[lib+"/"+w.name], r)
			}
		}
		slices.Reverse(libs)
	}
	fmt.Println("\n| queries | v1 QPS (min–max) | v2 QPS (min–max) | v2÷v1 QPS | v1 server CPU µs/query | v2 server CPU µs/query | v2÷v1 CPU | lost v1 / v2 |")
	fmt.Println("|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, w := range workloads {
		v1, v2 := res["v1/"+w.name], res["v2/"+w.name]
		q1, q2 := qpsOf(v1), qpsOf(v2)
		c1, c2 := cpuOf(v1), cpuOf(v2)
		fmt.Printf("| %s | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.2f | %.2f | %.2f | %.2f | %d / %d |\n", w.name,
			median(q1), slices.Min(q1), slices.Max(q1), median(q2), slices.Min(q2), slices.Max(q2),
			median(q2)/median(q1), median(c1), median(c2), median(c2)/median(c1), lost(v1), lost(v2))
	}
	fmt.Printf("\nload after: %s\n", loadavg())
	return nil
}

// perfRun starts lib's server, waits until it answers, runs dnsperf once
// and stops the server.
func perfRun(ctx context.Context, self, lib string, opt options, qfile string, extra []string) (res perfResult, err error) {
	// The server stops by itself after its lifetime even if this process
	// dies without stopping it.
	life := opt.duration + 30*time.Second
	srv := exec.Command("taskset", "-c", "1", self, "-serve", lib, "-addr", opt.addr, "-lifetime", life.String())
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		return res, fmt.Errorf("start server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			srv.Process.Kill()
			<-exited
		}
		// taskset execs the server: its usage is the server's.
		if ru, ok := srv.ProcessState.SysUsage().(*syscall.Rusage); ok {
			res.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}()
	if err := waitAnswer(ctx, opt.addr, exited); err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, opt.duration+20*time.Second)
	defer cancel()
	argv := dnsperfArgs(opt.addr, qfile, opt.duration, extra)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	return parsePerf(out)
}

// waitAnswer polls addr with a query until it answers, for at most 5 s.
func waitAnswer(ctx context.Context, addr string, exited <-chan error) error {
	m := new(dns1.Msg)
	m.SetQuestion(qname, dns1.TypeA)
	cl := &dns1.Client{Timeout: 200 * time.Millisecond}
	deadline := time.Now().Add(5 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("server exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		r, _, err := cl.ExchangeContext(ctx, m, addr)
		if err == nil && len(r.Answer) == 1 {
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server at %s did not answer within 5 s: last error %v", addr, last)
}

// dnsperfArgs is the dnsperf command line, pinned to CPU 0: one client
// socket, one thread, 100 queries in flight (bench/dns's settings).
func dnsperfArgs(addr, qfile string, d time.Duration, extra []string) []string {
	host, port, _ := net.SplitHostPort(addr)
	argv := []string{"taskset", "-c", "0", "dnsperf", "-s", host, "-p", port, "-d", qfile,
		"-l", strconv.FormatFloat(d.Seconds(), 'f', -1, 64), "-c", "1", "-T", "1", "-q", "100", "-t", "1"}
	return append(argv, extra...)
}

// parsePerf reads dnsperf's statistics.
func parsePerf(out []byte) (perfResult, error) {
	var r perfResult
	var haveQPS bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		var err error
		switch strings.TrimSpace(k) {
		case "Queries sent":
			r.sent, err = strconv.Atoi(first)
		case "Queries completed":
			r.completed, err = strconv.Atoi(first)
		case "Queries lost":
			r.lost, err = strconv.Atoi(first)
		case "Queries per second":
			r.qps, err = strconv.ParseFloat(first, 64)
			haveQPS = err == nil
		}
		if err != nil {
			return r, fmt.Errorf("dnsperf output: %q: %w", sc.Text(), err)
		}
	}
	if !haveQPS {
		return r, fmt.Errorf("dnsperf output has no statistics:\n%s", out)
	}
	return r, nil
}

func qpsOf(rs []perfResult) []float64 {
	q := make([]float64, len(rs))
	for i, r := range rs {
		q[i] = r.qps
	}
	return q
}

func cpuOf(rs []perfResult) []float64 {
	c := make([]float64, len(rs))
	for i, r := range rs {
		c[i] = micros(r.cpuPerQuery())
	}
	return c
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func lost(rs []perfResult) int {
	n := 0
	for _, r := range rs {
		n += r.lost
	}
	return n
}

func median(x []float64) float64 {
	s := slices.Sorted(slices.Values(x))
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// loadavg is the first three fields of /proc/loadavg, what uptime prints.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
