package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host is one machine of a Net: a network namespace with one interface on
// its segment (the router has two).
type Host struct {
	// Name is the host's name from Options.
	Name string
	// Namespace is the name of the host's network namespace, as ip netns
	// shows it.
	Namespace string
	// Segment is the number of the host's segment, 1, 2 or 3; the router's
	// is 1.
	Segment int
	// Addr is the host's IPv4 address on Iface.
	Addr netip.Addr
	// Prefix is Addr with the length of its segment, as ip addr shows it:
	// 198.18.1.11/24.
	Prefix netip.Prefix
	// MAC is the hardware address of Iface.
	MAC net.HardwareAddr
	// Iface is the name of the host's interface, "eth0". The router also
	// has eth1 on segment 2, with address 198.18.2.1, and eth2 on segment
	// 3, with 198.18.3.1, when those segments have hosts.
	Iface string

	owner *Net
	ports []port // the switch ends of the host's cables
}

// port is the switch end of a cable: a bridge port.
type port struct {
	segment int
	name    string
}

// String returns the host's name.
func (h *Host) String() string { return h.Name }

// Command returns a command that runs name with args inside the host's
// network namespace, through ip netns exec. ip execs the program, so once
// started, cmd.Process.Pid is the program's own PID. The command gets
// SIGKILL if the test process dies first. Unlike Start, the Net does not
// track it, but Close kills it if it is still running.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace, name}, args...)...)
	// The signal comes when the thread that forked the command exits; Go
	// keeps its threads for the life of the process, except ones that a
	// goroutine left locked: good enough for a test's children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Start starts name with args inside the host's network namespace, in a
// process group of its own, and tracks it until Close. Its standard output
// and error go to a buffer that Output returns. When ctx ends, the process
// group is killed.
func (h *Host) Start(ctx context.Context, name string, args ...string) (*Proc, error) {
	cmd := h.Command(ctx, name, args...)
	p := &Proc{Host: h, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = p.Kill
	// A child that inherited the output pipe must not hold up Wait.
	cmd.WaitDelay = time.Second

	n := h.owner
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("netlab: start %s on %s: net is closed", name, h.Name)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("netlab: start %s on %s: %w", name, h.Name, err)
	}
	p.PID = cmd.Process.Pid
	n.procs = append(n.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Proc is a process started by Host.Start.
type Proc struct {
	// Host is where the process runs.
	Host *Host
	// PID is the process's ID, and the ID of its process group.
	PID int

	name string
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error // of cmd.Wait, set before done is closed
}

// String describes the process: "n1: sleep (pid 4242)".
func (p *Proc) String() string {
	return fmt.Sprintf("%s: %s (pid %d)", p.Host.Name, p.name, p.PID)
}

// Signal sends sig to the process alone, not to its children.
func (p *Proc) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("netlab: %s %s: %w", unix.SignalName(sig), p, err)
	}
	return nil
}

// Freeze stops the process and the rest of its process group with SIGSTOP,
// like a machine that hangs: sockets stay open, nothing answers.
func (p *Proc) Freeze() error { return p.signalGroup(syscall.SIGSTOP) }

// Thaw resumes a frozen process group with SIGCONT.
func (p *Proc) Thaw() error { return p.signalGroup(syscall.SIGCONT) }

// Kill kills the process and the rest of its process group with SIGKILL,
// frozen or not. Killing a process that has exited is not an error.
func (p *Proc) Kill() error {
	err := p.signalGroup(syscall.SIGKILL)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func (p *Proc) signalGroup(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("netlab: %s %s: %w", unix.SignalName(sig), p, os.ErrProcessDone)
	default:
	}
	if err := syscall.Kill(-p.PID, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			err = os.ErrProcessDone
		}
		return fmt.Errorf("netlab: %s %s: %w", unix.SignalName(sig), p, err)
	}
	return nil
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait
// returned: nil for exit status 0.
func (p *Proc) Wait() error {
	<-p.done
	return p.err
}

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output returns what the process has written to its standard output and
// standard error so far.
func (p *Proc) Output() string { return p.out.String() }

