// Package lb is haven's load balancer: HTTP (HTTP/1.1 fast path, HTTP/2
// over TLS, upgrades) and TCP proxying to health-checked backends, with
// weighted algorithms, sticky sessions, redispatch and retries, slow start,
// connection caps with a bounded queue, draining and live reconfiguration.
package lb

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb/balance"
)

// Options are what a Balancer needs besides its configuration.
type Options struct {
	Logger        *slog.Logger
	Metrics       *Metrics        // shared by the process's balancers; nil: none
	HealthMetrics *health.Metrics // nil: none
	Clock         clock.Clock     // nil: the real clock
	// OnTransition, if set, is called for every backend health transition.
	OnTransition func(health.Event)
}

// settings are the parts of a balancer's configuration that a reload may
// change while connections are open. They are read once per request.
type settings struct {
	cfg            *config.Balancer
	check          *config.Check
	connectTimeout time.Duration
	headerTimeout  time.Duration
	clientTimeout  time.Duration
	serverTimeout  time.Duration
	queueTimeout   time.Duration
	tunnelTimeout  time.Duration
	requestBody    time.Duration // timeouts.request_body (0: no bound)
	maxHeader      int
	maxHeaders     int
	maxBody        int64
	queueSize      int
	retries        int
	retryMethods   []string
	stickyCookie   string
	proxyProtocol  int
	// acceptProxy are the sources whose connections begin with a PROXY
	// header; nil: the listener reads none.
	acceptProxy []netip.Prefix
	slowStart   time.Duration
	passive     health.PassiveSpec
	// shutdownSessions closes a TCP backend's connections when it goes
	// down or leaves the pool.
	shutdownSessions bool
	// hold is how long a TCP connection waits for a usable backend (0:
	// closed at once); at most queueSize connections wait.
	hold time.Duration
}

func newSettings(c *config.Balancer, check *config.Check) *settings {
	s := &settings{
		cfg:              c,
		check:            check,
		connectTimeout:   c.Timeouts.Connect.D(),
		headerTimeout:    c.Timeouts.ClientHeader.D(),
		clientTimeout:    c.Timeouts.Client.D(),
		serverTimeout:    c.Timeouts.Server.D(),
		queueTimeout:     c.Timeouts.Queue.D(),
		tunnelTimeout:    c.Timeouts.Tunnel.D(),
		requestBody:      c.Timeouts.RequestBody.D(),
		maxHeader:        int(c.Limits.MaxHeaderBytes),
		maxHeaders:       c.Limits.MaxHeaders,
		maxBody:          int64(c.Limits.MaxBodyBytes),
		queueSize:        c.Limits.QueueSize,
		retries:          c.RetryCount(),
		retryMethods:     c.Retries.Methods,
		slowStart:        c.SlowStart.D(),
		shutdownSessions: c.ShutdownSessions,
		passive: health.PassiveSpec{
			ConsecutiveFailures: derefInt(c.Passive.ConsecutiveFailures, 5),
			EjectFor:            c.Passive.EjectFor.D(),
		},
	}
	if c.Sticky != nil {
		s.stickyCookie = c.Sticky.Cookie
	}
	if c.Mode == "tcp" {
		s.hold = c.Hold.D()
	}
	for _, f := range c.AcceptProxyFrom {
		if p, err := config.ParseSource(f); err == nil { // validated
			s.acceptProxy = append(s.acceptProxy, p)
		}
	}
	switch c.ProxyProtocol {
	case "v1":
		s.proxyProtocol = 1
	case "v2":
		s.proxyProtocol = 2
	}
	return s
}

func derefInt(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// retriable reports whether a request with this method may be sent again
// after it may already have reached a backend.
func (s *settings) retriable(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS":
		return true
	}
	for _, m := range s.retryMethods {
		if m == string(method) {
			return true
		}
	}
	return false
}

