// Command lb is haven's side-by-side load-balancer benchmark. It installs
// HAProxy, nginx, Caddy, wrk and vegeta, starts three loopback backends, and
// compares haven with HAProxy, nginx and Caddy, each pinned to CPU 0 with one
// worker, while the load generators and backends run on CPU 1.
//
// Usage (from the repository root):
//
//	go run ./bench/lb                      # full run: 3 interleaved rounds of 10s
//	go run ./bench/lb -quick               # 1 round of 3s, for development
//	go run ./bench/lb -scenario failover   # faults under load
//
// See bench/lb/README.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/haven-ha/haven/bench/internal/harness"
)

type options struct {
	scenario         string
	quick            bool
	rounds           int
	duration         time.Duration
	conns            int
	idle             int
	targets          []string
	install          harness.Policy
	out              string
	keep             bool
	keepRaw          bool
	failoverDuration time.Duration
	failoverConc     int
	failoverMaxReq   int64
	quietWait        time.Duration
	quietBudget      time.Duration
	maxRate          int
	maxRateClose     int
	noisyRepeats     int
	cores            []int // the placements of the perf scenario: 1 (CPU 0), 2 (CPUs 0 and 1)
}

// bench is one run of the harness.
type bench struct {
	opt    options
	root   string // repository root
	here   string // bench/lb
	dir    string // temporary directory: configs, logs, binaries
	rawDir string // raw tool output, under results/raw (gitignored)
	sv     *supervisor
	out    io.Writer

	vegetaBin     string
	havenBin      string
	havenBuildErr error
	caddyNote     string // why Caddy is not available, if it is not

	machine  []string // "key: value" lines for the report
	versions []string

	quietSpent time.Duration // of opt.quietBudget

	// cores is the current placement: 1 (or 0), each proxy with one
	// worker on CPU 0 and the load on CPU 1; 2, each proxy with two
	// workers and the load sharing CPUs 0 and 1.
	cores int
}

func (b *bench) threads() int { return max(b.cores, 1) }

func (b *bench) gomaxprocs() string { return fmt.Sprintf("GOMAXPROCS=%d", b.threads()) }

// proxyCPUs is the proxies' CPU list for taskset.
func (b *bench) proxyCPUs() string {
	if b.threads() == 2 {
		return "0,1"
	}
	return "0"
}

