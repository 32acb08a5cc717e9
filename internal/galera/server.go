package galera

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Timeouts of the server's life.
const (
	// stopTimeout bounds a clean shutdown (the node leaves the group and
	// InnoDB flushes) before SIGKILL.
	stopTimeout = 30 * time.Second
	// queryTimeout bounds one status query: a hung server is reported
	// as not answering, never waited on.
	queryTimeout = 2 * time.Second
	// logTailLines are the server's last log lines an exit error carries.
	logTailLines = 12
)

func init() {
	// The driver logs some connection errors to stderr as well as
	// returning them: haven logs what it returns, once.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
}

// deathSignal is what the kernel sends mariadbd when haven's thread that
// started it exits: a clean shutdown, in which the node leaves the group
// at once rather than after the others' failure detection.
const deathSignal = syscall.SIGTERM

// Server runs one node's mariadbd as a child process. It is safe for use
// by several goroutines.
type Server struct {
	cfg      Config
	log      *slog.Logger
	provider string
	mariadbd string
	install  string
	uid, gid int
	drop     bool // run as uid/gid (haven is root)

	life sync.Mutex // one start or stop at a time
	mu   sync.Mutex
	cur  *run
	db   *sql.DB // over the unix socket, as root or the run-as user
}

// run is one mariadbd process.
type run struct {
	cmd      *exec.Cmd
	pid      int
	stopping bool
	done     chan struct{}
	err      error // why it exited, when not asked to
}

// New checks cfg and finds MariaDB's programs and the galera provider. It
// starts nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("galera: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log.With("component", "galera", "node", cfg.Name)}
	var err error
	if s.provider, err = findProvider(); err != nil {
		return nil, fmt.Errorf("galera: %w", err)
	}
	for _, p := range []struct {
		dst   *string
		names []string
	}{
		{&s.mariadbd, []string{"mariadbd", "mysqld"}},
		{&s.install, []string{"mariadb-install-db", "mysql_install_db"}},
	} {
		for _, n := range p.names {
			if path, err := lookPath(n); err == nil {
				*p.dst = path
				break
			}
		}
		if *p.dst == "" {
			return nil, fmt.Errorf("galera: no %s on PATH or in /usr/sbin: install mariadb-server (apt-get install mariadb-server galera-4 mariadb-backup)", p.names[0])
		}
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(cfg.User)
		if err != nil {
			return nil, fmt.Errorf("galera: run-as user %q: %w (database.user; mariadb-server's package makes mysql)", cfg.User, err)
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
		s.drop = true
	}
	return s, nil
}

// lookPath finds a program on PATH, then in /usr/sbin (mariadbd's place,
// often not on a service's PATH).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// Prepare makes the base directory, owned by the run-as user (mode 0750),
// and checks that the user can reach it: every directory above it must
// let the user search it.
func (s *Server) Prepare() error {
	dir := s.cfg.BaseDir
	// Directories above it that do not exist yet are made searchable by
	// all (0711, as PostgreSQL's are), the base directory itself 0750.
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("galera: %w", err)
	}
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("galera: %w", err)
	}
	if !s.drop {
		return nil
	}
	if err := os.Chown(dir, s.uid, s.gid); err != nil {
		return fmt.Errorf("galera: %w", err)
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("galera: %w", err)
		}
		if !searchable(st, s.uid, s.gid) {
			return fmt.Errorf("galera: %s (mode %v) does not let %s search it, and the data directory %s is below it: chmod o+x %s, or choose another database.data_dir",
				d, st.Mode().Perm(), s.cfg.User, dir, d)
		}
		if d == "/" {
			return nil
		}
	}
}

// searchable reports whether a directory with st lets uid (of group gid)
// search it.
func searchable(st os.FileInfo, uid, gid int) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := st.Mode().Perm()
	switch {
	case int(sys.Uid) == uid:
		return perm&0o100 != 0
	case int(sys.Gid) == gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// Initialized reports whether the data directory holds a server's data.
func (s *Server) Initialized() bool {
	// Only a sure absence counts: a directory that cannot be read now (a
	// volume not mounted yet, EIO) is never initialised over.
	_, err := os.Stat(filepath.Join(s.cfg.dataDir(), "mysql"))
	return !errors.Is(err, os.ErrNotExist)
}

// Init creates the data directory's system tables, with root and the
// run-as user authenticated by their unix socket only (no passwords). It
// builds them beside the data directory and renames them into place, so
// that an Init cut short (its context ended, the machine crashed) leaves
// no half-made data directory that would pass for a made one.
func (s *Server) Init(ctx context.Context) error {
	if err := s.Prepare(); err != nil {
		return err
	}
	dir := s.cfg.dataDir()
	tmp := dir + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("galera: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := s.command(ctx, s.install, "--no-defaults", "--datadir="+tmp,
		"--auth-root-authentication-method=socket", "--skip-test-db", "--user="+s.cfg.User)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("galera: mariadb-install-db: %w: %s", err, errorLines(out))
	}
	if _, err := os.Stat(dir); err == nil {
		// A data directory without system tables is not one Init made (it
		// renames whole ones into place): kept aside, not deleted.
		aside := dir + ".without-system-tables." + time.Now().UTC().Format("20060102T150405")
		if err := os.Rename(dir, aside); err != nil {
			return fmt.Errorf("galera: %w", err)
		}
		s.log.Warn("the data directory had no system tables; moved aside", "dir", dir, "to", aside)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("galera: %w", err)
	}
	s.log.Info("initialised the data directory", "dir", dir)
	return nil
}