// Balancer is one load-balanced service: a listener and its backends.
type Balancer struct {
	name string
	mode string
	addr string
	log  *slog.Logger
	opt  Options
	clk  clock.Clock
	algo balance.Algorithm

	settings atomic.Pointer[settings]
	pool     atomic.Pointer[pool]
	group    *health.Group
	tls      *certReloader // nil: plain text
	h2       *h2Servers    // with tls

	mu       sync.Mutex // guards what follows
	runCtx   context.Context
	monitors map[*backend]context.CancelFunc
	conns    map[*clientConn]struct{}
	ln       net.Listener
	loops    *httpLoops     // nil: connections are accepted and served by goroutines
	aborting bool           // the shutdown's grace is over: connections are closed as they come
	wg       sync.WaitGroup // connection goroutines, and the event loops

	listening atomic.Bool
	lameduck  atomic.Bool
	closing   atomic.Bool

	queued    atomic.Int64
	slotFreed chan struct{}
	holds     *holder
	clients   atomic.Int64
	accepted  atomic.Uint64
	// proxyRefused counts connections refused for want of a trusted
	// PROXY header, by reason.
	proxyRefused [proxyReasons]atomic.Uint64
	local        [len(localStatuses)]atomic.Uint64
	duration     interface{ Observe(float64) }
	queueTime    interface{ Observe(float64) }
	// alog is the open access log; nil: off. Serve opens it, Reload
	// reopens it (logrotate), the end of Serve closes it.
	alog atomic.Pointer[accessLog]
}

// New builds a balancer from its configuration and its health check (nil
// for none). It has no side effects: Run binds the listener.
func New(c *config.Balancer, check *config.Check, opt Options) (*Balancer, error) {
	algo, err := balance.New(c.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("lb: balancer %s: %w", c.Name, err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = clock.Real
	}
	b := &Balancer{
		name:      c.Name,
		mode:      c.Mode,
		addr:      c.Listen,
		log:       opt.Logger.With("component", "lb", "balancer", c.Name),
		opt:       opt,
		clk:       opt.Clock,
		algo:      algo,
		group:     health.NewGroup(derefInt(c.Passive.MaxEjectedPercent, 50)),
		monitors:  make(map[*backend]context.CancelFunc),
		conns:     make(map[*clientConn]struct{}),
		slotFreed: make(chan struct{}, 64),
		holds:     newHolder(opt.Clock),
	}
	if c.TLS != nil {
		if b.tls, err = newCertReloader(c.TLS.Cert, c.TLS.Key, b.log); err != nil {
			return nil, fmt.Errorf("lb: balancer %s: %w", c.Name, err)
		}
		if b.h2, err = newH2Servers(c.Timeouts.Client.D()); err != nil {
			return nil, fmt.Errorf("lb: balancer %s: http/2: %w", c.Name, err)
		}
	}
	s := newSettings(c, check)
	b.settings.Store(s)
	bs := make([]*backend, 0, len(c.Backends))
	for _, bc := range c.Backends {
		nb, err := b.newBackend(bc, s)
		if err != nil {
			return nil, err
		}
		bs = append(bs, nb)
	}
	b.pool.Store(newPool(bs))
	b.duration, b.queueTime = noopObserver{}, noopObserver{}
	if m := opt.Metrics; m != nil {
		// A balancer's mode does not change without a restart.
		b.duration = m.duration.WithLabelValues(c.Name)
		if c.Mode == "tcp" {
			b.duration = m.tcpDuration.WithLabelValues(c.Name)
		}
		b.queueTime = m.queueTime.WithLabelValues(c.Name)
	}
	return b, nil
}

type noopObserver struct{}

func (noopObserver) Observe(float64) {}

// Name returns the balancer's name.
func (lb *Balancer) Name() string { return lb.name }

// SameListener reports whether c can be applied to this balancer by Reload;
// otherwise the balancer must be replaced (a different listen address, mode
// or TLS files).
func (lb *Balancer) SameListener(c *config.Balancer) bool {
	old := lb.settings.Load().cfg
	return c.Listen == old.Listen && c.Mode == old.Mode && c.Algorithm == old.Algorithm &&
		(c.TLS == nil) == (old.TLS == nil) && (c.TLS == nil || *c.TLS == *old.TLS)
}

func (lb *Balancer) newBackend(c *config.Backend, s *settings) (*backend, error) {
	b := &backend{name: c.Name, addr: c.Address, cookie: cookieValue(c.Name), ap: loopAddr(c.Address)}
	b.apply(c, s)
	if s.check != nil {
		prober, err := health.NewProber(s.check)
		if err != nil {
			return nil, fmt.Errorf("lb: balancer %s: backend %s: %w", lb.name, c.Name, err)
		}
		b.mon = lb.newMonitor(b, s, prober)
	} else if s.passive.ConsecutiveFailures > 0 {
		b.mon = lb.newMonitor(b, s, nil)
	}
	return b, nil
}

func (b *backend) apply(c *config.Backend, s *settings) {
	w := 1
	if c.Weight != nil {
		w = *c.Weight
	}
	b.weight.Store(int32(w))
	mc := c.MaxConn
	if mc == 0 {
		mc = s.cfg.Limits.MaxConn
	}
	b.maxConn.Store(int32(mc))
	b.slowStart.Store(int64(s.slowStart))
}

func (lb *Balancer) newMonitor(b *backend, s *settings, prober health.Prober) *health.Monitor {
	checkName := ""
	var spec health.Spec
	if s.check != nil {
		checkName = s.check.Name
		spec = health.SpecFromConfig(s.check)
	}
	return health.NewMonitor(health.Options{
		Check:   checkName,
		Target:  b.addr,
		Spec:    spec,
		Prober:  prober,
		Clock:   lb.clk,
		Logger:  lb.opt.Logger.With("balancer", lb.name, "backend", b.name),
		Metrics: lb.opt.HealthMetrics,
		Group:   lb.group,
		Passive: s.passive,
		OnTransition: func(ev health.Event) {
			if ev.To == health.Up {
				b.upSince.Store(ev.At.UnixNano())
			}
			if ev.To == health.Down {
				lb.cancelDials(b, "marked down")
				if lb.settings.Load().shutdownSessions {
					lb.shutdownSessions(b, "marked down")
				}
			}
			lb.holds.signal()
			if lb.opt.OnTransition != nil {
				lb.opt.OnTransition(ev)
			}
		},
	})
}

// Run binds the listener, starts health checks and serves until ctx ends.
// Then it enters lameduck (not ready, still serving) for the configured
// period, stops accepting, lets in-flight requests finish within the client
// timeout, and closes what remains.
func (lb *Balancer) Run(ctx context.Context) error {
	ln, err := Listen(lb.addr)
	if err != nil {
		return fmt.Errorf("lb: balancer %s: listen %s: %w", lb.name, lb.addr, err)
	}
	return lb.Serve(ctx, ln)
}

// Listen binds a balancer's listener. TCP keepalive is off on accepted
// connections: haven closes idle clients by its own timeouts, and Go's
// default would cost three or four setsockopt calls per connection.
// IP_FREEBIND lets a balancer listen on its floating address while another
// node holds it (keepalived setups need net.ipv4.ip_nonlocal_bind for that).
// Plain TCP, as HAProxy and nginx listen: Go's listeners take MPTCP where
// the kernel has it, and an MPTCP socket refuses some TCP options
// (TCP_QUICKACK, which the event loops set).
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: freebind}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