// waitQuiet waits for a quiet machine within -quiet-wait and what is left
// of -quiet-budget; it returns the busy share of the last sample.
func (b *bench) waitQuiet(ctx context.Context) float64 {
	limit := min(b.opt.quietWait, b.opt.quietBudget-b.quietSpent)
	busy, waited := waitQuiet(ctx, max(0, limit))
	b.quietSpent += waited
	if waited > time.Second {
		harness.Logf("waited %s for a quiet machine (last sample %.0f%% busy; %s of the budget left)", waited.Round(time.Second), 100*busy, max(0, b.opt.quietBudget-b.quietSpent).Round(time.Second))
	}
	return busy
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var opt options
	var targets string
	flag.StringVar(&opt.scenario, "scenario", "perf", "perf (throughput, CPU, latency, idle connections), failover, console (the dashboard's cost under load), accesslog (the access log's cost), or all")
	flag.BoolVar(&opt.quick, "quick", false, "1 round of 3s runs (development)")
	flag.IntVar(&opt.rounds, "rounds", 3, "interleaved rounds; the median is reported")
	flag.DurationVar(&opt.duration, "d", 10*time.Second, "duration of each wrk and vegeta run")
	flag.IntVar(&opt.conns, "c", 50, "wrk connections")
	flag.IntVar(&opt.idle, "idle", 10000, "idle client connections to hold open for the memory measurement (0: skip)")
	flag.StringVar(&targets, "targets", "direct,haven,haproxy,nginx,caddy", "targets, in round order")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get only what is missing), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/lb/results/latest.md, or failover.md for -scenario failover; with -quick, latest-quick.md or failover-quick.md)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configs and logs)")
	flag.BoolVar(&opt.keepRaw, "keep-raw", false, "keep vegeta's binary results in results/raw")
	flag.DurationVar(&opt.failoverDuration, "failover-d", 15*time.Second, "duration of each failover run")
	flag.IntVar(&opt.failoverConc, "failover-c", 16, "concurrent keep-alive connections of the failover load")
	flag.Int64Var(&opt.failoverMaxReq, "failover-max", 3_000_000, "upper bound on requests of one failover run")
	flag.DurationVar(&opt.quietWait, "quiet-wait", 60*time.Second, "before each run, wait up to this long for the machine to be <10% busy (0: don't wait)")
	flag.DurationVar(&opt.quietBudget, "quiet-budget", 10*time.Minute, "total time all the waits for quiet may take")
	flag.IntVar(&opt.maxRate, "max-rate", 10000, "cap on the fixed latency rate: vegeta shares CPU 1 with the backends and cannot hold much more (0: no cap)")
	flag.IntVar(&opt.maxRateClose, "max-rate-close", 4000, "the same cap in the connection-close scenario, where vegeta opens a connection per request")
	flag.IntVar(&opt.noisyRepeats, "noisy-repeats", 2, "repeat a run up to this many times when other work took >10% of CPU 0 during it")
	cores := flag.String("cores", "1,2", "placements of the perf scenario: 1 (each proxy with one worker on CPU 0, the load on CPU 1), 2 (two workers, the load on the same two CPUs)")
	flag.Parse()
	for _, c := range strings.Split(*cores, ",") {
		switch strings.TrimSpace(c) {
		case "1":
			opt.cores = append(opt.cores, 1)
		case "2":
			opt.cores = append(opt.cores, 2)
		default:
			fmt.Fprintf(os.Stderr, "-cores: %q is not 1 or 2\n", c)
			os.Exit(2)
		}
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick {
		if !set["rounds"] {
			opt.rounds = 1
		}
		if !set["d"] {
			opt.duration = 3 * time.Second
		}
		if !set["failover-d"] {
			opt.failoverDuration = 6 * time.Second
		}
		if !set["quiet-wait"] {
			opt.quietWait = 5 * time.Second
		}
		if !set["quiet-budget"] {
			opt.quietBudget = time.Minute
		}
	}
	opt.targets = strings.Split(targets, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/lb:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, out: os.Stdout, sv: &supervisor{}}

	// First Ctrl-C: stop politely (every wait below watches ctx). Second:
	// kill every process group at once and leave.
	// The temporary directory stays after a second Ctrl-C; the next run
	// removes it (harness.NewDirs).
	harness.OnInterrupt(cancel, 0, b.sv.killAll)

	return harness.ExitCode(ctx, "bench/lb", b.run(ctx))
}

