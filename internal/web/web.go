// Package web is an agent's admin listener: liveness, readiness, Prometheus
// metrics, the JSON status API and the operator's mutating calls.
package web

import (
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Server.
type Options struct {
	Addr      string // "HOST:PORT"
	TokenFile string // bearer token for mutating calls off loopback; "" for none
	// ReadTokenFile holds a token that allows reads only; with
	// AuthenticateReads, every read off loopback but the probes needs it
	// or the write token.
	ReadTokenFile     string
	AuthenticateReads bool
	// TLS, when set, serves HTTPS.
	TLS      *tls.Config
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
	// Info is merged into every status response (node, cluster, version).
	Info map[string]any
	// ReadTimeout bounds reading a request (default 30s); a stream
	// (StartStream) is not bound by it.
	ReadTimeout time.Duration
}

// Server is the admin HTTP server. Components register readiness checks,
// status sections and mutating handlers before Run.
type Server struct {
	opt      Options
	log      *slog.Logger
	mux      *http.ServeMux
	loopback bool

	mu        sync.Mutex
	readiness map[string]func() error
	status    map[string]func() any
	token     string
	readToken string
	lameduck  atomic.Bool
	started   time.Time
	// streams ends when the server shuts down: a stream (StartStream)
	// would otherwise hold Shutdown for its whole grace period.
	streams     context.Context
	stopStreams context.CancelFunc
}

// New returns a server; it reads the token file now so that a missing file
// is reported at start rather than on the first call.
func New(opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opt:       opt,
		log:       opt.Logger.With("component", "admin"),
		mux:       http.NewServeMux(),
		readiness: make(map[string]func() error),
		status:    make(map[string]func() any),
		started:   time.Now(),
		loopback:  isLoopback(opt.Addr),
	}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	var err error
	if s.token, err = readToken(opt.TokenFile); err != nil {
		return nil, err
	}
	if s.readToken, err = readToken(opt.ReadTokenFile); err != nil {
		return nil, err
	}
	if opt.AuthenticateReads && s.token == "" && s.readToken == "" {
		return nil, errors.New("admin: authenticate_reads needs a token file")
	}
	s.HandleProbe("GET /healthz", s.healthz)
	s.HandleProbe("GET /readyz", s.readyz)
	s.HandleRead("GET /api/v1/status", s.statusHandler)
	if opt.Gatherer != nil {
		s.HandleRead("GET /metrics", promhttp.HandlerFor(opt.Gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	}
	return s, nil
}

// readToken reads a token file; "" for no file.
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin: read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin: token file %s is empty", file)
	}
	return t, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// AddReadiness registers a readiness check: fn returns why the component is
// not ready, or nil.
func (s *Server) AddReadiness(name string, fn func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readiness[name] = fn
}

// RemoveReadiness drops a readiness check.
func (s *Server) RemoveReadiness(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.readiness, name)
}

// SetStatus registers (or with nil removes) a status section.
func (s *Server) SetStatus(name string, fn func() any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fn == nil {
		delete(s.status, name)
		return
	}
	s.status[name] = fn
}

// HandleProbe registers a read-only handler that load balancers and
// supervisors probe: it never needs a token.
func (s *Server) HandleProbe(pattern string, h http.HandlerFunc) { s.mux.HandleFunc(pattern, h) }

// HandleRead registers a read-only handler. With AuthenticateReads, off
// loopback, it needs the read token or the write token.
func (s *Server) HandleRead(pattern string, h http.HandlerFunc) {
	if !s.opt.AuthenticateReads {
		s.mux.HandleFunc(pattern, h)
		return
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if status, err := s.authorizeRead(r); err != nil {
			s.log.Warn("admin read refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="haven admin"`)
			WriteError(w, status, err)
			return
		}
		h(w, r)
	})
}

// MayRead says whether r may read: always unless reads are
// authenticated, then with a token.
func (s *Server) MayRead(r *http.Request) bool {
	if !s.opt.AuthenticateReads {
		return true
	}
	_, err := s.authorizeRead(r)
	return err == nil
}

// TokenCookie is the cookie a browser sends the read token in: a page
// and its event stream cannot send an Authorization header. It is good
// for reads only; a change needs the header (a cookie would let another
// site's form act with the operator's browser).
const TokenCookie = "haven_token"