func freebind(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	})
	return errors.Join(err, serr)
}

// dialer returns the dialer for backend connections (no TCP keepalive:
// pooled connections are closed by the idle timeout).
func dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: -1}
}

// Serve is Run on a listener the caller bound (with Listen).
func (lb *Balancer) Serve(ctx context.Context, ln net.Listener) error {
	if c := lb.settings.Load().cfg.AccessLog; c != nil {
		l, err := openAccessLog(c)
		if err != nil {
			ln.Close()
			return fmt.Errorf("lb: balancer %s: %w", lb.name, err)
		}
		lb.alog.Store(l)
	}
	defer func() { lb.alog.Swap(nil).close() }()
	monCtx, stopMonitors := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMonitors()
	lb.mu.Lock()
	lb.ln = ln
	lb.runCtx = monCtx
	for _, b := range lb.pool.Load().backends {
		lb.startMonitorLocked(b)
	}
	lb.mu.Unlock()
	if lb.opt.Metrics != nil {
		lb.opt.Metrics.add(lb)
		defer lb.opt.Metrics.remove(lb)
	}
	acceptDone := make(chan error, 1)
	if loops := lb.startLoops(ln); loops != nil {
		lb.mu.Lock()
		lb.loops = loops
		lb.mu.Unlock()
	} else {
		go func() { acceptDone <- lb.acceptLoop(ln) }()
	}
	lb.listening.Store(true)
	lb.log.Info("balancer listening", "listen", ln.Addr().String(), "mode", lb.mode, "backends", len(lb.pool.Load().backends))
	janitorDone := make(chan struct{})
	go lb.janitor(monCtx, janitorDone)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-acceptDone:
	}
	lb.shutdown(ln)
	stopMonitors()
	<-janitorDone
	lb.closeBackends()
	return runErr
}

