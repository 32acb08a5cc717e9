package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// Prober checks a target once.
type Prober interface {
	// Probe returns nil if target passes, or an error that says briefly
	// what failed ("tcp: dial 10.0.0.5:8080: connection refused"). target
	// is "HOST:PORT" or "HOST". Probe must return soon after ctx is done.
	Probe(ctx context.Context, target string) error
}

// ProberFunc adapts a function to a Prober.
type ProberFunc func(ctx context.Context, target string) error

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context, target string) error { return f(ctx, target) }

// NewProber returns the Prober for check c: tcp, http, https, icmp, exec or
// volume, whichever one is set. A probe's port, if set, replaces the
// target's. The Prober bounds each probe by c.Timeout (default 1s) when the caller's
// context has no deadline.
func NewProber(c *config.Check) (Prober, error) {
	p, err := newProber(c)
	if err != nil {
		return nil, fmt.Errorf("health: check %q: %w", c.Name, err)
	}
	timeout := c.Timeout.D()
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	return &boundedProber{p: p, timeout: timeout}, nil
}

func newProber(c *config.Check) (Prober, error) {
	var set []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"tcp", c.TCP != nil}, {"http", c.HTTP != nil}, {"https", c.HTTPS != nil},
		{"icmp", c.ICMP != nil}, {"exec", c.Exec != nil}, {"volume", c.Volume != nil},
	} {
		if k.set {
			set = append(set, k.name)
		}
	}
	switch {
	case len(set) == 0:
		return nil, errors.New("no probe set: want one of tcp, http, https, icmp, exec, volume")
	case len(set) > 1:
		return nil, fmt.Errorf("%s are all set: want exactly one probe", strings.Join(set, ", "))
	}
	switch {
	case c.TCP != nil:
		return &tcpProber{port: c.TCP.Port}, nil
	case c.HTTP != nil:
		return newHTTPProber("http", c.HTTP)
	case c.HTTPS != nil:
		return newHTTPProber("https", c.HTTPS)
	case c.ICMP != nil:
		return newICMPProber(), nil
	case c.Volume != nil:
		return newVolumeProber(c.Volume)
	default:
		return newExecProber(c.Exec)
	}
}

// boundedProber gives a probe called without a deadline the check's timeout,
// so that a Prober used outside a Monitor cannot hang.
type boundedProber struct {
	p       Prober
	timeout time.Duration
}

func (b *boundedProber) Probe(ctx context.Context, target string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = withProbeTimeout(ctx, b.timeout)
		defer cancel()
	}
	return b.p.Probe(ctx, target)
}

// TimeoutError is a probe that ran out of time. It matches
// context.DeadlineExceeded with errors.Is.
type TimeoutError struct {
	After time.Duration // the probe's timeout; 0 if unknown
}

// Error returns "timeout after 500ms".
func (e *TimeoutError) Error() string {
	if e.After <= 0 {
		return "timeout"
	}
	return "timeout after " + e.After.String()
}

// Timeout reports true, like net.Error.
func (e *TimeoutError) Timeout() bool { return true }

// Unwrap returns context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// timeoutKey carries a probe's timeout in its context, so that the error
// can say "timeout after 500ms" instead of "context deadline exceeded".
type timeoutKey struct{}

func withProbeTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithValue(ctx, timeoutKey{}, d), d)
}

// ctxCause returns a *TimeoutError if ctx's deadline passed, ctx's error if
// it was cancelled, and err otherwise: once ctx is done, whatever the
// operation reported ("i/o timeout", "operation was canceled") is only an
// echo of that.
func ctxCause(ctx context.Context, err error) error {
	switch ctx.Err() {
	case nil:
		return err
	case context.DeadlineExceeded:
		d, _ := ctx.Value(timeoutKey{}).(time.Duration)
		return &TimeoutError{After: d}
	default:
		return ctx.Err()
	}
}

// netCause digs the useful part out of Go's layered network errors:
// "connection refused" from "dial tcp 10.0.0.5:80: connect: connection
// refused". The cause stays in the chain for errors.Is.
func netCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("connection closed early: %w", err)
	}
	return err
}

// splitTarget splits "HOST:PORT", "[V6]:PORT", "HOST" or a bare IPv6
// address; port is "" when there is none.
func splitTarget(target string) (host, port string) {
	if h, p, err := net.SplitHostPort(target); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(target, "["), "]"), ""
}

// dialAddr is the address to probe: the target's host with the probe's port
// if it sets one, else the target's port, else def.
func dialAddr(target string, port int, def string) (string, error) {
	host, p := splitTarget(target)
	if host == "" {
		return "", fmt.Errorf("target %q has no host", target)
	}
	if port > 0 {
		p = strconv.Itoa(port)
	}
	if p == "" {
		p = def
	}
	if p == "" {
		return "", fmt.Errorf("target %q has no port and the check sets none", target)
	}
	return net.JoinHostPort(host, p), nil
}
