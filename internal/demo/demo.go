// Package demo runs haven's demonstration: three demo web servers behind a
// haven balancer on loopback, steady traffic, one server killed and brought
// back, and a report of what the clients saw and when haven noticed.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/health"
)

// Options configure a demo run.
type Options struct {
	Out      io.Writer
	Logger   *slog.Logger
	Duration time.Duration // 0: until ctx ends
	Version  string
	// Phase is how long each act lasts (default 3s).
	Phase time.Duration
	// Floating plays the second act (a floating address in network
	// namespaces) when the machine allows it; see CanRunFloating.
	Floating bool
	// Database plays the third act (the application's data in a
	// PostgreSQL cluster, its primary killed) when the machine allows it;
	// see CanRunDatabase.
	Database bool
	// Traffic plays the fourth act (two regions and the DNS traffic
	// manager) when the machine allows it; see CanRunFloating.
	Traffic bool
	// Region plays the fifth act (the database across two regions, region
	// east lost) when the machine allows it; see CanRunRegion.
	Region bool
	// Volume plays the sixth act (the application's files on a
	// replicated volume, an application node killed) when the machine
	// allows it; see CanRunVolume.
	Volume bool
	// Engine is the third act's database: "postgres" (the default) or
	// "galera" (MariaDB Galera; see CanRunGalera). The fifth act needs
	// PostgreSQL, and is skipped with Galera.
	Engine string
}

// Result summarises the traffic the demo sent.
type Result struct {
	Sent, Failed int64
	ByBackend    map[string]int64
	Detected     time.Duration // from the kill to the down event
	Returned     time.Duration // from the restart to the up event
	// Floating is the second act's result; nil when it did not run.
	Floating *FloatingResult
	// Database is the third act's; nil when it did not run.
	Database *DatabaseResult
	// Galera is the third act's with engine galera; nil when it did not
	// run.
	Galera *GaleraResult
	// Traffic is the fourth act's; nil when it did not run.
	Traffic *TrafficResult
	// Region is the fifth act's; nil when it did not run.
	Region *RegionResult
	// Volume is the sixth act's; nil when it did not run.
	Volume *VolumeResult
	// Verdicts are the acts judged as drills, against the warm standby's
	// objectives.
	Verdicts []ActVerdict
	// outage is act 1's: from the first to the last failed request.
	outage time.Duration
}

type backendProc struct {
	name, addr string
	cmd        *exec.Cmd
	done       chan struct{}
}

// Run runs the demo and returns its result once the timeline has played
// and Duration has passed (or ctx ended).
func Run(ctx context.Context, opt Options) error {
	_, err := RunResult(ctx, opt)
	return err
}