func (lb *Balancer) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if lb.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			lb.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		lb.accepted.Add(1)
		cc := lb.track(c)
		if cc == nil {
			c.Close()
			continue
		}
		go lb.serveConn(cc)
	}
}

func (lb *Balancer) serveConn(cc *clientConn) {
	defer lb.untrack(cc)
	if s := lb.settings.Load(); s.acceptProxy != nil && !lb.acceptProxy(cc, s) {
		return
	}
	if lb.mode == "tcp" {
		lb.serveTCP(cc)
		return
	}
	lb.serveHTTP(cc)
}

// shutdown stops the balancer gracefully.
func (lb *Balancer) shutdown(ln net.Listener) {
	s := lb.settings.Load()
	lb.lameduck.Store(true)
	if d := s.cfg.Lameduck.D(); d > 0 {
		lb.log.Info("lameduck: not ready, still serving", "for", d)
		t := lb.clk.NewTimer(d)
		<-t.C()
	}
	lb.closing.Store(true)
	ln.Close()
	lb.mu.Lock()
	loops := lb.loops
	lb.mu.Unlock()
	if loops != nil {
		loops.closing()
	}
	lb.listening.Store(false)
	lb.holds.stop() // held connections close now: no backend will come
	lb.closeIdleClients()
	if lb.h2 != nil {
		// GOAWAY to HTTP/2 clients: streams in flight finish, then they close.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), max(s.clientTimeout, 5*time.Second))
			defer cancel()
			lb.h2.base.Shutdown(ctx)
		}()
	}
	done := make(chan struct{})
	go func() { lb.wg.Wait(); close(done) }()
	grace := max(s.clientTimeout, 5*time.Second)
	select {
	case <-done:
	case <-time.After(grace):
		lb.log.Warn("shutdown grace period over: closing connections still open", "grace", grace)
		lb.mu.Lock()
		lb.aborting = true
		for cc := range lb.conns {
			cc.abort()
		}
		lb.mu.Unlock()
		if loops != nil {
			loops.abort()
		}
		<-done
	}
	lb.log.Info("balancer stopped")
}

func (lb *Balancer) closeBackends() {
	for _, b := range lb.pool.Load().backends {
		b.closeIdle(time.Time{})
		if b.mon != nil {
			b.mon.Close()
		}
	}
}

func (lb *Balancer) janitor(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, b := range lb.pool.Load().backends {
				b.closeIdle(now.Add(-idleConnTimeout))
			}
		}
	}
}

func (lb *Balancer) startMonitorLocked(b *backend) {
	if b.mon == nil || lb.runCtx == nil {
		return
	}
	ctx, cancel := context.WithCancel(lb.runCtx)
	lb.monitors[b] = cancel
	go b.mon.Run(ctx)
}

func (lb *Balancer) stopMonitorLocked(b *backend) {
	if cancel, ok := lb.monitors[b]; ok {
		cancel()
		delete(lb.monitors, b)
	}
	if b.mon != nil {
		b.mon.Close()
	}
}

