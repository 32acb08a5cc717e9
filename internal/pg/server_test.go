package pg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// testTimeout bounds each step of an integration test that waits for
// PostgreSQL; none of them takes more than a few seconds.
const testTimeout = 60 * time.Second

// requirePostgres returns the PostgreSQL binaries. Without them it skips the
// test, or fails it when CI=true.
func requirePostgres(t *testing.T) *Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	b, err := FindBinaries(context.Background(), "")
	if err == nil {
		return b
	}
	testenv.Need(t, false, "no PostgreSQL binaries: %v", err)
	return nil
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, port := holdPort(t)
	l.Close()
	return port
}

// holdPort listens on a free TCP port of 127.0.0.1, so that postgres cannot
// bind it, until the caller closes the listener or the test ends.
func holdPort(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, l.Addr().(*net.TCPAddr).Port
}

// testServer is a Server on a fresh directory, listening on 127.0.0.1 and a
// free port.
type testServer struct {
	*Server
	log  *testenv.Buffer
	conf Config
}

// newTestServer makes a Server that is stopped, its children killed and
// its directory removed when the test ends, whatever happens.
func newTestServer(t *testing.T, edit func(*Config)) *testServer {
	t.Helper()
	bins := requirePostgres(t)
	dir := testenv.SearchableDir(t)
	lb := &testenv.Buffer{}
	cfg := Config{
		Bindir:          bins.Dir,
		DataDir:         filepath.Join(dir, "data"),
		ListenAddresses: []string{"127.0.0.1"},
		Port:            freePort(t),
		Logger:          slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	if cfg.Settings == nil {
		cfg.Settings = map[string]string{}
	}
	// A postgres killed by a test leaves its dynamic shared memory in
	// /dev/shm, and the restart that would clean it up never comes: the
	// directory is removed. mmap keeps those segments in the data
	// directory instead.
	cfg.Settings["dynamic_shared_memory_type"] = "mmap"
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupServer(t, s, lb) })
	return &testServer{Server: s, log: lb, conf: cfg}
}