func validate(opt options) error {
	switch opt.scenario {
	case "perf", "failover", "console", "accesslog", "all":
	default:
		return fmt.Errorf("-scenario %q is not one of perf, failover, console, accesslog, all", opt.scenario)
	}
	if err := opt.install.Check(); err != nil {
		return err
	}
	known := []string{"direct", "haven", "haven-epoll", "haproxy", "nginx", "caddy"}
	for _, t := range opt.targets {
		if !slices.Contains(known, t) {
			return fmt.Errorf("-targets: %q is not one of %s", t, strings.Join(known, ", "))
		}
	}
	switch {
	case opt.rounds < 1:
		return fmt.Errorf("-rounds %d: must be at least 1", opt.rounds)
	case opt.conns < 1:
		return fmt.Errorf("-c %d: must be at least 1", opt.conns)
	case opt.failoverConc < 1:
		return fmt.Errorf("-failover-c %d: must be at least 1", opt.failoverConc)
	case opt.duration < time.Second:
		return fmt.Errorf("-d %s: must be at least 1s", opt.duration)
	case opt.failoverDuration < 3*time.Second:
		return fmt.Errorf("-failover-d %s: must be at least 3s", opt.failoverDuration)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages and raises limits")
	}
	// nginx workers survive their master: kill what a killed run left.
	dirs, err := harness.NewDirs("lb", true)
	if err != nil {
		return err
	}
	b.root, b.here, b.dir, b.rawDir = dirs.Root, dirs.Here, dirs.Work, dirs.Raw
	b.sv.dir = b.dir
	defer func() {
		b.sv.stopAll()
		harness.RemoveWorkDir(b.dir, b.opt.keep)
	}()

	// Setup uses both CPUs; the measurement pins the harness to CPU 1.
	if err := b.setup(ctx); err != nil {
		return err
	}
	if err := pinSelf(1); err != nil {
		return fmt.Errorf("pin the harness to CPU 1: %w", err)
	}
	if err := raiseNoFile(); err != nil {
		harness.Logf("warning: %v", err)
	}
	if err := b.checkPorts(); err != nil {
		return err
	}

	proxies := b.proxies()
	var sections []string
	header := b.header()
	if b.opt.scenario == "perf" || b.opt.scenario == "all" {
		res, err := b.runPerf(ctx, proxies)
		if err != nil {
			return err
		}
		sections = append(sections, b.perfReport(res))
	}
	if b.opt.scenario == "failover" || b.opt.scenario == "all" {
		rows := b.runFailover(ctx, proxies)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sections = append(sections, b.failoverReport(rows))
	}
	if b.opt.scenario == "accesslog" || b.opt.scenario == "all" {
		res, err := b.runAccessLog(ctx, proxies)
		if err != nil {
			return err
		}
		sections = append(sections, b.accessLogReport(res))
	}
	if b.opt.scenario == "console" || b.opt.scenario == "all" {
		res, err := b.runConsole(ctx, proxies)
		if err != nil {
			return err
		}
		sections = append(sections, b.consoleReport(res))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	md := header + strings.Join(sections, "\n")
	out, err := harness.WriteReport(b.out, b.here, b.outPath(), b.opt.quick, md)
	if err != nil {
		return err
	}
	harness.Logf("wrote %s (raw output in %s)", out, b.rawDir)
	return nil
}

func (b *bench) outPath() string {
	if b.opt.out != "" {
		return b.opt.out
	}
	name := "latest.md"
	switch b.opt.scenario {
	case "failover":
		name = "failover.md"
	case "console":
		name = "console.md"
	case "accesslog":
		name = "accesslog.md"
	}
	if b.opt.quick {
		name = strings.TrimSuffix(name, ".md") + "-quick.md"
	}
	return filepath.Join(b.here, "results", name)
}

// proxies returns the proxies among the targets, in target order (Caddy
// only when it is installed).
func (b *bench) proxies() []*proxy {
	var out []*proxy
	for _, t := range b.opt.targets {
		switch t {
		case "haven":
			out = append(out, havenProxy("haven", havenAddr, havenAdmin))
		case "haven-epoll":
			// TCP mode on the epoll loops instead of io_uring, for an A/B
			// in one run.
			out = append(out, havenProxy("haven-epoll", havenEpollAddr, havenEpollAdmin, "HAVEN_TCP_RELAY=epoll"))
		case "haproxy":
			out = append(out, haproxyProxy())
		case "nginx":
			out = append(out, nginxProxy())
		case "caddy":
			if b.caddyNote == "" {
				out = append(out, caddyProxy())
			}
		}
	}
	return out
}

// checkPorts fails if anything already listens where the benchmark will.
func (b *bench) checkPorts() error {
	addrs := append([]string{havenAddr, havenAdmin, havenEpollAddr, havenEpollAdmin, haproxyAddr, nginxAddr, caddyAddr, caddyAdmin}, backendAddrs...)
	var busy []string
	for _, a := range addrs {
		if !portFree(a) {
			busy = append(busy, a)
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("already in use (another benchmark or agent running?): %s", strings.Join(busy, ", "))
	}
	return nil
}

// pinSelf restricts every thread of this process to cpu; threads created
// later inherit the mask, and so do child processes. Two passes catch a
// thread created during the first.
func pinSelf(cpu int) error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("needs at least 2 CPUs, have %d", runtime.NumCPU())
	}
	var mask [16]uint64 // 1024 CPUs
	mask[cpu/64] = 1 << (cpu % 64)
	for range 2 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, e := range ents {
			var tid int
			if _, err := fmt.Sscan(e.Name(), &tid); err != nil {
				continue
			}
			_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), uintptr(len(mask)*8), uintptr(unsafe.Pointer(&mask[0])))
			if errno != 0 && errno != syscall.ESRCH {
				return errno
			}
		}
	}
	runtime.GOMAXPROCS(1)
	return nil
}

// raiseNoFile raises the soft limit on open files to the hard limit. Setting
// it explicitly (rather than relying on Go's own raise) makes children
// inherit it.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	want := lim
	want.Max = max(want.Max, 65536)
	want.Cur = want.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// noFile returns the soft limit on open files.
func noFile() uint64 {
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}
