// Package sdnotify tells systemd how a Type=notify service is doing, as
// sd_notify(3) does: READY=1 once it serves, RELOADING=1 and READY=1
// around a reload, STOPPING=1 when it shuts down, and WATCHDOG=1 as the
// watchdog's keep-alive.
//
// systemd passes the socket to write to in $NOTIFY_SOCKET (a path, or an
// abstract name starting with '@', which Go's net package maps to the
// abstract namespace), and the watchdog's period in $WATCHDOG_USEC for the
// pid in $WATCHDOG_PID. Outside systemd both are unset and every call is a
// no-op, so the agent runs the same under a terminal, a test or a unit.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier writes states to systemd's notification socket.
type Notifier struct {
	socket string // "" outside systemd
}

// FromEnv returns a notifier for the socket in $NOTIFY_SOCKET, and unsets
// it, as sd_notify's unset_environment does (WatchdogInterval unsets the
// watchdog's variables):
// processes the agent starts (postgres, its tools) must not notify
// systemd in the agent's name.
func FromEnv() *Notifier {
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	return n
}

// Enabled says whether systemd listens.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends state, one or more "KEY=value" lines. It does nothing
// outside systemd.
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %s: %w", n.socket, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sdnotify: tell systemd %q: %w", state, err)
	}
	return nil
}

// Ready tells systemd the service is up (the end of a start or a reload).
func (n *Notifier) Ready() error { return n.Notify("READY=1") }

// Reloading tells systemd a reload has begun. MONOTONIC_USEC lets systemd
// (253 and later) tell this reload from an earlier one.
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return n.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

// Stopping tells systemd the service is shutting down.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Status sets the one-line status `systemctl status` shows.
func (n *Notifier) Status(s string) error { return n.Notify("STATUS=" + s) }

// WatchdogInterval returns the watchdog's period from $WATCHDOG_USEC when
// it is meant for this process ($WATCHDOG_PID unset or this pid), and 0
// when there is no watchdog. It unsets both, as FromEnv does the socket.
func WatchdogInterval() (time.Duration, error) {
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	os.Unsetenv("WATCHDOG_USEC")
	os.Unsetenv("WATCHDOG_PID")
	if usec == "" {
		return 0, nil
	}
	if pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil
	}
	us, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || us <= 0 {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC=%q is not a positive number of microseconds", usec)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// Watchdog sends WATCHDOG=1 every quarter period for as long as alive
// says the service is alive within that quarter, until ctx ends: two
// keep-alives in a row are at most half a period apart, well within what
// systemd waits on a loaded machine. A miss is logged with alive's
// reason; after a whole period without a keep-alive systemd kills the
// service and its restart policy applies.
func (n *Notifier) Watchdog(ctx context.Context, period time.Duration, alive func(context.Context) error, log *slog.Logger) {
	if !n.Enabled() || period <= 0 {
		return
	}
	t := time.NewTicker(period / 4)
	defer t.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, period/4)
		err := alive(actx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Error("watchdog: not telling systemd the agent is alive", "err", err, "systemd restarts it after", period)
		} else if err := n.Notify("WATCHDOG=1"); err != nil {
			log.Warn("watchdog", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ExecEnv is env with the variables FromEnv and WatchdogInterval unset put
// back for this pid: a service that executes itself again in the same
// process (haven agent's restart) keeps talking to systemd, which sees
// the same main pid. watchdog is the period WatchdogInterval returned.
func (n *Notifier) ExecEnv(env []string, watchdog time.Duration) []string {
	if !n.Enabled() {
		return env
	}
	env = append(env, "NOTIFY_SOCKET="+n.socket)
	if watchdog > 0 {
		env = append(env, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()), "WATCHDOG_PID="+strconv.Itoa(os.Getpid()))
	}
	return env
}