// command prepares one of MariaDB's programs, as the run-as user, in its
// own process group, killed with it when ctx ends.
func (s *Server) command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Dir = "/"
	cmd.SysProcAttr = s.sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (s *Server) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if s.drop {
		attr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	return attr
}

// WaitStale waits for a mariadbd that runs on this data directory without
// this Server (its pid file names a live mariadbd: the server of a
// previous agent, shutting down after that agent died) to exit, for up to
// stopTimeout, and then kills it.
func (s *Server) WaitStale(ctx context.Context) error {
	if s.Running() {
		return nil
	}
	b, err := os.ReadFile(s.cfg.pidFile())
	if err != nil {
		return nil
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return nil
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || !strings.HasPrefix(string(comm), "mariadbd") && !strings.HasPrefix(string(comm), "mysqld") {
		return nil // gone, or the pid is another program's now
	}
	s.log.Warn("a mariadbd this Server did not start runs on the data directory (a previous agent's); waiting for it to exit", "pid", pid)
	deadline := time.Now().Add(stopTimeout)
	for {
		if err := syscall.Kill(pid, 0); err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.log.Warn("the previous mariadbd did not exit: killed", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(stopTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Position reads where the stopped node's data stands: grastate.dat, and
// when that says the server did not stop cleanly (seqno -1), InnoDB's own
// record through `mariadbd --wsrep-recover`.
func (s *Server) Position(ctx context.Context) (Position, error) {
	if s.Running() {
		return Position{}, errors.New("galera: position: the server runs")
	}
	p, ok, err := readGrastate(s.cfg.dataDir())
	if err != nil {
		return Position{}, fmt.Errorf("galera: %w", err)
	}
	if !ok || !s.Initialized() || p.Seqno >= 0 {
		return p, nil
	}
	if err := s.writeConfig(); err != nil {
		return Position{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	logPath := filepath.Join(s.cfg.BaseDir, "wsrep-recover.log")
	os.Remove(logPath)
	cmd := s.command(ctx, s.mariadbd, "--defaults-file="+s.cfg.confFile(), "--wsrep-recover", "--log-error="+logPath)
	out, runErr := cmd.CombinedOutput()
	log, _ := os.ReadFile(logPath)
	r, found := parseRecovered(append(log, out...))
	if !found {
		return Position{}, fmt.Errorf("galera: mariadbd --wsrep-recover found no position (%v): %s", runErr, lastLines(append(log, out...), logTailLines))
	}
	if r.UUID != "" && p.UUID != "" && r.UUID != p.UUID {
		return Position{}, fmt.Errorf("galera: InnoDB's position %s is of another history than grastate.dat's %s", r, p.UUID)
	}
	s.log.Info("recovered the position of a server that did not stop cleanly", "position", r.String())
	r.SafeToBootstrap = p.SafeToBootstrap
	return r, nil
}

func (s *Server) writeConfig() error {
	if err := s.Prepare(); err != nil {
		return err
	}
	path := s.cfg.confFile()
	if err := os.WriteFile(path+".tmp", s.cfg.render(s.provider), 0o644); err != nil {
		return fmt.Errorf("galera: my.cnf: %w", err)
	}
	return os.Rename(path+".tmp", path)
}

// Start runs mariadbd; with bootstrap it starts a new primary component
// from this node's data (--wsrep-new-cluster, after marking the node safe
// to bootstrap). from, when it names a history and a seqno, is the
// node's position as recovered (--wsrep-recover): mariadbd does not
// recover it by itself from a grastate.dat that a crash left at seqno -1,
// and would bootstrap a new history (the other nodes could then rejoin
// only by a full copy) or join by a full copy instead of IST. It returns
// once the process runs: a joining node receives its state transfer
// before it answers, which may take long, so callers watch Status and
// Done.
func (s *Server) Start(bootstrap bool, from Position) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.Running() {
		return errors.New("galera: start: the server already runs")
	}
	if err := s.writeConfig(); err != nil {
		return err
	}
	if bootstrap {
		if err := markSafeToBootstrap(s.cfg.dataDir()); err != nil {
			return fmt.Errorf("galera: bootstrap: grastate.dat: %w", err)
		}
	}
	os.Remove(s.cfg.pidFile())
	var args []string
	if bootstrap {
		args = append(args, "--wsrep-new-cluster")
	}
	if !from.None() && from.Seqno >= 0 {
		args = append(args, "--wsrep-start-position="+from.String())
	}
	r, err := s.spawn(args)
	if err != nil {
		return fmt.Errorf("galera: start: %w", err)
	}
	s.log.Info("started mariadbd", "pid", r.pid, "bootstrap", bootstrap, "position", from.String(), "log", s.cfg.logFile())
	return nil
}

func (s *Server) spawn(extra []string) (*run, error) {
	logf, err := os.OpenFile(s.cfg.logFile(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	args := append([]string{"--defaults-file=" + s.cfg.confFile()}, extra...)
	cmd := exec.Command(s.mariadbd, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH") + ":/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Dir = s.cfg.BaseDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = s.sysProcAttr()
	cmd.SysProcAttr.Pdeathsig = deathSignal
	r := &run{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the thread that started the child
		// (go.dev/issue/27505): keep it until mariadbd exits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		r.pid = cmd.Process.Pid
		started <- nil
		werr := cmd.Wait()
		logf.Close()
		s.reap(r, werr)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, err
	}
	s.mu.Lock()
	s.cur = r
	s.mu.Unlock()
	return r, nil
}

func (s *Server) reap(r *run, werr error) {
	s.mu.Lock()
	stopping := r.stopping
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
	s.mu.Unlock()
	// Helpers it started (a state transfer's socat or mariabackup) would
	// keep their ports from the next start.
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	if stopping {
		s.log.Info("mariadbd stopped", "pid", r.pid)
	} else {
		r.err = fmt.Errorf("mariadbd (pid %d) exited: %v: %s", r.pid, werr, lastLines(s.logTail(), logTailLines))
		s.log.Warn("mariadbd exited unexpectedly", "pid", r.pid, "err", werr)
	}
	close(r.done)
}

func (s *Server) current() *run {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Running reports whether mariadbd runs (started by this Server).
func (s *Server) Running() bool {
	r := s.current()
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// PID is the running mariadbd's, or 0.
func (s *Server) PID() int {
	if r := s.current(); r != nil && s.Running() {
		return r.pid
	}
	return 0
}

// Done is closed when the current mariadbd exits (nil before the first
// start).
func (s *Server) Done() <-chan struct{} {
	if r := s.current(); r != nil {
		return r.done
	}
	return nil
}

// ExitErr says why the last mariadbd exited when it was not asked to.
func (s *Server) ExitErr() error {
	if r := s.current(); r != nil && !s.Running() {
		return r.err
	}
	return nil
}

// Stop shuts mariadbd down cleanly (SIGTERM: the node leaves the group),
// and kills it when ctx ends or stopTimeout passes first.
func (s *Server) Stop(ctx context.Context) error {
	s.life.Lock()
	defer s.life.Unlock()
	r := s.current()
	if r == nil || !s.Running() {
		return nil
	}
	s.mu.Lock()
	r.stopping = true
	s.mu.Unlock()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	s.log.Warn("mariadbd did not stop in time: killed", "pid", r.pid)
	_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	select {
	case <-r.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("galera: mariadbd (pid %d) did not exit 10s after SIGKILL (stuck in the kernel: a hung disk?)", r.pid)
	}
}

// conn returns haven's connection pool to the server, over its socket.
func (s *Server) conn() (*sql.DB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return s.db, nil
	}
	c := mysql.NewConfig()
	c.Net, c.Addr = "unix", s.cfg.socket()
	// The unix_socket plugin checks the peer's uid: haven as root is
	// root@localhost, as the run-as user that user.
	c.User = "root"
	if os.Geteuid() != 0 {
		if u, err := user.Current(); err == nil {
			c.User = u.Username
		}
	}
	c.Timeout, c.ReadTimeout, c.WriteTimeout = queryTimeout, queryTimeout, queryTimeout
	connector, err := mysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	s.db = sql.OpenDB(connector)
	s.db.SetMaxOpenConns(2)
	s.db.SetMaxIdleConns(2)
	s.db.SetConnMaxLifetime(time.Minute)
	return s.db, nil
}

// Status asks the running server for its wsrep state.
func (s *Server) Status(ctx context.Context) (Status, error) {
	if !s.Running() {
		return Status{}, errors.New("galera: the server does not run")
	}
	db, err := s.conn()
	if err != nil {
		return Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return readStatus(ctx, db)
}

// Exec runs a statement on the running server, as haven.
func (s *Server) Exec(ctx context.Context, query string) error {
	db, err := s.conn()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	_, err = db.ExecContext(ctx, query)
	return err
}

// errorLines are b's lines that say ERROR, or its last lines when none
// does: mariadb-install-db ends its output with advice, not the error.
func errorLines(b []byte) string {
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "ERROR") || strings.Contains(l, "rror:") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	if len(errs) == 0 {
		return lastLines(b, logTailLines)
	}
	return strings.Join(errs[:min(len(errs), logTailLines)], " | ")
}

// logTail is the end of the server's log (its last 64 KiB).
func (s *Server) logTail() []byte {
	f, err := os.Open(s.cfg.logFile())
	if err != nil {
		return nil
	}
	defer f.Close()
	const tail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	return b
}

// lastLines are the last n lines of b, on one line each joined by " | ".
func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