// authorizeRead returns nil when r may read, or the status to answer.
func (s *Server) authorizeRead(r *http.Request) (int, error) {
	if s.loopback {
		return 0, nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if c, err := r.Cookie(TokenCookie); !ok && err == nil {
		// The cookie carries the read token only: a cookie is sent to
		// every port of the host, the write token never goes there.
		v, err := url.QueryUnescape(c.Value)
		if err != nil {
			v = c.Value
		}
		if s.readToken != "" && subtle.ConstantTimeCompare([]byte(v), []byte(s.readToken)) == 1 {
			return 0, nil
		}
		return http.StatusUnauthorized, errors.New("wrong token in the haven_token cookie: it takes the token in admin.read_token_file")
	}
	if !ok {
		return http.StatusUnauthorized, errors.New(`missing bearer token: admin.authenticate_reads is on; send "Authorization: Bearer TOKEN" with the token in admin.read_token_file or admin.token_file`)
	}
	for _, t := range []string{s.readToken, s.token} {
		if t != "" && subtle.ConstantTimeCompare([]byte(got), []byte(t)) == 1 {
			return 0, nil
		}
	}
	return http.StatusUnauthorized, errors.New("wrong bearer token: use the token in admin.read_token_file or admin.token_file")
}

// HandleMutating registers a handler that changes state. Off loopback it
// requires "Authorization: Bearer TOKEN" with the token from the token file,
// and without a token file such calls are refused.
func (s *Server) HandleMutating(pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if status, err := s.authorize(r); err != nil {
			s.log.Warn("admin call refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="haven admin"`)
			}
			WriteError(w, status, err)
			return
		}
		// Who: the CLI names its user and machine; the token says only
		// that the caller may.
		// A call that changes something is an event of the cluster's
		// timeline (see internal/events); a read of the profiler is not.
		args := []any{"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "operator", r.Header.Get("X-Haven-Operator")}
		if r.Method != http.MethodGet {
			if q := r.URL.RawQuery; q != "" {
				args = append(args, "query", q)
			}
			args = append(args, "event", "admin")
		}
		s.log.Info("admin call", args...)
		h(w, r)
	})
}

// authorize returns nil when r may change state, or the status to answer
// (401: a token would help; 403: no token can) and what to do about it.
func (s *Server) authorize(r *http.Request) (int, error) {
	// A browser names the page a request comes from: a change sent by
	// another site's page (a form aimed at a loopback admin port, which
	// needs no token) is refused.
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
		return http.StatusForbidden, fmt.Errorf("a change from the page of another site (Origin %s) is refused: use the dashboard of this agent, or haven", o)
	}
	if s.loopback {
		// No token on loopback: only a request addressed to loopback may
		// change anything, not a page whose name was made to resolve to
		// 127.0.0.1 (DNS rebinding), whose Origin and Host would agree.
		if !loopbackHost(r.Host) {
			return http.StatusForbidden, fmt.Errorf("the request's host %q is not a loopback address: a change on a loopback admin port is addressed to localhost or 127.0.0.1", r.Host)
		}
		return 0, nil
	}
	if s.token == "" {
		return http.StatusForbidden, errors.New("mutating admin calls off loopback need admin.token_file in haven.yaml")
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return http.StatusUnauthorized, errors.New(`missing bearer token: send "Authorization: Bearer TOKEN" with the token in admin.token_file`)
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
		return http.StatusUnauthorized, errors.New("wrong bearer token: use the token in admin.token_file")
	}
	return 0, nil
}

// SetLameduck marks the agent as shutting down: /readyz fails from now on.
func (s *Server) SetLameduck() { s.lameduck.Store(true) }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// NotReady lists the components that are not ready, sorted, as "name: why".
func (s *Server) NotReady() []string {
	s.mu.Lock()
	checks := make(map[string]func() error, len(s.readiness))
	for k, v := range s.readiness {
		checks[k] = v
	}
	s.mu.Unlock()
	var out []string
	if s.lameduck.Load() {
		out = append(out, "agent: shutting down")
	}
	for name, fn := range checks {
		if err := fn(); err != nil {
			out = append(out, name+": "+err.Error())
		}
	}
	sort.Strings(out)
	return out
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if bad := s.NotReady(); len(bad) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:")
		for _, b := range bad {
			fmt.Fprintln(w, "  "+b)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) statusHandler(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, s.Status())
}

// Status is what GET /api/v1/status answers: the server's Info, uptime,
// readiness and every status section.
func (s *Server) Status() map[string]any {
	out := map[string]any{}
	for k, v := range s.opt.Info {
		out[k] = v
	}
	out["uptime_seconds"] = time.Since(s.started).Seconds()
	bad := s.NotReady()
	out["ready"] = len(bad) == 0
	if len(bad) > 0 {
		out["not_ready"] = bad
	}
	s.mu.Lock()
	sections := make(map[string]func() any, len(s.status))
	for k, v := range s.status {
		sections[k] = v
	}
	s.mu.Unlock()
	for k, fn := range sections {
		out[k] = fn()
	}
	return out
}

// WriteJSON writes v as indented JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes {"error": "..."} with status.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, map[string]string{"error": err.Error()})
}

// Run serves until ctx ends, then shuts down within five seconds.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opt.Addr)
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", s.opt.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on a listener the caller bound.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cmp.Or(s.opt.ReadTimeout, 30*time.Second),
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(s.stopStreams)
	if s.opt.TLS != nil {
		ln = tls.NewListener(ln, s.opt.TLS)
	}
	s.log.Info("admin listening", "addr", ln.Addr().String(), "loopback", s.loopback, "tls", s.opt.TLS != nil, "authenticate_reads", s.opt.AuthenticateReads)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

// sameOrigin says whether a browser's Origin header names host (the
// request's Host), whatever the scheme.
func sameOrigin(origin, host string) bool {
	_, rest, ok := strings.Cut(origin, "://")
	return ok && strings.EqualFold(rest, host)
}

// loopbackHost says whether a request's Host names loopback: localhost
// or a loopback address, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
