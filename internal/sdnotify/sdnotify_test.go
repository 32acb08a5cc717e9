package sdnotify

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen stands in for systemd: a datagram socket at name, whose messages
// the test reads.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("systemd got nothing: %v", err)
	}
	return string(buf[:n])
}

// TestNotify: every state reaches the socket systemd named, by path or
// abstract name, and processes the agent starts afterwards do not see the
// socket (they would notify in its name).
func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@haven-sdnotify-test-" + strconv.Itoa(os.Getpid())} {
		sd := listen(t, name)
		t.Setenv("NOTIFY_SOCKET", name)
		n := FromEnv()
		if _, set := os.LookupEnv("NOTIFY_SOCKET"); set || !n.Enabled() {
			t.Fatalf("%s: NOTIFY_SOCKET still set (%v) or the notifier off (%v)", name, set, n.Enabled())
		}
		for _, tc := range []struct {
			send func() error
			want string
		}{
			{n.Ready, "READY=1"},
			{n.Reloading, "RELOADING=1\nMONOTONIC_USEC="},
			{func() error { return n.Status("primary, 2 replicas streaming") }, "STATUS=primary, 2 replicas streaming"},
			{n.Stopping, "STOPPING=1"},
		} {
			if err := tc.send(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := read(t, sd); !strings.HasPrefix(got, tc.want) {
				t.Errorf("%s: systemd got %q, want %q", name, got, tc.want)
			}
		}
	}
}

// TestNotifyOutsideSystemd: without NOTIFY_SOCKET nothing is sent and
// nothing fails; a socket nobody listens on is an error that names it.
func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if n := FromEnv(); n.Enabled() || n.Ready() != nil {
		t.Fatal("a notifier outside systemd is on, or fails")
	}
	gone := filepath.Join(t.TempDir(), "gone")
	t.Setenv("NOTIFY_SOCKET", gone)
	if err := FromEnv().Ready(); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("notify a socket nobody listens on: %v, want an error naming it", err)
	}
}

// TestWatchdogInterval: the period is systemd's for this pid only, and a
// malformed one is an error, not a watchdog that never fires.
func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		bad       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, false},
		{"30000000", me, 30 * time.Second, false},
		{"30000000", "1", 0, false}, // another process's watchdog
		{"thirty", "", 0, true},
		{"-5", me, 0, true},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, err := WatchdogInterval()
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %s, %v; want %s, error %v", tc.usec, tc.pid, got, err, tc.want, tc.bad)
		}
		if os.Getenv("WATCHDOG_USEC") != "" {
			t.Errorf("WATCHDOG_USEC=%q left set for the agent's children", tc.usec)
		}
	}
}

// TestWatchdog: keep-alives go out while the service is alive and stop
// when it is wedged, so that systemd restarts it; the loop ends with ctx.
func TestWatchdog(t *testing.T) {
	name := filepath.Join(t.TempDir(), "notify")
	sd := listen(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	n := FromEnv()
	var wedged atomic.Bool
	alive := func(ctx context.Context) error {
		if wedged.Load() {
			<-ctx.Done()
			return errors.New("the agent's lock is held")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watchdog(ctx, 100*time.Millisecond, alive, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	for range 3 {
		if got := read(t, sd); got != "WATCHDOG=1" {
			t.Fatalf("systemd got %q, want WATCHDOG=1", got)
		}
	}
	wedged.Store(true)
	// Drain what was sent before the wedge took effect (a loaded machine
	// may have queued several), then there must be silence for several
	// periods: systemd would kill the agent.
	buf := make([]byte, 64)
	for i := 0; ; i++ {
		sd.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := sd.Read(buf); err != nil {
			break
		}
		if i == 20 {
			t.Fatal("keep-alives go on while the agent is wedged")
		}
	}
	sd.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := sd.Read(buf); err == nil {
		t.Errorf("keep-alive %q sent while the agent was wedged", buf[:n])
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not stop with its context")
	}
}