// Reload applies a new configuration of the same listener (see
// SameListener): backends are added, removed and reweighted, timeouts and
// limits change, and established connections, in-flight requests and the
// health state of kept backends are untouched. A changed health check
// restarts the checks of every backend.
func (lb *Balancer) Reload(c *config.Balancer, check *config.Check) error {
	if !lb.SameListener(c) {
		return fmt.Errorf("lb: balancer %s: listen, mode, algorithm or tls changed: the balancer must be restarted", lb.name)
	}
	s := newSettings(c, check)
	old := lb.settings.Load()
	// The access log is opened again (a renamed file is let go: logrotate),
	// before anything changes: a log that cannot be opened fails the reload.
	var alog *accessLog
	if c.AccessLog != nil && lb.listening.Load() {
		var err error
		if alog, err = openAccessLog(c.AccessLog); err != nil {
			return fmt.Errorf("lb: balancer %s: %w", lb.name, err)
		}
	}
	checkChanged := !sameCheck(old.check, check) || old.passive != s.passive
	cur := lb.pool.Load()
	var next []*backend
	var added, removed []*backend
	keep := make(map[*backend]bool)
	for _, bc := range c.Backends {
		if b := findAddr(cur.backends, bc.Address); b != nil && b.name == bc.Name && !checkChanged {
			b.apply(bc, s)
			next = append(next, b)
			keep[b] = true
			continue
		}
		nb, err := lb.newBackend(bc, s)
		if err != nil {
			alog.close()
			return err
		}
		if ob := findAddr(cur.backends, bc.Address); ob != nil {
			nb.admin.Store(ob.admin.Load()) // an operator's drain survives a reload
		}
		next = append(next, nb)
		added = append(added, nb)
	}
	for _, b := range cur.backends {
		if !keep[b] {
			removed = append(removed, b)
		}
	}
	lb.settings.Store(s)
	lb.pool.Store(newPool(next))
	if lb.listening.Load() {
		lb.alog.Swap(alog).close()
	}
	lb.mu.Lock()
	// Stop first: a replaced backend's old monitor deletes its metric
	// series on Close, and the new one (same target) publishes them on Run.
	for _, b := range removed {
		b.removed.Store(true)
		lb.stopMonitorLocked(b)
	}
	for _, b := range added {
		lb.startMonitorLocked(b)
	}
	lb.mu.Unlock()
	for _, b := range removed {
		b.closeIdle(time.Time{})
		lb.cancelDials(b, "left the pool")
		if s.shutdownSessions {
			lb.shutdownSessions(b, "left the pool")
		}
	}
	// Held connections look at the new pool (each keeps the hold it began with).
	lb.holds.signal()
	lb.log.Info("balancer reloaded", "backends", len(next), "added", len(added), "removed", len(removed))
	return nil
}

// SetBackends replaces the backends and keeps every other setting: the
// pool of a balancer whose backends come from elsewhere than haven.yaml
// (the database's primary and replicas, from etcd). Backends kept by
// address keep their state and connections.
func (lb *Balancer) SetBackends(backends []*config.Backend) error {
	s := lb.settings.Load()
	c := *s.cfg
	c.Backends = backends
	return lb.Reload(&c, s.check)
}

// shutdownSessions closes the client connections tunnelled to b, so that
// clients reconnect (to another backend) at once instead of waiting on a
// server that is gone or no longer the right one.
func (lb *Balancer) shutdownSessions(b *backend, why string) {
	b.poolMu.Lock()
	n := len(b.sessions)
	for cc := range b.sessions {
		cc.abort()
	}
	b.poolMu.Unlock()
	if n > 0 {
		lb.log.Info("closed the backend's client connections", "backend", b.name, "why", why, "connections", n)
	}
}

// cancelDials cancels the connections being made to b, which has left the
// pool or gone down: each moves to another backend, or is held, or closed.
func (lb *Balancer) cancelDials(b *backend, why string) {
	if n := b.cancelDials(); n > 0 {
		lb.log.Info("cancelled the connections being made to the backend", "backend", b.name, "why", why, "connections", n)
	}
}

// sameCheck reports whether two checks probe the same way, so that a reload
// keeps the running monitors and their state.
func sameCheck(a, b *config.Check) bool { return reflect.DeepEqual(a, b) }

func findAddr(bs []*backend, addr string) *backend {
	for _, b := range bs {
		if b.addr == addr {
			return b
		}
	}
	return nil
}

// SetState changes a backend's admin state (drain, maint, ready).
func (lb *Balancer) SetState(backend string, st AdminState) error {
	b := lb.pool.Load().find(backend)
	if b == nil {
		return fmt.Errorf("lb: balancer %s has no backend %q (have %s)", lb.name, backend, strings.Join(lb.backendNames(), ", "))
	}
	old := AdminState(b.admin.Swap(int32(st)))
	if st == Maint {
		b.closeIdle(time.Time{})
	}
	lb.holds.signal()
	lb.log.Info("backend admin state changed", "backend", b.name, "from", old.String(), "to", st.String(), "inflight", b.inflight.Load())
	return nil
}

// SetWeight changes a backend's weight until the next reload.
func (lb *Balancer) SetWeight(backend string, w int) error {
	if w < 0 || w > 256 {
		return fmt.Errorf("lb: weight %d is out of range 0-256", w)
	}
	b := lb.pool.Load().find(backend)
	if b == nil {
		return fmt.Errorf("lb: balancer %s has no backend %q (have %s)", lb.name, backend, strings.Join(lb.backendNames(), ", "))
	}
	b.weight.Store(int32(w))
	lb.holds.signal()
	lb.log.Info("backend weight changed", "backend", b.name, "weight", w)
	return nil
}

