package lb

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/demoapp"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/testenv"
)

// The test binary doubles as a demo backend process, so that tests can
// kill -9 a real server: see startBackend.
func TestMain(m *testing.M) {
	if addr := os.Getenv("HAVEN_TEST_BACKEND"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		demoapp.New(os.Getenv("HAVEN_TEST_BACKEND_NAME")).Serve(context.Background(), ln, slog.Default())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a demo backend running as a separate process.
type proc struct {
	name, addr string
	cmd        *exec.Cmd
	done       chan struct{}
}

func startBackend(t *testing.T, name string) *proc {
	t.Helper()
	p := &proc{name: name, addr: freeAddr(t)}
	p.start(t)
	t.Cleanup(p.kill)
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), "HAVEN_TEST_BACKEND="+p.addr, "HAVEN_TEST_BACKEND_NAME="+p.name)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = os.Stderr
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start backend %s: %v", p.name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	testenv.Poll(t, 10*time.Second, "backend "+p.name+" listening", func() (bool, string) {
		c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) setMode(t *testing.T, mode string) {
	t.Helper()
	resp, err := http.Post("http://"+p.addr+"/_demo/mode/"+mode, "", nil)
	if err != nil {
		t.Fatalf("set %s mode %s: %v", p.name, mode, err)
	}
	resp.Body.Close()
}

// freeAddr returns a 127.0.0.1 address free a moment ago, below the
// ephemeral range (testenv.FreePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t, "127.0.0.1")
}

// testLB is a running balancer built from YAML.
type testLB struct {
	*Balancer
	url    string
	addr   string
	events *eventLog
	stop   func() // stops the balancer and waits for Serve to return; the cleanup calls it too
}

// list is what goroutines append to while a test reads it: events,
// failures, requests a backend saw.
type list[T any] struct {
	mu    sync.Mutex
	items []T
}

func (l *list[T]) add(v T) {
	l.mu.Lock()
	l.items = append(l.items, v)
	l.mu.Unlock()
}

// all returns a copy of what was added so far.
func (l *list[T]) all() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

// eventLog records a balancer's health transitions.
type eventLog struct{ list[health.Event] }

// first returns the first event for target to state at or after t.
func (l *eventLog) first(target string, to health.State, after time.Time) (health.Event, bool) {
	for _, ev := range l.all() {
		if ev.Target == target && ev.To == to && !ev.At.Before(after) {
			return ev, true
		}
	}
	return health.Event{}, false
}

// balancerYAML renders a one-balancer haven.yaml; body is the balancer's
// settings (indented by 4), checks the checks section (indented by 2).
func balancerYAML(listen string, body, checks string, backends ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: test\nregions:\n  r:\n    nodes:\n      n1: {address: 127.0.0.1, admin: \"127.0.0.1:1\"}\n")
	if checks != "" {
		b.WriteString("checks:\n" + checks)
	}
	fmt.Fprintf(&b, "balancers:\n  web:\n    nodes: [n1]\n    listen: %q\n%s    backends:\n", listen, body)
	for i, a := range backends {
		fmt.Fprintf(&b, "      - {name: b%d, address: %q}\n", i+1, a)
	}
	return b.String()
}

func parseBalancer(t *testing.T, yml string) (*config.Balancer, *config.Check) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yml))
	if err != nil {
		t.Fatalf("config:\n%s\n%v", yml, err)
	}
	bc := cfg.Balancers["web"]
	check, _ := cfg.Check(bc.Check)
	return bc, check
}

// startLB starts a balancer on a free loopback port; body and checks are as
// for balancerYAML.
func startLB(t *testing.T, body, checks string, backends ...string) *testLB {
	t.Helper()
	return startLBOpts(t, Options{}, body, checks, backends...)
}

// startLBOpts is startLB with options (metrics, say); Logger and
// OnTransition are filled in.
func startLBOpts(t *testing.T, opt Options, body, checks string, backends ...string) *testLB {
	t.Helper()
	ln, err := Listen("127.0.0.1:0") // as the agent binds it
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	bc, check := parseBalancer(t, balancerYAML(addr, body, checks, backends...))
	evs := &eventLog{}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	opt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opt.OnTransition = evs.add
	b, err := New(bc, check, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("balancer stopped with: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	tl := &testLB{Balancer: b, url: "http://" + addr, addr: addr, events: evs, stop: stop}
	testenv.Poll(t, 10*time.Second, "balancer ready", func() (bool, string) {
		if err := b.Ready(); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	return tl
}

// reload applies a new balancer body to a running test balancer.
func (tl *testLB) reload(t *testing.T, body, checks string, backends ...string) {
	t.Helper()
	bc, check := parseBalancer(t, balancerYAML(tl.addr, body, checks, backends...))
	if err := tl.Reload(bc, check); err != nil {
		t.Fatalf("reload: %v", err)
	}
}

// loadGen is a bounded closed-loop HTTP client. Every request that does not
// end in the expected status is a failure, with its error kept.
type loadGen struct {
	url    string
	ok     atomic.Int64
	fails  list[string]
	mu     sync.Mutex
	served map[string][]time.Time // backend -> response times
}

func newLoadGen(url string) *loadGen {
	return &loadGen{url: url, served: map[string][]time.Time{}}
}

// run sends requests from workers until ctx ends or max requests were sent.
func (g *loadGen) run(ctx context.Context, workers, max int) {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && sent.Add(1) <= int64(max) {
				g.one(ctx, client)
			}
		}()
	}
	wg.Wait()
}

func (g *loadGen) one(ctx context.Context, client *http.Client) {
	req, _ := http.NewRequestWithContext(ctx, "GET", g.url, nil)
	resp, err := client.Do(req)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		g.fails.add(err.Error())
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		g.fails.add("body: " + err.Error())
		return
	}
	if resp.StatusCode != 200 {
		g.fails.add(resp.Status + " " + resp.Header.Get("X-Backend"))
		return
	}
	g.ok.Add(1)
	g.mu.Lock()
	b := resp.Header.Get("X-Backend")
	g.served[b] = append(g.served[b], time.Now())
	g.mu.Unlock()
}

func (g *loadGen) count(backend string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.served[backend])
}

// background runs the generator until the returned stop is called.
func (g *loadGen) background(workers, max int) (stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	done := make(chan struct{})
	go func() { g.run(ctx, workers, max); close(done) }()
	return func() { cancel(); <-done }
}

// waitServed waits until the generator has n more successes.
func (g *loadGen) waitServed(t *testing.T, n int64) {
	t.Helper()
	target := g.ok.Load() + n
	testenv.Poll(t, 30*time.Second, fmt.Sprintf("%d more successful requests", n), func() (bool, string) {
		return g.ok.Load() >= target, fmt.Sprintf("ok=%d failures=%v", g.ok.Load(), g.fails.all())
	})
}

// tcpBackend serves each connection to a loopback listener with handle (in
// its own goroutine, the connection closed after) until the test ends, and
// returns the listener's address.
func tcpBackend(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	return tcpBackendAt(t, "127.0.0.1:0", handle)
}

// tcpBackendAt is tcpBackend listening on addr.
func tcpBackendAt(t testing.TB, addr string, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
