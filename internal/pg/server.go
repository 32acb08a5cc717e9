package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Timing of the supervisor. None of them is a user knob.
const (
	// readyPoll is the interval between connection attempts while postgres
	// starts.
	readyPoll = 50 * time.Millisecond
	// attemptTimeout bounds one connection attempt.
	attemptTimeout = 2 * time.Second
	// cutStartStop bounds the fast shutdown of a postgres whose start was
	// cut short (Start's ctx ended); then it escalates as Stop does.
	cutStartStop = 10 * time.Second
	// killGrace is how long an immediate shutdown may take, once a stop
	// has run out of time, before SIGKILL.
	killGrace = 3 * time.Second
	// exitDrain bounds the wait, after the postmaster exits, for its
	// children to exit too (they notice its death at once).
	exitDrain = 10 * time.Second
	// deathSignal is what the kernel sends postgres when haven's thread
	// that started it dies: a fast shutdown, so that a database never
	// outlives its supervisor and keeps taking writes unfenced.
	deathSignal = syscall.SIGINT
)

// StopMode is one of PostgreSQL's shutdown modes.
type StopMode int

// The shutdown modes, from the gentlest.
const (
	// StopSmart (SIGTERM) waits for every client to disconnect, then
	// checkpoints.
	StopSmart StopMode = iota + 1
	// StopFast (SIGINT) disconnects the clients, rolls back their
	// transactions, and checkpoints.
	StopFast
	// StopImmediate (SIGQUIT) ends every process at once; the next start
	// runs crash recovery.
	StopImmediate
)

// String returns the mode's name as pg_ctl spells it.
func (m StopMode) String() string {
	switch m {
	case StopSmart:
		return "smart"
	case StopFast:
		return "fast"
	case StopImmediate:
		return "immediate"
	}
	return fmt.Sprintf("StopMode(%d)", int(m))
}

// signal returns the signal that asks the postmaster for m.
func (m StopMode) signal() (syscall.Signal, error) {
	switch m {
	case StopSmart:
		return syscall.SIGTERM, nil
	case StopFast:
		return syscall.SIGINT, nil
	case StopImmediate:
		return syscall.SIGQUIT, nil
	}
	return 0, fmt.Errorf("pg: stop: %v is not smart, fast or immediate", m)
}

// ExitError reports a postgres that exited without Stop asking it to: a
// crash, a kill -9, a shutdown by someone else, or a failed start.
type ExitError struct {
	// PID was the postmaster's process id.
	PID int
	// State is how it exited.
	State *os.ProcessState
	// LogTail holds its last log lines.
	LogTail []string
}

// Error says how postgres exited and what it logged last.
func (e *ExitError) Error() string {
	return fmt.Sprintf("pg: postgres (pid %d) exited unexpectedly: %s%s", e.PID, e.State, formatTail("postgres", e.LogTail))
}

// Server supervises PostgreSQL on one data directory. Its methods are safe
// for concurrent use; Init and Start run one at a time.
//
// A Server does not restart postgres by itself: Done and Wait report an exit
// that Stop did not ask for; a Supervisor restarts it in place.
type Server struct {
	bins *Binaries
	cfg  *settings
	log  *slog.Logger

	life sync.Mutex // serialises Init and Start

	mu  sync.Mutex
	cur *run // the latest postgres started, nil before the first

	connSem chan struct{} // a token held while using conn
	conn    *pgx.Conn     // haven's own connection, opened on demand
}

// run is one postgres process.
type run struct {
	cmd      *exec.Cmd
	pid      int
	tail     *lineTail
	stopping atomic.Bool   // Stop (or a failed Start) asked it to exit
	done     chan struct{} // closed once it and its children have exited
	err      error         // *ExitError, set before done closes, when it was not asked to exit
}

// finished reports whether the run's process has exited.
func (r *run) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// New checks cfg and finds the binaries. It starts nothing and writes
// nothing.
func New(ctx context.Context, cfg Config) (*Server, error) {
	st, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	bins, err := FindBinaries(ctx, cfg.Bindir)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		bins:    bins,
		cfg:     st,
		log:     log.With("component", "pg", "datadir", st.dataDir),
		connSem: make(chan struct{}, 1),
	}, nil
}

// DataDir returns the absolute path of the data directory.
func (s *Server) DataDir() string { return s.cfg.dataDir }

// PrepareSocketDir makes the unix socket's directory, as Start does (owned
// by the run-as user), for what else serves there before postgres starts.
func (s *Server) PrepareSocketDir() error { return s.cfg.prepareSocketDir() }