func (lb *Balancer) backendNames() []string {
	var names []string
	for _, b := range lb.pool.Load().backends {
		names = append(names, b.name)
	}
	slices.Sort(names)
	return names
}

// Ready reports why the balancer cannot serve, or nil: it must be listening,
// not shutting down, and have at least one backend that is up (or, before
// the first verdicts, one that is not down).
func (lb *Balancer) Ready() error {
	if lb.lameduck.Load() {
		return errors.New("shutting down (lameduck)")
	}
	if !lb.listening.Load() {
		return fmt.Errorf("not listening on %s", lb.addr)
	}
	pk := picker{p: lb.pool.Load()}
	pk.scan()
	for _, b := range pk.p.backends {
		if pk.usable(b) {
			return nil
		}
	}
	return errors.New("no healthy backend")
}

// Addr returns the listener's address once Run has bound it.
func (lb *Balancer) Addr() net.Addr {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.ln == nil {
		return nil
	}
	return lb.ln.Addr()
}

// BackendStatus is a backend's state in the status API.
type BackendStatus struct {
	Name            string        `json:"name"`
	Address         string        `json:"address"`
	Admin           string        `json:"admin"`
	Weight          int           `json:"weight"`
	EffectiveWeight int           `json:"effective_weight"`
	MaxConn         int           `json:"max_conn,omitempty"`
	Inflight        int64         `json:"inflight"`
	IdleConns       int           `json:"idle_conns"`
	Requests        uint64        `json:"requests"`
	Responses5xx    uint64        `json:"responses_5xx"`
	ConnectFailures uint64        `json:"connect_failures"`
	Resets          uint64        `json:"resets"`
	Timeouts        uint64        `json:"timeouts"`
	Retries         uint64        `json:"retries"`
	Health          health.Status `json:"health"`
	// Drained is true when the backend is draining or in maintenance and
	// has no request or connection left in flight.
	Drained bool `json:"drained"`
}

// Status is a balancer's state in the status API.
type Status struct {
	Name              string `json:"name"`
	Listen            string `json:"listen"`
	Mode              string `json:"mode"`
	Algorithm         string `json:"algorithm"`
	Ready             bool   `json:"ready"`
	NotReady          string `json:"not_ready,omitempty"`
	ClientConnections int64  `json:"client_connections"`
	Queued            int64  `json:"queued"`
	// Held counts the TCP connections waiting for a backend to appear.
	Held     int64           `json:"held"`
	Backends []BackendStatus `json:"backends"`
}

// Status reports the balancer and every backend.
func (lb *Balancer) Status() Status {
	s := lb.settings.Load()
	st := Status{
		Name: lb.name, Listen: lb.addr, Mode: lb.mode, Algorithm: s.cfg.Algorithm,
		ClientConnections: lb.clients.Load(), Queued: lb.queued.Load(), Held: lb.holds.waiting.Load(),
	}
	if err := lb.Ready(); err != nil {
		st.NotReady = err.Error()
	} else {
		st.Ready = true
	}
	for _, b := range lb.pool.Load().backends {
		b.poolMu.Lock()
		idle := len(b.idle)
		b.poolMu.Unlock()
		admin := AdminState(b.admin.Load())
		bs := BackendStatus{
			Name: b.name, Address: b.addr, Admin: admin.String(),
			Weight: int(b.weight.Load()), EffectiveWeight: b.Weight(), MaxConn: int(b.maxConn.Load()),
			Inflight: b.inflight.Load(), IdleConns: idle,
			Requests: b.m.requests.Load(), Responses5xx: b.m.responses[5].Load(),
			ConnectFailures: b.m.connectFailures.Load(), Resets: b.m.resets.Load(),
			Timeouts: b.m.timeouts.Load(), Retries: b.m.retries.Load(),
			Drained: admin != Ready && b.inflight.Load() == 0,
		}
		if b.mon != nil {
			bs.Health = b.mon.Snapshot()
		} else {
			bs.Health = health.Status{State: health.Unknown}
		}
		st.Backends = append(st.Backends, bs)
	}
	return st
}

func (lb *Balancer) countLocal(status int) {
	if i := localIndex(status); i >= 0 {
		lb.local[i].Add(1)
	}
}

var _ = tls.VersionTLS12
