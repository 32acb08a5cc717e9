package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// perfResult is what one dnsperf run reports.
type perfResult struct {
	Sent, Completed, Lost int
	QPS                   float64
	AvgLatency            time.Duration
	Rcodes                string // "NOERROR 241016 (100.00%)"
	Err                   string `json:",omitempty"`
}

// parsePerf reads dnsperf's statistics.
func parsePerf(out string) (perfResult, error) {
	var r perfResult
	var haveQPS, haveSent bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		first, _, _ := strings.Cut(v, " ")
		var err error
		switch strings.TrimSpace(k) {
		case "Queries sent":
			r.Sent, err = strconv.Atoi(first)
			haveSent = err == nil
		case "Queries completed":
			r.Completed, err = strconv.Atoi(first)
		case "Queries lost":
			r.Lost, err = strconv.Atoi(first)
		case "Response codes":
			r.Rcodes = v
		case "Queries per second":
			r.QPS, err = strconv.ParseFloat(first, 64)
			haveQPS = err == nil
		case "Average Latency (s)":
			var s float64
			s, err = strconv.ParseFloat(first, 64)
			r.AvgLatency = time.Duration(s * float64(time.Second))
		}
		if err != nil {
			return perfResult{}, fmt.Errorf("dnsperf output: %s: %q: %w", strings.TrimSpace(k), v, err)
		}
	}
	if !haveSent || !haveQPS {
		return perfResult{}, fmt.Errorf("dnsperf output has no statistics: %s", harness.LastLines(out, 3))
	}
	return r, nil
}

// lostPct is the share of queries dnsperf saw no answer to.
func (r perfResult) lostPct() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Lost) / float64(r.Sent)
}

// dnsperf runs dnsperf on CPU 1 against port for the bench's duration,
// asking name over and over, and keeps its output in the raw directory.
func (b *bench) dnsperf(ctx context.Context, c cell, port, run int) perfResult {
	qfile := filepath.Join(b.dir, c.name+".queries")
	if err := os.WriteFile(qfile, []byte(c.qname+"."+zone+" A\n"), 0o644); err != nil {
		return perfResult{Err: err.Error()}
	}
	argv := dnsperfArgs(port, qfile, b.opt.duration, c.ecs, c.edns)
	out, err := harness.Run(ctx, b.opt.duration+30*time.Second, nil, argv...)
	_ = os.WriteFile(filepath.Join(b.rawDir, fmt.Sprintf("%s-r%d.txt", c.name, run)), []byte(strings.Join(argv, " ")+"\n\n"+out), 0o644)
	if err != nil {
		return perfResult{Err: err.Error()}
	}
	r, err := parsePerf(out)
	if err != nil {
		return perfResult{Err: err.Error()}
	}
	return r
}

// dnsperfArgs is the dnsperf command line: one client, 100 queries in
// flight, on CPU 1; with ECS (-E, which sends an OPT record with the
// option) or with EDNS alone (-e: an OPT record without options).
func dnsperfArgs(port int, qfile string, d time.Duration, ecs, edns bool) []string {
	argv := []string{"taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(port), "-d", qfile,
		"-l", strconv.FormatFloat(d.Seconds(), 'f', -1, 64), "-c", "1", "-T", "1", "-q", "100", "-t", "1"}
	if ecs {
		argv = append(argv, "-E", ecsOption)
	} else if edns {
		argv = append(argv, "-e")
	}
	return argv
}

// query asks the server at port for name's A records, with ECS 10.0.0.0/24
// when ecs is set, and returns the answer.
func query(ctx context.Context, port int, name string, ecs bool) (*dns.Msg, error) {
	return queryEDNS(ctx, port, name, ecs, false)
}

// queryEDNS is query with an OPT record without options when edns is set.
func queryEDNS(ctx context.Context, port int, name string, ecs, edns bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name+"."+zone, dns.TypeA)
	m.RecursionDesired = false
	if ecs || edns {
		m.SetEdns0(1232, false)
	}
	if ecs {
		o := m.IsEdns0()
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 0, 0, 0).To4()})
	}
	cl := &dns.Client{Timeout: 500 * time.Millisecond}
	r, _, err := cl.ExchangeContext(ctx, m, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	return r, err
}

// addrs are the addresses of r's A records.
func addrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// checkAnswer asks the cell's question once and says what is wrong with
// the answer: not NOERROR, not authoritative, no A record, (with ECS) no
// ECS option in the reply, or (with EDNS) no OPT record in it.
func checkAnswer(ctx context.Context, port int, c cell) error {
	r, err := queryEDNS(ctx, port, c.qname, c.ecs, c.edns)
	if err != nil {
		return fmt.Errorf("%s: %w", c.qname, err)
	}
	switch {
	case r.Rcode != dns.RcodeSuccess:
		return fmt.Errorf("%s: %s", c.qname, dns.RcodeToString[r.Rcode])
	case !r.Authoritative:
		return fmt.Errorf("%s: no aa flag", c.qname)
	case len(addrs(r)) == 0:
		return fmt.Errorf("%s: no A record in %v", c.qname, r.Answer)
	}
	if c.ecs {
		o := r.IsEdns0()
		if o == nil || !slices.ContainsFunc(o.Option, func(e dns.EDNS0) bool { return e.Option() == dns.EDNS0SUBNET }) {
			return fmt.Errorf("%s: no ECS option in the reply", c.qname)
		}
	}
	if c.edns && r.IsEdns0() == nil {
		return fmt.Errorf("%s: no OPT record in the reply", c.qname)
	}
	return nil
}

