package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sdListener stands in for systemd's notification socket. It reads
// every notification as it comes, as systemd does: a socket left unread
// while the test waits for something else fills up, and the agent's
// writes time out.
type sdListener struct {
	t    *testing.T
	msgs chan string
}

func listenNotify(t *testing.T) (*sdListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := &sdListener{t: t, msgs: make(chan string, 10000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case l.msgs <- string(buf[:n]):
			default: // the test stopped reading: drop
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return l, path
}

// next returns the next notification that starts with one of prefixes,
// skipping others (the watchdog's keep-alives), within timeout.
func (l *sdListener) next(timeout time.Duration, prefixes ...string) string {
	l.t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case msg := <-l.msgs:
			for _, p := range prefixes {
				if strings.HasPrefix(msg, p) {
					return msg
				}
			}
			if len(seen) < 20 {
				seen = append(seen, msg)
			}
		case <-deadline:
			l.t.Fatalf("no %q from the agent within %s (got %q)", prefixes, timeout, seen)
		}
	}
}

// TestAgentUnderSystemd runs the agent as systemd's Type=notify unit does,
// with a notification socket and a watchdog: READY=1 comes once the
// balancer serves, keep-alives follow (their spacing is TestWatchdog's), a
// SIGHUP is announced as RELOADING=1 then READY=1, so is haven restart
// (the same process executing itself again), and SIGTERM as
// STOPPING=1 before a clean exit. The same agent without the socket runs
// as before (every other test).
func TestAgentUnderSystemd(t *testing.T) {
	sd, socket := listenNotify(t)
	backend := startBackend(t, "app1")
	admin, listen := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "haven.yaml")
	if err := os.WriteFile(cfg, []byte(e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: backend}}, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", socket)
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("HAVEN_CONFIG", cfg) // the unit's -c, given by environment
	p := start(t, "agent", "-n", "lb1")

	sd.next(60*time.Second, "READY=1")
	c, err := net.DialTimeout("tcp", listen, 2*time.Second)
	if err != nil {
		t.Fatalf("READY=1 before the balancer listens on %s: %v", listen, err)
	}
	c.Close()
	// Two keep-alives within the 1 s period and its margin.
	for range 2 {
		sd.next(3*time.Second, "WATCHDOG=1")
	}

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := sd.next(10*time.Second, "RELOADING=1", "READY=1"); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("after SIGHUP systemd got %q first, want RELOADING=1 with MONOTONIC_USEC", got)
	}
	sd.next(30*time.Second, "READY=1")

	// haven restart: the agent executes itself again in the same process,
	// announced as a reload (systemd sees no stop), and talks to systemd
	// afterwards as before: READY=1, then keep-alives on the same period.
	r := haven(t, 2*time.Minute, "restart", "-c", cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "lb1: back after") {
		t.Fatalf("haven restart: %s", r)
	}
	if got := sd.next(10*time.Second, "RELOADING=1", "READY=1", "STOPPING=1"); !strings.HasPrefix(got, "RELOADING=1\n") {
		t.Fatalf("on haven restart systemd got %q first, want RELOADING=1", got)
	}
	sd.next(30*time.Second, "READY=1")
	for range 2 {
		sd.next(3*time.Second, "WATCHDOG=1")
	}
	if !strings.Contains(p.stderr.String(), "systemd=true watchdog=1s restarted=true") {
		t.Errorf("the restarted agent's start line does not say it runs under systemd with its watchdog:\n%s", p.stderr.String())
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sd.next(10*time.Second, "STOPPING=1")
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(p.stderr.String(), "systemd=true") {
		t.Errorf("the agent's start line does not say it runs under systemd:\n%s", p.stderr.String())
	}
}