// RunResult is Run returning the measured result, for tests.
func RunResult(ctx context.Context, opt Options) (*Result, error) {
	opt = opt.defaults()
	var stopAt <-chan time.Time
	if opt.Duration > 0 {
		t := time.NewTimer(opt.Duration)
		defer t.Stop()
		stopAt = t.C
	}
	dir, err := os.MkdirTemp("", "haven-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	lbAddr, adminAddr := ports[0], ports[1]
	var backends []*backendProc
	defer func() {
		for _, b := range backends {
			b.kill()
		}
	}()
	for i, p := range ports[2:] {
		b := &backendProc{name: fmt.Sprintf("web%d", i+1), addr: p}
		if err := b.start(); err != nil {
			return nil, err
		}
		backends = append(backends, b)
	}
	cfgPath := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(cfgPath, []byte(demoConfig(lbAddr, adminAddr, backends)), 0o644); err != nil {
		return nil, err
	}
	w := opt.Out
	fmt.Fprintf(w, "haven demo %s: three demo web servers behind a haven balancer on loopback\n", opt.Version)
	fmt.Fprintf(w, "  config   %s\n  balancer http://%s/\n  status   http://%s/api/v1/status\n  metrics  http://%s/metrics\n",
		cfgPath, lbAddr, adminAddr, adminAddr)
	for _, b := range backends {
		fmt.Fprintf(w, "  backend  %s at %s (pid %d)\n", b.name, b.addr, b.cmd.Process.Pid)
	}
	a, err := agent.New(agent.Options{ConfigPath: cfgPath, Node: "demo", Logger: opt.Logger, Version: opt.Version})
	if err != nil {
		return nil, err
	}
	agentCtx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()
	if err := waitReady(ctx, adminAddr); err != nil {
		return nil, err
	}

	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	ld := newLoad("http://" + lbAddr + "/counter")
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { ld.run(loadCtx, 4); close(loadDone) }()

	victim := backends[1]
	res := &Result{}
	step := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	fmt.Fprintf(w, "\n%s  sending traffic: 4 clients, keep-alive, GET /counter\n", since(time.Now()))
	ok := step(opt.Phase)
	var killedAt, restartedAt time.Time
	if ok {
		killedAt = time.Now()
		victim.kill()
		fmt.Fprintf(w, "%s  kill -9 %s (pid %d)\n", since(killedAt), victim.name, victim.cmd.Process.Pid)
		ok = step(opt.Phase + time.Second)
	}
	if ok {
		restartedAt = time.Now()
		if err := victim.start(); err != nil {
			fmt.Fprintf(w, "%s  could not restart %s: %v\n", since(restartedAt), victim.name, err)
		} else {
			fmt.Fprintf(w, "%s  %s restarted (pid %d)\n", since(restartedAt), victim.name, victim.cmd.Process.Pid)
		}
		ok = step(opt.Phase + time.Second)
	}
	stopLoad()
	<-loadDone

	fmt.Fprintln(w, "\nwhat haven saw:")
	for _, ev := range a.Events() {
		if ev.Target != victim.addr {
			continue
		}
		switch {
		case ev.To == health.Down && !killedAt.IsZero() && ev.At.After(killedAt) && res.Detected == 0:
			res.Detected = ev.At.Sub(killedAt)
			fmt.Fprintf(w, "%s  marked %s down, %.3fs after the kill: %s\n", since(ev.At), victim.name, res.Detected.Seconds(), ev.Reason)
		case ev.To == health.Up && !restartedAt.IsZero() && ev.At.After(restartedAt) && res.Returned == 0:
			res.Returned = ev.At.Sub(restartedAt)
			fmt.Fprintf(w, "%s  marked %s up again, %.3fs after the restart (%s); traffic moved back\n", since(ev.At), victim.name, res.Returned.Seconds(), ev.Reason)
		}
	}
	if first := ld.firstServedAfter(victim.name, restartedAt); !first.IsZero() {
		fmt.Fprintf(w, "%s  first request served by %s again\n", since(first), victim.name)
	}
	res.Sent, res.Failed, res.ByBackend = ld.sent.Load(), ld.failed.Load(), ld.byBackend()
	if first, last := ld.failureWindow(); !first.IsZero() {
		res.outage = last.Sub(first)
	}
	fmt.Fprintf(w, "\nrequests sent %d, failed %d\n", res.Sent, res.Failed)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "backend\tserved\tbefore kill\twhile down\tafter restart")
	phases := ld.phases(killedAt, restartedAt)
	for _, b := range backends {
		p := phases[b.name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", b.name, res.ByBackend[b.name], p[0], p[1], p[2])
	}
	tw.Flush()
	if errs := ld.errors(); len(errs) > 0 {
		fmt.Fprintf(w, "errors seen: %s\n", strings.Join(errs, "; "))
	}
	if !ok {
		return res, nil
	}
	if res.Floating, err = playAct(ctx, opt, opt.Floating, "act 2 (a floating address across two balancer nodes)", CanRunFloating, RunFloating); err != nil {
		return res, err
	}
	if opt.Engine == "galera" {
		if res.Galera, err = playAct(ctx, opt, opt.Database, "act 3 (the application's data in a MariaDB Galera cluster)", CanRunGalera, RunGalera); err != nil {
			return res, err
		}
	} else if res.Database, err = playAct(ctx, opt, opt.Database, "act 3 (the application's data in a PostgreSQL cluster)", CanRunDatabase, RunDatabase); err != nil {
		return res, err
	}
	if res.Traffic, err = playAct(ctx, opt, opt.Traffic, "act 4 (two regions and the DNS traffic manager)", CanRunFloating, RunTraffic); err != nil {
		return res, err
	}
	canRunRegion := CanRunRegion
	if opt.Engine == "galera" {
		canRunRegion = func() error {
			return errors.New("the second region runs PostgreSQL only (haven's cross-region standby, backups and restores are PostgreSQL's)")
		}
	}
	if res.Region, err = playAct(ctx, opt, opt.Region, "act 5 (a second region: region east is lost)", canRunRegion, RunRegion); err != nil {
		return res, err
	}
	if res.Volume, err = playAct(ctx, opt, opt.Volume, "act 6 (the application's files on a replicated volume)", CanRunVolume, RunVolume); err != nil {
		return res, err
	}
	res.Verdicts = res.verdicts()
	printVerdicts(w, res.Verdicts)
	fmt.Fprintf(w, "\nhaven keeps running: status at http://%s/api/v1/status, balancer at http://%s/\n", adminAddr, lbAddr)
	if stopAt == nil {
		fmt.Fprintln(w, "press Ctrl-C to stop")
	}
	select {
	case <-ctx.Done():
	case <-stopAt:
	}
	return res, nil
}

func demoConfig(lbAddr, adminAddr string, backends []*backendProc) string {
	var b strings.Builder
	fmt.Fprintf(&b, `cluster: demo
regions:
  local:
    nodes:
      demo: {address: 127.0.0.1, zone: a, admin: "%s"}
checks:
  web:
    http: {path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 500ms
    timeout: 250ms
    rise: 2
    fall: 2
balancers:
  web:
    nodes: [demo]
    listen: "%s"
    mode: http
    algorithm: roundrobin
    check: web
    slow_start: 2s
    timeouts: {server: 2s}
    backends:
`, adminAddr, lbAddr)
	for _, be := range backends {
		fmt.Fprintf(&b, "      - {name: %s, address: %s}\n", be.name, be.addr)
	}
	return b.String()
}

func (b *backendProc) start() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find the haven binary: %w", err)
	}
	b.cmd = exec.Command(exe, "backend", "--listen", b.addr, "--name", b.name)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b.done = make(chan struct{})
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("demo: start backend %s: %w", b.name, err)
	}
	go func() { b.cmd.Wait(); close(b.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-b.done:
			return fmt.Errorf("demo: backend %s exited at start", b.name)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("demo: backend %s did not listen on %s within 10s", b.name, b.addr)
}

func (b *backendProc) kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	<-b.done
}