// cleanupServer stops s with SIGKILL as the last resort, and shows what it
// logged when the test failed.
func cleanupServer(t *testing.T, s *Server, lb *testenv.Buffer) {
	pid := s.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Stop(ctx, StopImmediate); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if pid != 0 {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("cleanup: postgres (pid %d) still runs after Stop; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if t.Failed() {
		t.Logf("haven's log:\n%s", lb.String())
		if b, err := os.ReadFile(s.LogFile()); err == nil {
			t.Logf("postgres's log %s:\n%s", s.LogFile(), b)
		}
	}
}

// initStart runs Init and Start.
func (s *testServer) initStart(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// queryString runs sql on a new connection and returns the first column of the
// first row as text.
func (s *testServer) queryString(t *testing.T, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// waitDone waits for the server's Done channel, failing with the log tail if
// it stays open.
func waitDone(t *testing.T, s *testServer) {
	t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-s.Done():
	case <-timer.C:
		t.Fatalf("Done still open after %v; pid %d; log tail:\n%s", testTimeout, s.PID(), strings.Join(s.LogTail(), "\n"))
	}
}

// procUID returns the real user id of pid, from /proc.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, func(c *Config) {
		c.Settings = map[string]string{"shared_buffers": "16MB"}
		c.HBA = []string{"host all " + Superuser + " 127.0.0.1/32 trust"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	s.initStart(t)
	if err := s.Init(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("Init while running = %v; want ErrAlreadyRunning", err)
	}
	pid := s.PID()
	if pid == 0 {
		t.Fatal("PID() = 0 after Start")
	}
	select {
	case <-s.Done():
		t.Fatal("Done closed while postgres runs")
	default:
	}

	// It runs as the postgres user, never as root.
	uid := procUID(t, pid)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		if strconv.Itoa(uid) != u.Uid {
			t.Errorf("postmaster runs as uid %d; want postgres (uid %s)", uid, u.Uid)
		}
	} else if uid != os.Geteuid() {
		t.Errorf("postmaster runs as uid %d; want haven's uid %d", uid, os.Geteuid())
	}

	for sql, want := range map[string]string{
		"SHOW data_checksums":   "on",
		"SHOW wal_level":        "replica",
		"SHOW wal_log_hints":    "on",
		"SHOW hot_standby":      "on",
		"SHOW shared_buffers":   "16MB",
		"SHOW listen_addresses": "127.0.0.1",
		"SHOW port":             strconv.Itoa(s.Port()),
		"SELECT source FROM pg_settings WHERE name = 'wal_level'":          "command line",
		"SELECT sourcefile FROM pg_settings WHERE name = 'shared_buffers'": filepath.Join(s.DataDir(), HavenConf),
	} {
		if got := s.queryString(t, sql); got != want {
			t.Errorf("%s = %q; want %q", sql, got, want)
		}
	}

	// The configured pg_hba.conf line lets a TCP client in.
	cc, err := s.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	cc.Host = "127.0.0.1"
	tcp, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("TCP connection through the configured pg_hba.conf line: %v", err)
	}
	tcp.Close(ctx)

	// Role queries on a primary.
	if r, err := s.IsInRecovery(ctx); err != nil || r {
		t.Errorf("IsInRecovery = %v, %v; want false", r, err)
	}
	pos, err := s.Position(ctx)
	if err != nil || pos.InRecovery || pos.Timeline != 1 || pos.Current == 0 || pos.Received != 0 || pos.Replayed != 0 {
		t.Errorf("Position = %+v, %v; want a primary on timeline 1", pos, err)
	}
	s.exec(t, "CREATE TABLE moves_the_wal ()")
	if later, err := s.Position(ctx); err != nil || later.Current <= pos.Current {
		t.Errorf("Position after a write = %+v, %v; want past %v", later, err, pos.Current)
	}
	id, err := s.SystemIdentifier(ctx)
	if err != nil || id == 0 {
		t.Errorf("SystemIdentifier = %d, %v", id, err)
	}
	cd, err := s.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cd.SystemIdentifier != id || cd.State != "in production" || cd.Timeline != 1 || !cd.DataChecksums || !cd.WALLogHints {
		t.Errorf("ControlData = %+v; want system identifier %d, in production, timeline 1, checksums, wal_log_hints", cd, id)
	}

	// Nobody starts a second postmaster on the data directory: not this
	// Server, not another.
	if err := s.Start(ctx); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("second Start = %v; want ErrAlreadyRunning naming pid %d", err, pid)
	}
	other, err := New(ctx, Config{Bindir: s.conf.Bindir, DataDir: s.DataDir(), Port: freePort(t), SocketDir: s.SocketDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupServer(t, other, &testenv.Buffer{}) })
	if err := other.Start(ctx); !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
		t.Errorf("Start of a second Server on the data directory = %v; want ErrAlreadyRunning naming pid %d", err, pid)
	}
	if other.PID() != 0 {
		t.Fatalf("the second Server started postgres (pid %d)", other.PID())
	}

	// Stop fast, then again, in any mode: nothing to do.
	if err := s.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s)
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after Stop = %v; want nil", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Stop = %v; want ESRCH", pid, err)
	}
	for _, mode := range []StopMode{StopFast, StopSmart, StopImmediate} {
		if err := s.Stop(ctx, mode); err != nil {
			t.Errorf("Stop(%s) after Stop = %v; want nil", mode, err)
		}
	}
	if err := s.Stop(ctx, StopMode(0)); err == nil {
		t.Error("Stop(StopMode(0)) = nil; want an error")
	}
	if cd, err := s.ControlData(ctx); err != nil || cd.State != "shut down" {
		t.Errorf("ControlData after a fast shutdown = %q, %v; want shut down", cd.State, err)
	}
	if err := s.Init(ctx); !errors.Is(err, ErrInitialized) {
		t.Errorf("Init of an initialised data directory = %v; want ErrInitialized", err)
	}

	// A smart shutdown is not held up by haven's own session.
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IsInRecovery(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(ctx, StopSmart); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after a smart Stop = %v; want nil", err)
	}
}