// Outputs returns the output of each of procs, its last max bytes, under a
// line naming its host: what a failing test shows of the daemons it ran.
func Outputs(max int, procs ...*Proc) string {
	var b strings.Builder
	for _, p := range procs {
		out := p.Output()
		if len(out) > max {
			out = out[len(out)-max:]
		}
		fmt.Fprintf(&b, "--- %s (last %d bytes at most) ---\n%s\n", p, max, out)
	}
	return b.String()
}

// stop kills a running process group, thawing it first, and waits up to
// timeout for the process to be reaped.
func (p *Proc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = syscall.Kill(-p.PID, syscall.SIGCONT) // it may exit meanwhile
	_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s: still running %v after SIGKILL", p, timeout)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Do runs fn on a thread that is inside the host's network namespace, and
// returns its error. Sockets that fn creates belong to the namespace for
// their whole life and may be used from any goroutine afterwards. Goroutines
// that fn starts do not run in the namespace, and neither may name
// resolution: give addresses as IP literals. Should the thread fail to
// return to its namespace, Do says so and keeps the calling goroutine on
// that thread until the goroutine exits, when the runtime ends the thread.
func (h *Host) Do(fn func() error) error {
	if err := doIn(h.Namespace, fn); err != nil {
		return fmt.Errorf("netlab: on %s: %w", h.Name, err)
	}
	return nil
}

// doIn runs fn on the current goroutine's thread, moved into the named
// namespace and back. If the thread cannot be moved back, doIn says so and
// leaves the goroutine locked to it, so that the runtime ends the thread
// with the goroutine instead of reusing it.
func doIn(ns string, fn func() error) (err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	defer func() {
		if rerr := netns.Set(orig); rerr != nil {
			err = errors.Join(err, fmt.Errorf("return from namespace %s: %w", ns, rerr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// PIDs are the processes in the host's namespace, but this process:
// every daemon a test or benchmark started there and their children.
func (h *Host) PIDs() ([]int, error) {
	out, err := output(context.Background(), "", "ip", "netns", "pids", h.Namespace)
	if err != nil {
		return nil, err
	}
	return parsePIDs(out), nil
}

// parsePIDs reads ip netns pids' output, without pid 1 and this process.
func parsePIDs(out string) []int {
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// DialContext connects to address from inside the host, like
// net.Dialer.DialContext. address must hold an IP literal.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen listens inside the host, like net.Listen.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket listens inside the host, like net.ListenPacket.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := h.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Ping sends one ICMP echo request from the host to dst and waits for the
// reply until ctx ends. It needs no ping program.
func (h *Host) Ping(ctx context.Context, dst netip.Addr) error {
	if err := h.ping(ctx, dst); err != nil {
		return fmt.Errorf("netlab: ping %s from %s: %w", dst, h.Name, err)
	}
	return nil
}

func (h *Host) ping(ctx context.Context, dst netip.Addr) error {
	if !dst.Is4() {
		return errors.New("not an IPv4 address")
	}
	c, err := h.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()

	// Echo request: type 8, code 0, checksum, identifier, sequence, data.
	req := make([]byte, 8+16)
	req[0] = 8
	rand.Read(req[4:6])
	req[7] = 1
	rand.Read(req[8:])
	sum := checksum(req)
	req[2], req[3] = byte(sum>>8), byte(sum)
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("no reply: %w", context.Cause(ctx))
			}
			return err
		}
		ipa, ok := from.(*net.IPAddr)
		if !ok || !ipa.IP.Equal(dst.AsSlice()) || n != len(req) || buf[0] != 0 {
			continue // not an echo reply from dst
		}
		if bytes.Equal(buf[4:n], req[4:]) {
			return nil
		}
	}
}

// checksum is the Internet checksum of b (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
