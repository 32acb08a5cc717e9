package volume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fuseType is the file system type of a GlusterFS FUSE mount.
const fuseType = "fuse.glusterfs"

// probeDir is the directory, at the volume's root, where each mount node
// writes its probe file.
const probeDir = ".haven"

// MountConfig is one node's mount of a volume.
type MountConfig struct {
	Volume string
	Node   string
	// Path is the mount point.
	Path string
	// Servers are the storage nodes' addresses: the client fetches the
	// volume's definition from the first that answers (the others are
	// its backup volfile servers), then talks to every brick.
	Servers []string
	// LogFile is the client's log (default: GlusterFS's own, under
	// /var/log/glusterfs).
	LogFile string
	Logger  *slog.Logger
}

// MountStatus is a mount's state: its client and its last probe.
type MountStatus struct {
	Volume  string `json:"volume"`
	Path    string `json:"path"`
	Mounted bool   `json:"mounted"`
	// Healthy is the last probe's verdict, Why its reason when not.
	Healthy bool   `json:"healthy"`
	Why     string `json:"why,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// Restarts counts the successful mounts after the first: each one
	// replaced a client that was gone.
	Restarts int       `json:"restarts"`
	Probed   time.Time `json:"probed"`
}

// Mount keeps a volume mounted on an application node with GlusterFS's
// FUSE client, mounting it again when the client exits, and answers
// whether the mount is usable (Probe) for the balancer's volume check.
type Mount struct {
	cfg MountConfig
	log *slog.Logger
	bin string

	mu       sync.Mutex
	pid      int // the client this agent started, 0 for an adopted mount
	mounts   int
	restarts int
	last     MountStatus
	inflight *probeRun // the running probe, nil when none runs
}

// NewMount checks that the GlusterFS client is installed; it starts
// nothing.
func NewMount(cfg MountConfig) (*Mount, error) {
	bin, err := exec.LookPath("glusterfs")
	if err != nil {
		return nil, errors.New("volume: the GlusterFS client (glusterfs) is not installed: install glusterfs-client")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("volume: mount %s needs FUSE: %w (load the fuse module)", cfg.Volume, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mount{cfg: cfg, bin: bin, log: cfg.Logger.With("component", "volume", "volume", cfg.Volume, "mount", cfg.Path)}
	m.last = MountStatus{Volume: cfg.Volume, Path: cfg.Path, Why: "not probed yet"}
	return m, nil
}

// Run keeps the volume mounted until ctx ends: it mounts it when it is not
// mounted, and mounts it again when its client is gone (the mount point
// answers "transport endpoint is not connected"). A mount whose client
// runs but hangs (waiting out a server's ping timeout) is left to it, and
// reported by Probe. The mount outlives the agent, as an fstab mount
// would: the application keeps its files while haven restarts.
func (m *Mount) Run(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		wait := time.Second
		if m.needsMount() {
			m.unmountStale()
			if err := os.MkdirAll(m.cfg.Path, 0o755); err != nil {
				return fmt.Errorf("volume: mount point: %w", err)
			}
			if err := m.mount(ctx); err != nil {
				m.log.Error("volume not mounted: trying again", "event", "volume", "err", err, "in", backoff)
				wait, backoff = backoff, min(2*backoff, 15*time.Second)
			} else {
				backoff = time.Second
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// needsMount reports whether the mount point has no GlusterFS mount, or
// one whose client is gone. A mount that answers "transport endpoint is
// not connected" while its client runs is one whose client reaches no
// brick yet: it is left alone (Probe reports it).
func (m *Mount) needsMount() bool {
	mounted, _, err := mountState(m.cfg.Path)
	if err != nil || !mounted {
		return true
	}
	return clientPID(m.cfg.Path) == 0
}

// clientPID finds the GlusterFS client of the mount on path in this
// process's mount namespace (the agent's: others may use the same path), or
// returns 0.
func clientPID(path string) int {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return 0
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	clean := filepath.Clean(path)
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		proc := "/proc/" + d.Name()
		comm, err := os.ReadFile(proc + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "glusterfs" {
			continue
		}
		if ns, err := os.Readlink(proc + "/ns/mnt"); err != nil || ns != self {
			continue
		}
		cmdline, err := os.ReadFile(proc + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) > 0 && filepath.Clean(args[len(args)-1]) == clean && alive(pid) {
			return pid
		}
	}
	return 0
}

// mount starts a client and waits until its mount is in the mount table.
// The client runs in a process group of its own and is not stopped with
// the agent.
func (m *Mount) mount(ctx context.Context) error {
	args := []string{"-N", "--volfile-id=" + m.cfg.Volume, "--process-name=fuse"}
	for _, s := range m.cfg.Servers {
		args = append(args, "--volfile-server="+s)
	}
	if m.cfg.LogFile != "" {
		args = append(args, "-l", m.cfg.LogFile)
	}
	args = append(args, m.cfg.Path)
	cmd := exec.Command(m.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start glusterfs: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	m.mu.Lock()
	m.pid = cmd.Process.Pid
	m.mu.Unlock()
	deadline := time.After(mountTimeout)
	for {
		if mounted, _, _ := mountState(m.cfg.Path); mounted {
			m.mu.Lock()
			if m.mounts > 0 {
				m.restarts++ // a mount that replaced one that was gone
			}
			m.mounts++
			m.mu.Unlock()
			m.log.Info("volume mounted", "event", "volume", "pid", cmd.Process.Pid, "servers", strings.Join(m.cfg.Servers, ","))
			go func() {
				err := <-done
				m.mu.Lock()
				if m.pid == cmd.Process.Pid {
					m.pid = 0
				}
				m.mu.Unlock()
				m.log.Warn("volume client exited", "event", "volume", "err", err, "output", lastLine(strings.TrimSpace(out.String())))
			}()
			return nil
		}
		select {
		case err := <-done:
			m.mu.Lock()
			m.pid = 0
			m.mu.Unlock()
			return fmt.Errorf("glusterfs exited before mounting: %v: %s", err, lastLine(strings.TrimSpace(out.String())))
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			m.clearPID(cmd.Process.Pid)
			return ctx.Err()
		case <-deadline:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			m.clearPID(cmd.Process.Pid)
			return fmt.Errorf("glusterfs did not mount within %s (no server gave the volume's definition?): %s", mountTimeout, lastLine(strings.TrimSpace(out.String())))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *Mount) clearPID(pid int) {
	m.mu.Lock()
	if m.pid == pid {
		m.pid = 0
	}
	m.mu.Unlock()
}

// Mounted reports whether the volume is mounted here with its client
// behind it (for the copy, which must not walk the directory under a mount
// that is gone).
func (m *Mount) Mounted() error {
	mounted, _, err := mountState(m.cfg.Path)
	switch {
	case err != nil:
		return err
	case !mounted:
		return fmt.Errorf("no GlusterFS mount on %s", m.cfg.Path)
	case clientPID(m.cfg.Path) == 0:
		return fmt.Errorf("the mount on %s has no client", m.cfg.Path)
	}
	return nil
}

// mountTimeout bounds a mount: fetching the volume's definition and
// connecting to the bricks take milliseconds when the servers answer.
const mountTimeout = 20 * time.Second

// lockedBuffer is a client's output, written by exec's copier and read by
// the log.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// unmountStale detaches a GlusterFS mount left on the mount point by a
// client that is gone: its mount point answers "transport endpoint is not
// connected" to everyone until it is unmounted.
func (m *Mount) unmountStale() {
	if mounted, _, err := mountState(m.cfg.Path); err == nil && mounted {
		if err := syscall.Unmount(m.cfg.Path, syscall.MNT_DETACH); err == nil {
			m.log.Warn("a stale mount was left on the mount point: detached it", "event", "volume")
		}
	}
}

// mountState reads this process's mount table: whether a GlusterFS mount
// is on path, and whether it is read-only.
func mountState(path string) (mounted, readOnly bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, false, err
	}
	defer f.Close()
	return parseMountinfo(f, path)
}

// parseMountinfo finds the last GlusterFS mount on path in a mountinfo
// table (the one in force when mounts are stacked).
func parseMountinfo(r io.Reader, path string) (mounted, readOnly bool, err error) {
	clean := filepath.Clean(path)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 6 || sep < 6 || sep+1 >= len(fields) {
			continue
		}
		if unescapeMount(fields[4]) != clean {
			continue
		}
		mounted = fields[sep+1] == fuseType
		readOnly = mounted && slices.Contains(strings.Split(fields[5], ","), "ro")
	}
	return mounted, readOnly, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Status returns the client's state and the last probe's verdict.
func (m *Mount) Status() MountStatus {
	m.mu.Lock()
	st := m.last
	st.PID, st.Restarts = m.pid, m.restarts
	m.mu.Unlock()
	if st.PID == 0 {
		st.PID = clientPID(m.cfg.Path) // a mount adopted from an earlier agent
	}
	return st
}

// probeRun is one probe: its verdict is set before done is closed.
type probeRun struct {
	done    chan struct{}
	started time.Time
	err     error
}

// Probe checks that the mount is usable: mounted, not read-only, and that
// a file written and synced through it returns within ctx's deadline. One
// probe runs at a time: a caller that finds one running waits for it, and
// a probe that never returns (a hung mount) makes every later caller fail
// with how long it has hung.
func (m *Mount) Probe(ctx context.Context) error {
	m.mu.Lock()
	run := m.inflight
	if run == nil {
		run = &probeRun{done: make(chan struct{}), started: time.Now()}
		m.inflight = run
		go m.probe(run)
	}
	m.mu.Unlock()
	select {
	case <-run.done:
		return run.err
	case <-ctx.Done():
		// The caller's verdict only: the probe goes on and records its
		// own when it ends.
		return fmt.Errorf("stale: the mount has not answered a write for %s", time.Since(run.started).Round(time.Millisecond))
	}
}

func (m *Mount) probe(run *probeRun) {
	run.err = m.check()
	why := ""
	if run.err != nil {
		why = run.err.Error()
	}
	m.record(run.err == nil, why)
	m.mu.Lock()
	m.inflight = nil
	m.mu.Unlock()
	close(run.done)
}

func (m *Mount) record(healthy bool, why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.last.Healthy
	seen := !m.last.Probed.IsZero()
	mounted, _, _ := mountState(m.cfg.Path)
	m.last = MountStatus{Volume: m.cfg.Volume, Path: m.cfg.Path, Mounted: mounted, Healthy: healthy, Why: why, Probed: time.Now()}
	switch {
	case healthy && !was && seen:
		m.log.Info("mount is usable again", "event", "volume")
	case !healthy && (was || !seen):
		m.log.Warn("mount is not usable", "event", "volume", "why", why)
	}
}

// check writes and syncs the node's probe file through the mount.
func (m *Mount) check() error {
	mounted, readOnly, err := mountState(m.cfg.Path)
	switch {
	case err != nil:
		return fmt.Errorf("read the mount table: %w", err)
	case !mounted:
		return fmt.Errorf("not mounted: no GlusterFS mount on %s", m.cfg.Path)
	case readOnly:
		return errors.New("read-only: the mount is read-only")
	}
	dir := filepath.Join(m.cfg.Path, probeDir)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return probeError(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "probe-"+m.cfg.Node), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return probeError(err)
	}
	_, err = f.WriteString(time.Now().UTC().Format(time.RFC3339Nano) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return probeError(err)
	}
	return nil
}

// probeError says what a failed probe write means for the volume.
func probeError(err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("read-only: the volume refuses writes here, its client reaches fewer than a quorum of bricks: %w", err)
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("stale: the mount's client reaches no quorum of bricks, or is gone: %w", err)
	}
	return fmt.Errorf("write through the mount: %w", err)
}