// exec runs sql, which may hold several statements, on a new connection.
func (s *testServer) exec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestServerKilled(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.initStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	s.exec(t, "CREATE TABLE acknowledged (v int); INSERT INTO acknowledged VALUES (42)")

	pid := s.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, s)
	err := s.Wait()
	t.Logf("Wait: %v", err)
	var exit *ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("Wait after kill -9 = %v; want an *ExitError", err)
	}
	ws, ok := exit.State.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL || exit.PID != pid {
		t.Errorf("ExitError = pid %d, %v; want pid %d killed by SIGKILL", exit.PID, exit.State, pid)
	}
	for _, want := range []string{"exited unexpectedly", "signal: killed", strconv.Itoa(pid), "last log lines"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Wait = %q; want %q in it", err, want)
		}
	}
	if s.PID() != 0 {
		t.Errorf("PID() = %d after the kill", s.PID())
	}
	if _, err := s.IsInRecovery(ctx); err == nil {
		t.Error("IsInRecovery answered with postgres dead")
	}

	// Restarted in place: the stale postmaster.pid is explained, crash
	// recovery runs, and the acknowledged row is there.
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if log := s.log.String(); !strings.Contains(log, "postmaster.pid is stale") || !strings.Contains(log, "stale_pid="+strconv.Itoa(pid)) {
		t.Errorf("haven's log does not explain the stale postmaster.pid of pid %d:\n%s", pid, log)
	}
	if tail := strings.Join(s.LogTail(), "\n"); !strings.Contains(tail, "automatic recovery in progress") {
		t.Errorf("postgres's log does not show crash recovery:\n%s", tail)
	}
	if v := s.queryString(t, "SELECT v::text FROM acknowledged"); v != "42" {
		t.Errorf("after crash recovery the row holds %q; want 42", v)
	}
	if r, err := s.IsInRecovery(ctx); err != nil || r {
		t.Errorf("IsInRecovery after the restart = %v, %v; want false", r, err)
	}
	if err := s.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after Stop = %v; want nil", err)
	}
}

func TestStartPortInUse(t *testing.T) {
	t.Parallel()
	_, port := holdPort(t)
	s := newTestServer(t, func(c *Config) { c.Port = port })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	err := s.Start(ctx)
	t.Logf("Start: %v", err)
	for _, want := range []string{"exited before accepting connections", "Address already in use", "could not create any TCP/IP sockets"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start on a port in use = %v; want %q in it", err, want)
		}
	}
	var exit *ExitError
	if err := s.Wait(); !errors.As(err, &exit) || exit.State.ExitCode() == 0 {
		t.Errorf("Wait after the failed start = %v; want an *ExitError with a non-zero status", err)
	}
}

func TestInitRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := os.Mkdir(s.DataDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(s.DataDir(), "notes.txt")
	if err := os.WriteFile(notes, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Init(ctx)
	t.Logf("Init: %v", err)
	if err == nil || !strings.Contains(err.Error(), "not empty and not a PostgreSQL data directory") || !strings.Contains(err.Error(), `"notes.txt"`) {
		t.Errorf("Init of a foreign directory = %v; want it refused, naming notes.txt", err)
	}
	if b, err := os.ReadFile(notes); err != nil || string(b) != "mine" {
		t.Errorf("notes.txt = %q, %v after Init; want it untouched", b, err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrNotInitialized) {
		t.Errorf("Start on a foreign directory = %v; want ErrNotInitialized", err)
	}
	// Before any start, Stop, Done and Wait have nothing to wait for.
	if err := s.Stop(ctx, StopFast); err != nil {
		t.Errorf("Stop before Start = %v", err)
	}
	<-s.Done()
	if err := s.Wait(); err != nil {
		t.Errorf("Wait before Start = %v", err)
	}
}

func TestInitUnreachableDirectory(t *testing.T) {
	testenv.NeedRoot(t) // the run-as user is haven's own user when not root
	t.Parallel()
	s := newTestServer(t, nil)
	closed := filepath.Join(filepath.Dir(s.DataDir()), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := s.conf
	cfg.DataDir = filepath.Join(closed, "data")
	inner, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = inner.Init(context.Background())
	t.Logf("Init: %v", err)
	if err == nil || !strings.Contains(err.Error(), "cannot reach it: "+closed+" is mode 0700") {
		t.Errorf("Init under a root-only directory = %v; want the directory named", err)
	}
}

// CheckDirectories names, before anything starts, an existing directory
// that keeps the postgres user from its data or socket directory, with the
// chmod to run; directories that do not exist yet are haven's to create.
func TestCheckDirectories(t *testing.T) {
	testenv.NeedRoot(t) // the run-as user is haven's own user when not root
	_, err := user.Lookup("postgres")
	testenv.Need(t, err == nil, "needs the postgres user (apt-get install postgresql)")
	base := testenv.SearchableDir(t)
	closed := filepath.Join(base, "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CheckDirectories(Config{DataDir: filepath.Join(base, "db1", "pg")}); err != nil {
		t.Errorf("a data dir whose parent does not exist yet: %v, want nil", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{DataDir: filepath.Join(closed, "db1", "pg")}, "pg: data dir " + closed + "/db1/pg: user postgres"},
		{Config{DataDir: filepath.Join(base, "pg"), SocketDir: filepath.Join(closed, "run")}, "pg: socket dir " + closed + "/run: user postgres"},
	} {
		err := CheckDirectories(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), closed+" is mode 0700") || !strings.HasSuffix(err.Error(), "chmod o+x "+closed) {
			t.Errorf("CheckDirectories(%+v) = %v\nwant %q, naming %s and ending with its chmod", tc.cfg, err, tc.want, closed)
		}
	}
}

// gone reports whether pid has exited (a zombie counts: nobody may reap
// the postmaster's orphans in a container).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// waitGone polls until every process in pids has exited, failing with the
// state of those left.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	waitFor(t, "processes of postgres gone", func() (string, bool) {
		var left []string
		for _, p := range pids {
			if !gone(p) {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
				left = append(left, strings.TrimSpace(string(b)))
			}
		}
		return "\n" + strings.Join(left, "\n"), len(left) == 0
	})
}

func TestStopEscalates(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, nil)
	s.initStart(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ended, end := context.WithCancel(ctx)
	end()

	// A smart shutdown waits for this client: Stop runs out of time and
	// escalates to an immediate shutdown.
	client, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(ctx)
	err = s.Stop(ended, StopSmart)
	t.Logf("Stop: %v", err)
	if err == nil || !strings.Contains(err.Error(), "smart shutdown did not finish") || !strings.Contains(err.Error(), "immediate shutdown") {
		t.Errorf("Stop(smart) with a client and no time = %v; want an escalation to an immediate shutdown", err)
	}
	waitDone(t, s)
	if err := s.Wait(); err != nil {
		t.Errorf("Wait after an escalated Stop = %v; want nil: the exit was asked for", err)
	}

	// A frozen postmaster ignores everything but SIGKILL, which reaches
	// its children too.
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	kids := childrenOf(pid)
	if len(kids) == 0 {
		t.Fatalf("postmaster %d has no children", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	err = s.Stop(ended, StopFast)
	t.Logf("Stop: %v", err)
	if err == nil || !strings.Contains(err.Error(), "SIGKILL") {
		t.Errorf("Stop(fast) of a stopped postmaster = %v; want it ended with SIGKILL", err)
	}
	// Done closes once every process has closed its end of the log pipe;
	// the kernel may still be finishing their exit.
	waitGone(t, append(kids, pid))

	// And it starts again, after crash recovery.
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if v := s.queryString(t, "SELECT 'up'"); v != "up" {
		t.Errorf("SELECT 'up' = %q", v)
	}
}

// TestStartCutShortShutsDownCleanly: when Start's ctx ends before haven's
// own session gets in, postgres is stopped with a fast shutdown, and the
// data directory is left shut down cleanly, a replica's "in recovery". An
// immediate shutdown would leave it to crash recovery, which a rewind runs
// as a primary: its checkpoints would be WAL that no other node has, and
// the node would need pg_rewind to follow anyone. Here haven's session
// never gets in (the database postgres is gone), while postgres itself runs.
func TestStartCutShortShutsDownCleanly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		replica bool
		running string // pg_control's state while postgres runs
		want    string
	}{
		{"a primary", false, "in production", "shut down"},
		{"a replica", true, "in archive recovery", "shut down in recovery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t, func(c *Config) { c.Name = "db2" })
			s.initStart(t)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			cfg, err := s.ConnConfig()
			if err != nil {
				t.Fatal(err)
			}
			cfg.Database = "template1"
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.dropConn() // haven's own session is on the database postgres
			if _, err := conn.Exec(ctx, "DROP DATABASE postgres"); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
			if err := s.Stop(ctx, StopFast); err != nil {
				t.Fatal(err)
			}
			if tc.replica {
				if err := s.SetStandby(Upstream{}); err != nil {
					t.Fatal(err)
				}
			}

			cut, stop := context.WithCancel(ctx)
			started := make(chan error, 1)
			go func() { started <- s.Start(cut) }()
			testenv.Poll(t, testTimeout, "postgres running ("+tc.running+") and accepting connections", func() (bool, string) {
				cd, err := s.ControlData(ctx)
				ready := strings.Contains(strings.Join(s.LogTail(), "\n"), "ready to accept")
				return err == nil && cd.State == tc.running && ready, fmt.Sprintf("%q, %v, ready %v", cd.State, err, ready)
			})
			stop()
			err = <-started
			t.Logf("Start: %v", err)
			if err == nil || !strings.Contains(err.Error(), "a fast shutdown") {
				t.Errorf("Start cut short = %v; want an error that says it stopped postgres with a fast shutdown", err)
			}
			cd, err := s.ControlData(ctx)
			if err != nil || cd.State != tc.want {
				t.Errorf("pg_control after a start cut short: %q, %v; want %q", cd.State, err, tc.want)
			}
		})
	}
}