func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("demo: find a free port: %w", err)
		}
		lns = append(lns, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func waitReady(ctx context.Context, admin string) error {
	deadline := time.Now().Add(15 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = strings.TrimSpace(string(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("demo: haven did not become ready within 15s: %s", last)
}

// load is a bounded closed-loop HTTP client that records who served what.
type load struct {
	url          string
	dial         func(ctx context.Context, network, addr string) (net.Conn, error) // nil: the default
	failedAt     []time.Time
	sent, failed atomic.Int64
	mu           sync.Mutex
	served       []served
	errs         map[string]int
}

type served struct {
	at      time.Time
	backend string
}

func newLoad(url string) *load { return &load{url: url, errs: map[string]int{}} }

func (l *load) run(ctx context.Context, workers int) {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DialContext: l.dial}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded: at most 20000 requests per worker, and pacing of 2ms.
			for i := 0; i < 20000 && ctx.Err() == nil; i++ {
				l.one(ctx, client)
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
}

func (l *load) one(ctx context.Context, client *http.Client) {
	req, _ := http.NewRequestWithContext(ctx, "GET", l.url, nil)
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return // the demo is ending: not a failure
	}
	l.sent.Add(1)
	if err != nil {
		l.fail(err.Error())
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		l.fail(resp.Status)
		return
	}
	l.mu.Lock()
	l.served = append(l.served, served{time.Now(), resp.Header.Get("X-Backend")})
	l.mu.Unlock()
}

func (l *load) fail(why string) {
	l.failed.Add(1)
	l.mu.Lock()
	l.failedAt = append(l.failedAt, time.Now())
	l.errs[why]++
	l.mu.Unlock()
}

// failureWindow returns the times of the first and last failed request.
func (l *load) failureWindow() (first, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failedAt) == 0 {
		return
	}
	return l.failedAt[0], l.failedAt[len(l.failedAt)-1]
}

func (l *load) byBackend() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int64{}
	for _, s := range l.served {
		m[s.backend]++
	}
	return m
}

// phases counts responses per backend before the kill, between kill and
// restart, and after the restart.
func (l *load) phases(kill, restart time.Time) map[string][3]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string][3]int64{}
	for _, s := range l.served {
		p := m[s.backend]
		switch {
		case kill.IsZero() || s.at.Before(kill):
			p[0]++
		case restart.IsZero() || s.at.Before(restart):
			p[1]++
		default:
			p[2]++
		}
		m[s.backend] = p
	}
	return m
}

func (l *load) firstServedAfter(backend string, t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.served {
		if s.backend == backend && s.at.After(t) {
			return s.at
		}
	}
	return time.Time{}
}

func (l *load) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, v := range l.errs {
		out = append(out, fmt.Sprintf("%dx %s", v, k))
	}
	sort.Strings(out)
	return slices.Compact(out)
}

var _ = errors.New