// waitAnswering polls the server at port until it answers static's A
// record, for at most timeout.
func waitAnswering(ctx context.Context, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = checkAnswer(ctx, port, cell{qname: "static"}); last == nil {
			return nil
		}
		if !harness.Sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("not answering after %s: %v", timeout, last)
}

// backend is a target's HTTP listener in the harness: 200 "ok" on
// /healthz, and a TCP port for PowerDNS's ifportup.
type backend struct {
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

// up starts listening; it is a no-op when already up.
func (be *backend) up() error {
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", be.addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", be.addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	be.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = be.srv.Serve(ln) }()
	return nil
}

// down closes the listener and every connection: a dead target, whose
// port refuses connections.
func (be *backend) down() {
	be.mu.Lock()
	defer be.mu.Unlock()
	if be.srv != nil {
		_ = be.srv.Close()
		be.srv = nil
	}
}

// changeWindow bounds how long a change run watches for the answer to
// change; stableFor is how long the dead target must have been absent
// from a server's answers for its change to count as done.
const (
	changeWindow = 20 * time.Second
	stableFor    = 3 * time.Second
	pollEvery    = 10 * time.Millisecond
)

// sample is one poll of a server during a change run: when it was sent
// and whether the answer held the dead target.
type sample struct {
	At   time.Duration // since the kill
	Dead bool          // the answer held the dead target (or no answer)
}

// changeTime is when the answer stopped holding the dead target for good:
// the send time of the first sample of the last run of samples without
// it, if that run lasts stableFor; otherwise -1.
func changeTime(s []sample) time.Duration {
	i := len(s)
	for i > 0 && !s[i-1].Dead {
		i--
	}
	if i == len(s) || s[len(s)-1].At-s[i].At < stableFor {
		return -1
	}
	return s[i].At
}

// waitPrimary polls until every server's answers hold the primary target
// again (within the last 50 polls), or timeout.
func waitPrimary(ctx context.Context, ports []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	seen := map[int]bool{}
	for time.Now().Before(deadline) {
		for _, p := range ports {
			if seen[p] {
				continue
			}
			if r, err := query(ctx, p, "www", false); err == nil && slices.Contains(addrs(r), primaryIP) {
				seen[p] = true
			}
		}
		if len(seen) == len(ports) {
			return nil
		}
		if !harness.Sleep(ctx, pollEvery) {
			return ctx.Err()
		}
	}
	var missing []string
	for _, p := range ports {
		if !seen[p] {
			missing = append(missing, strconv.Itoa(p))
		}
	}
	return fmt.Errorf("the servers on ports %s did not answer %s within %s", strings.Join(missing, ", "), primaryIP, timeout)
}

// changeRun kills the primary target at a random moment and measures, on
// every server at once, how long until its answers for www stop holding
// the dead target. The primary is up again when it returns.
func (b *bench) changeRun(ctx context.Context, servers []string) (map[string]time.Duration, error) {
	var ports []int
	for _, s := range servers {
		ports = append(ports, b.ports.dns[s])
	}
	if err := b.primary.up(); err != nil {
		return nil, err
	}
	// Up again for everyone, then some more so that every checker has
	// seen it up more than once.
	if err := waitPrimary(ctx, ports, 30*time.Second); err != nil {
		return nil, err
	}
	if !harness.Sleep(ctx, 6*time.Second+rand.N(time.Second)) {
		return nil, ctx.Err()
	}
	if err := waitPrimary(ctx, ports, 5*time.Second); err != nil {
		return nil, err
	}
	b.primary.down()
	killed := time.Now()
	defer func() { _ = b.primary.up() }()
	samples := make([][]sample, len(servers))
	var wg sync.WaitGroup
	for i, p := range ports {
		wg.Go(func() {
			for n := 0; n < int(changeWindow/pollEvery); n++ {
				at := time.Since(killed)
				if at > changeWindow {
					return
				}
				r, err := query(ctx, p, "www", false)
				dead := err != nil || slices.Contains(addrs(r), primaryIP)
				samples[i] = append(samples[i], sample{At: at, Dead: dead})
				if t := changeTime(samples[i]); t >= 0 {
					return
				}
				if !harness.Sleep(ctx, pollEvery) {
					return
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	out := map[string]time.Duration{}
	for i, s := range servers {
		out[s] = changeTime(samples[i])
	}
	return out, nil
}

var errNoServer = errors.New("not started")