// TestSupervisorHelper is the haven process of TestPostgresDiesWithHaven:
// it starts postgres and waits, until it is killed.
func TestSupervisorHelper(t *testing.T) {
	dataDir := os.Getenv("HAVEN_PG_HELPER_DATADIR")
	if dataDir == "" {
		t.Skip("the helper process of TestPostgresDiesWithHaven")
	}
	port, err := strconv.Atoi(os.Getenv("HAVEN_PG_HELPER_PORT"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := New(ctx, Config{Bindir: os.Getenv("HAVEN_PG_HELPER_BINDIR"), DataDir: dataDir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("postmaster pid %d\n", s.PID())
	<-s.Done()
}

// TestPostgresDiesWithHaven: when haven is killed, postgres shuts down
// instead of running on unsupervised and unfenced.
func TestPostgresDiesWithHaven(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, func(c *Config) { c.ListenAddresses = nil })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}

	helper := exec.Command(os.Args[0], "-test.run=^TestSupervisorHelper$", "-test.count=1")
	helper.Env = append(os.Environ(),
		"HAVEN_PG_HELPER_DATADIR="+s.DataDir(),
		"HAVEN_PG_HELPER_PORT="+strconv.Itoa(s.Port()),
		"HAVEN_PG_HELPER_BINDIR="+s.Binaries().Dir)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	helper.Stderr = helper.Stdout
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	var postmaster atomic.Int64
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		if pid := int(postmaster.Load()); pid != 0 && !gone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	found := make(chan int, 1)
	var seen testenv.Buffer
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(&seen, sc.Text())
			var pid int
			if _, err := fmt.Sscanf(sc.Text(), "postmaster pid %d", &pid); err == nil {
				postmaster.Store(int64(pid))
				found <- pid
			}
		}
		close(found)
	}()
	var pid int
	select {
	case p, ok := <-found:
		if !ok {
			t.Fatalf("the helper ended without starting postgres:\n%s", seen.String())
		}
		pid = p
	case <-ctx.Done():
		t.Fatalf("the helper did not start postgres within %v:\n%s", testTimeout, seen.String())
	}
	kids := childrenOf(pid)

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, append(kids, pid))

	// The kernel asked for a fast shutdown: a clean one, no crash recovery.
	cd, err := s.ControlData(ctx)
	if err != nil || cd.State != "shut down" {
		t.Errorf("ControlData after haven died = %q, %v; want shut down", cd.State, err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
}
