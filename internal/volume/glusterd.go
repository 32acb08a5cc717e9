package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Directories GlusterFS's helpers use whatever glusterd is told: the
// self-heal daemons' control sockets and glfsheal's log.
var glusterFixedDirs = []string{"/var/run/gluster", "/var/log/glusterfs"}

// lockTimer is glusterd's lock-timer, in seconds.
const lockTimer = 20

// stopTimeout is how long a stopping glusterd, brick or self-heal daemon
// gets after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// Glusterd runs a storage node's glusterd: the management daemon that
// holds the trusted pool and the volumes' definitions and starts the
// node's bricks and self-heal daemon. Everything it keeps is under Dir, so
// that several run on one machine (tests) and nothing is in /var/lib/glusterd:
//
//	Dir/state  glusterd's working directory (its UUID, peers, volumes)
//	Dir/run    its socket and its daemons' pid files
//	Dir/log    its log, the bricks' and the self-heal daemon's
type Glusterd struct {
	dir string
	log *slog.Logger
	bin string
}

// NewGlusterd checks that glusterd and the gluster CLI are installed; it
// starts nothing.
func NewGlusterd(dir string, log *slog.Logger) (*Glusterd, error) {
	bin, err := exec.LookPath("glusterd")
	if err != nil {
		return nil, errors.New("volume: glusterd is not installed: install glusterfs-server (Debian: apt-get install glusterfs-server)")
	}
	if _, err := exec.LookPath("gluster"); err != nil {
		return nil, errors.New("volume: the gluster command is not installed: install glusterfs-server")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Glusterd{dir: dir, log: log.With("component", "glusterd"), bin: bin}, nil
}

// Socket is glusterd's command socket.
func (g *Glusterd) Socket() string { return filepath.Join(g.dir, "run", "glusterd.sock") }

// RunDir holds glusterd's socket and its daemons' pid files.
func (g *Glusterd) RunDir() string { return filepath.Join(g.dir, "run") }

// CLI is the gluster command line against this glusterd.
func (g *Glusterd) CLI() *CLI { return &CLI{Sock: g.Socket()} }

// LogDir holds glusterd's logs and its daemons'.
func (g *Glusterd) LogDir() string { return filepath.Join(g.dir, "log") }

func (g *Glusterd) prepare() error {
	for _, d := range append([]string{filepath.Join(g.dir, "state"), filepath.Join(g.dir, "run"), g.LogDir()}, glusterFixedDirs...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("volume: %w", err)
		}
	}
	return nil
}

func (g *Glusterd) command(ctx context.Context) *exec.Cmd {
	opt := func(k, v string) []string { return []string{"--xlator-option", "management." + k + "=" + v} }
	args := []string{"-N"}
	args = append(args, opt("working-directory", filepath.Join(g.dir, "state"))...)
	args = append(args, opt("run-directory", filepath.Join(g.dir, "run"))...)
	args = append(args, opt("glusterd-sockfile", g.Socket())...)
	// The bricks' and daemons' logs go beside glusterd's, not to
	// /var/log/glusterfs (the option's name is the one GlusterFS's own
	// multi-node tests use for this).
	args = append(args, opt("cluster-test-mode", g.LogDir())...)
	// A volume lock whose holder died is released after this long
	// (GlusterFS's default is 180s, three minutes of "another
	// transaction is in progress" for every command after a glusterd is
	// killed mid-operation); an operation holds it for milliseconds.
	args = append(args, opt("lock-timer", strconv.Itoa(lockTimer))...)
	args = append(args, "-l", filepath.Join(g.LogDir(), "glusterd.log"), "-p", filepath.Join(g.dir, "run", "glusterd.pid"))
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	return cmd
}

// Run keeps glusterd running until ctx ends, restarting it when it exits,
// then stops it and the daemons it started (bricks, self-heal daemon): the
// agent runs the node's GlusterFS, so a stopped agent leaves nothing
// behind, as a systemd unit's control group would.
func (g *Glusterd) Run(ctx context.Context) error {
	if err := g.prepare(); err != nil {
		return err
	}
	g.stopDaemons() // a killed agent's leftovers: glusterd restarts the bricks
	backoff := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		cmd := g.command(ctx)
		out, err := os.OpenFile(filepath.Join(g.LogDir(), "glusterd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("volume: %w", err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			out.Close()
			return fmt.Errorf("volume: start glusterd: %w", err)
		}
		g.log.Info("glusterd started", "pid", cmd.Process.Pid, "socket", g.Socket())
		err = cmd.Wait()
		out.Close()
		if ctx.Err() != nil {
			break
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		g.log.Error("glusterd exited: restarting it", "err", err, "in", backoff, "log", filepath.Join(g.LogDir(), "glusterd.log"))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	g.stopDaemons()
	return nil
}

// stopDaemons stops the bricks and self-heal daemons glusterd started, by
// the pid files it keeps under Dir/run.
func (g *Glusterd) stopDaemons() {
	var pids []int
	_ = filepath.WalkDir(filepath.Join(g.dir, "run"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pid") || filepath.Base(path) == "glusterd.pid" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && isGluster(pid) {
			pids = append(pids, pid)
		}
		return nil
	})
	stopPIDs(pids, stopTimeout)
}

// isGluster reports whether pid is a GlusterFS process (a pid file can
// outlive its process, and its number be reused).
func isGluster(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.HasPrefix(string(b), "gluster")
}

// stopPIDs sends SIGTERM, waits up to timeout, then SIGKILLs what is left.
func stopPIDs(pids []int, timeout time.Duration) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