// SocketDir returns the directory of the unix socket.
func (s *Server) SocketDir() string { return s.cfg.socketDir }

// Name returns the node's name (Config.Name), "" when it has none.
func (s *Server) Name() string { return s.cfg.name }

// Port returns the port postgres listens on.
func (s *Server) Port() int { return s.cfg.port }

// LogFile returns the file that receives postgres's output.
func (s *Server) LogFile() string { return s.cfg.logFile }

// Binaries returns the PostgreSQL binaries the server runs.
func (s *Server) Binaries() *Binaries { return s.bins }

// current returns the latest run, or nil.
func (s *Server) current() *run {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// PID returns the postmaster's process id while it runs, or 0.
func (s *Server) PID() int {
	if r := s.current(); r != nil && !r.finished() {
		return r.pid
	}
	return 0
}

// LogTail returns the last lines postgres logged in its latest run, oldest
// first.
func (s *Server) LogTail() []string {
	if r := s.current(); r != nil {
		return r.tail.last(tailLines)
	}
	return nil
}

// closedChan is Done's answer before the first Start.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a channel that is closed when the latest postgres has exited
// and its children with it, or a closed channel before the first Start.
// After a new Start it returns a new channel.
func (s *Server) Done() <-chan struct{} {
	if r := s.current(); r != nil {
		return r.done
	}
	return closedChan
}

// Wait waits for the latest postgres to exit. It returns nil when Stop asked
// for the exit (or before the first Start), and an *ExitError otherwise:
// a crash, a kill, a shutdown by someone else or a failed start.
func (s *Server) Wait() error {
	r := s.current()
	if r == nil {
		return nil
	}
	<-r.done
	return r.err
}

// Init creates the data directory and runs initdb in it: data checksums on
// (pg_rewind needs them or wal_log_hints, and they catch corruption), the
// superuser named Superuser, UTF8 with the C locale, peer authentication on
// the unix socket and scram-sha-256 over TCP. The directory is created with
// mode 0700 and given to the run-as user.
//
// A directory that already holds a cluster is left alone and Init returns
// an error wrapping ErrInitialized; a non-empty directory that is not a
// cluster is an error that names what it holds.
func (s *Server) Init(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	dir := s.cfg.dataDir
	if pid := s.PID(); pid != 0 {
		return fmt.Errorf("pg: init %s: %w (pid %d)", dir, ErrAlreadyRunning, pid)
	}
	if err := s.cfg.prepareDataDir(); err != nil {
		return fmt.Errorf("pg: init %s: %w", dir, err)
	}
	cmd := s.command(ctx, "initdb", "-D", dir, "--data-checksums", "--username="+Superuser,
		"--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	if lerr := s.appendLog(out.Bytes()); lerr != nil {
		s.log.Warn("cannot write initdb's output to the log file", "file", s.cfg.logFile, "err", lerr)
	}
	if err != nil {
		lines := lastLines(out.String(), errorTailLines)
		return fmt.Errorf("pg: init %s: initdb: %w%s", dir, err, formatTail("initdb", lines))
	}
	s.log.Info("initialised the data directory", "version", s.bins.Version, "checksums", true,
		"user", s.cfg.user.name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// appendLog appends b to the log file.
func (s *Server) appendLog(b []byte) error {
	f, err := os.OpenFile(s.cfg.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// environ is the environment of every PostgreSQL program haven runs:
// nothing of haven's own (PGPASSWORD, PGOPTIONS, a locale) leaks in, and
// messages are in English, which the log tail and pg_controldata's parser
// rely on.
func environ() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
}

// sysProcAttr runs a child in its own process group, as the run-as user.
func (s *Server) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if u := s.cfg.user; u.drop {
		attr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
	return attr
}

// command prepares a PostgreSQL program that ends with ctx, with its whole
// process group.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.bins.Path(name), args...)
	cmd.Env = environ()
	cmd.Dir = "/"
	cmd.SysProcAttr = s.sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = exitDrain
	return cmd
}

// Start writes haven's configuration and runs `postgres -D <data dir>` as a
// child process in its own process group, as the run-as user, with its
// output appended to the log file. It returns once postgres accepts
// connections on the unix socket (SELECT 1 succeeds). If postgres exits
// first, the error holds its exit status and last log lines; if ctx ends
// first, Start stops it with a fast shutdown (bounded, then as Stop
// escalates), so that the data directory is left shut down cleanly, and
// says what the last attempt saw.
//
// A postmaster.pid left by a postgres that no longer runs (a crash, kill -9,
// power loss) is logged and left to postgres, which removes it and runs
// crash recovery. A postgres still running on the data directory, started
// by this Server or not, is an error wrapping ErrAlreadyRunning that names
// its pid.
//
// If haven dies, the kernel asks postgres for a fast shutdown.
func (s *Server) Start(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	dir := s.cfg.dataDir
	if pid := s.PID(); pid != 0 {
		return fmt.Errorf("pg: start %s: %w (pid %d, started by haven)", dir, ErrAlreadyRunning, pid)
	}
	v, err := dataDirVersion(dir)
	if err != nil {
		return fmt.Errorf("pg: start %s: %w", dir, err)
	}
	if v == 0 {
		return fmt.Errorf("pg: start %s: %w (no PG_VERSION): run Init first", dir, ErrNotInitialized)
	}
	if s.RewindIncomplete() {
		return fmt.Errorf("pg: start %s: %w (%s)", dir, errRewindIncomplete, s.rewindMarker())
	}
	if v != s.bins.Major {
		return fmt.Errorf("pg: start %s: the data directory is PostgreSQL %d and the binaries in %s are %s; upgrade it with pg_upgrade or use the matching binaries",
			dir, v, s.bins.Dir, s.bins.Version)
	}
	lock, err := readLock(dir)
	if err != nil {
		return fmt.Errorf("pg: start %s: postmaster.pid: %w", dir, err)
	}
	switch {
	case lock.pid == 0:
	case lock.stale:
		s.log.Info("postmaster.pid is stale: the last postgres did not shut down cleanly (crash, kill -9 or power loss); postgres will remove it and run crash recovery",
			"stale_pid", lock.pid)
	case lock.other != "":
		return fmt.Errorf("pg: start %s: postmaster.pid names pid %d, which runs %q, not postgres, and postgres refuses to start while that pid lives; if no postgres uses this data directory, remove postmaster.pid",
			dir, lock.pid, lock.other)
	default:
		return fmt.Errorf("pg: start %s: %w: postgres (pid %d) runs on this data directory; stop it first", dir, ErrAlreadyRunning, lock.pid)
	}
	if err := s.cfg.prepareSocketDir(); err != nil {
		return fmt.Errorf("pg: start %s: socket dir: %w", dir, err)
	}
	if err := s.cfg.writeConfig(); err != nil {
		return fmt.Errorf("pg: start %s: configuration: %w", dir, err)
	}
	started := time.Now()
	r, err := s.spawn()
	if err != nil {
		return fmt.Errorf("pg: start %s: %w", dir, err)
	}
	s.log.Info("started postgres", "pid", r.pid, "port", s.cfg.port, "user", s.cfg.user.name, "log", s.cfg.logFile)
	if err := s.waitReady(ctx, r); err != nil {
		return err
	}
	s.log.Info("postgres accepts connections", "pid", r.pid, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// spawn starts postgres, and the goroutines that copy its output and wait
// for it.
func (s *Server) spawn() (*run, error) {
	logf, err := os.OpenFile(s.cfg.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	args := append([]string{"-D", s.cfg.dataDir}, s.cfg.commandLine()...)
	cmd := exec.Command(s.bins.Path("postgres"), args...)
	cmd.Env = environ()
	cmd.Dir = s.cfg.dataDir
	cmd.Stdout = pw
	cmd.Stderr = pw
	cmd.SysProcAttr = s.sysProcAttr()
	cmd.SysProcAttr.Pdeathsig = deathSignal
	r := &run{cmd: cmd, tail: &lineTail{}, done: make(chan struct{})}
	logged := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// The kernel sends Pdeathsig when the thread that started the
		// child exits, not the process (go.dev/issue/27505): keep this
		// thread to this goroutine until postgres has exited, so that no
		// other goroutine can end it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		r.pid = cmd.Process.Pid
		started <- nil
		werr := cmd.Wait()
		s.reap(r, werr, logged)
	}()
	err = <-started
	pw.Close() // the children hold their own copies
	if err != nil {
		pr.Close()
		logf.Close()
		return nil, err
	}
	go func() {
		defer close(logged)
		if err := copyLines(pr, logf, r.tail); err != nil {
			s.log.Warn("cannot write postgres's output to the log file", "file", s.cfg.logFile, "err", err)
		}
		pr.Close()
		logf.Close()
	}()
	s.mu.Lock()
	s.cur = r
	s.mu.Unlock()
	return r, nil
}

// reap records the exit of r's postmaster, once its children, which hold
// the log pipe, have exited too (so that a new postgres does not find them
// attached to the old shared memory), and closes r.done.
func (s *Server) reap(r *run, werr error, logged <-chan struct{}) {
	t := time.NewTimer(exitDrain)
	select {
	case <-logged:
	case <-t.C:
		s.log.Warn("postgres exited but processes it started still hold its log", "pid", r.pid, "waited", exitDrain)
	}
	t.Stop()
	s.dropConn()
	state := r.cmd.ProcessState
	if r.stopping.Load() {
		s.log.Info("postgres stopped", "pid", r.pid, "status", state.String())
	} else {
		r.err = &ExitError{PID: r.pid, State: state, LogTail: r.tail.last(errorTailLines)}
		s.log.Warn("postgres exited unexpectedly", "pid", r.pid, "status", state.String(), "err", werr)
	}
	close(r.done)
}

// waitReady polls until postgres answers SELECT 1 over the unix socket, it
// exits, or ctx ends; the connection that answers becomes haven's own.
// PostgreSQL announces that it accepts connections only through
// sd_notify, and only when built with systemd support; pg_ctl start
// polls too (postmaster.pid's status line).
func (s *Server) waitReady(ctx context.Context, r *run) error {
	dir := s.cfg.dataDir
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	var last error
	for {
		conn, err := s.connectOwn(ctx)
		if err == nil {
			if _, err = conn.Exec(ctx, "SELECT 1"); err == nil {
				s.setConn(conn)
				return nil
			}
			conn.Close(context.Background())
		}
		last = err
		select {
		case <-r.done:
			lines := r.tail.last(errorTailLines)
			err := fmt.Errorf("pg: start %s: postgres exited before accepting connections: %s%s",
				dir, r.cmd.ProcessState, formatTail("postgres", lines))
			if pastFork(lines) {
				err = fmt.Errorf("%w: %w", ErrPastFork, err)
			}
			return err
		case <-ctx.Done():
			// A fast shutdown, not an immediate one: that would leave the
			// data directory to crash recovery, and a rewind runs it as a
			// primary, which writes checkpoints of its own that no other
			// node has (a replica's data, stopped while starting, would
			// then diverge from its primary's).
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cutStartStop)
			how := "a fast shutdown"
			if err := s.Stop(sctx, StopFast); err != nil {
				how = err.Error()
			}
			cancel()
			return fmt.Errorf("pg: start %s: postgres did not accept connections before %w (last attempt: %v); stopped it: %s%s",
				dir, context.Cause(ctx), last, how, formatTail("postgres", r.tail.last(errorTailLines)))
		case <-tick.C:
		}
	}
}

// Stop asks postgres to shut down in mode and waits until it and its
// children have exited. If ctx ends first it escalates: an immediate
// shutdown, then, after a few seconds, SIGKILL to the postmaster's process
// group and to each of its children; it then returns an error that says
// so. Stop is idempotent: without a running postgres it returns nil.
func (s *Server) Stop(ctx context.Context, mode StopMode) error {
	sig, err := mode.signal()
	if err != nil {
		return err
	}
	r := s.current()
	if r == nil || r.finished() {
		return nil
	}
	r.stopping.Store(true)
	s.log.Info("stopping postgres", "pid", r.pid, "mode", mode.String())
	// haven's own session would hold a smart shutdown forever.
	s.dropConnCtx(ctx)
	if err := r.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("cannot signal postgres", "pid", r.pid, "signal", sig.String(), "err", err)
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	}
	how := s.kill(r, mode == StopImmediate)
	return fmt.Errorf("pg: stop %s: the %s shutdown did not finish before %w; ended it with %s",
		s.cfg.dataDir, mode, context.Cause(ctx), how)
}

// kill ends r: an immediate shutdown unless one was already asked for,
// then, if that does not end it within killGrace, SIGKILL. It returns once r
// is done, saying which ended it.
func (s *Server) kill(r *run, immediateSent bool) string {
	if !immediateSent {
		_ = r.cmd.Process.Signal(syscall.SIGQUIT)
		t := time.NewTimer(killGrace)
		select {
		case <-r.done:
			t.Stop()
			return "an immediate shutdown"
		case <-t.C:
		}
	}
	if r.finished() {
		return "an immediate shutdown"
	}
	// The postmaster's children lead process groups of their own
	// (PostgreSQL calls setsid in each): find them by parent while the
	// postmaster lives.
	kids := childrenOf(r.pid)
	s.log.Warn("killing postgres", "pid", r.pid, "children", len(kids))
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(-k, syscall.SIGKILL)
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-r.done
	return "SIGKILL"
}
