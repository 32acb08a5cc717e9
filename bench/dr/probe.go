package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/netlab"
)

// poll calls check every interval until it returns "" (done) or an error
// (give up), for at most timeout; on timeout the error says what check
// last said.
func poll(ctx context.Context, timeout, interval time.Duration, check func() (string, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "nothing yet"
	for {
		why, err := check()
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("not after %s: %s", timeout, last)
			}
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// nodeAddr is node's PostgreSQL address.
func nodeAddr(node string) string { return fmt.Sprintf("%s:%d", hostAddr(node), pgPort) }

// routerReaches checks that a writer on active's client reaches primary
// through t's write endpoint, and that it takes writes.
func routerReaches(ctx context.Context, n *netlab.Net, t target, active, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := dial(ctx, n, regionHosts[active].client, t.WriteEndpoint(active))
	if err != nil {
		return fmt.Errorf("through %s's endpoint: %w", active, err)
	}
	defer conn.Close(context.Background())
	var recovery bool
	var addr string
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), host(inet_server_addr())").Scan(&recovery, &addr); err != nil {
		return err
	}
	if recovery || addr != hostAddr(primary).String() {
		return fmt.Errorf("%s's endpoint reaches %s (in recovery: %v), not the primary %s", active, addr, recovery, primary)
	}
	return nil
}

// parseLSN parses PostgreSQL's X/Y notation of a WAL position.
func parseLSN(s string) (int64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	return int64(h<<32 | l), nil
}

// lsnOf connects to node directly (as the writer's role, from its
// region's client) and returns the WAL position expr gives, and whether
// node is in recovery.
func lsnOf(ctx context.Context, n *netlab.Net, node, expr string) (int64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := dial(ctx, n, regionHosts[regionOf(node)].client, nodeAddr(node))
	if err != nil {
		return 0, false, err
	}
	defer conn.Close(context.Background())
	var lsn *string
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT ("+expr+")::text, pg_is_in_recovery()").Scan(&lsn, &recovery); err != nil {
		return 0, false, err
	}
	if lsn == nil {
		return 0, recovery, fmt.Errorf("%s: %s is null", node, expr)
	}
	v, err := parseLSN(*lsn)
	return v, recovery, err
}

// lagProbe samples a standby leader's lag behind a primary over two
// connections it keeps (the writer's role; each from its region's client,
// straight to the node). A target whose standby region is PostgreSQL
// streaming replication can use it as it is.
type lagProbe struct {
	n                *netlab.Net
	primary, standby string

	mu     sync.Mutex
	pc, sc *pgx.Conn
}

func newLagProbe(n *netlab.Net, primary, standby string) *lagProbe {
	return &lagProbe{n: n, primary: primary, standby: standby}
}

// sample asks the primary for its current WAL position, then the standby
// for what it received and replayed and how old its last replayed commit
// is. The standby is asked just after the primary, so the bytes behind
// are, if anything, underestimated by what the primary wrote in between
// (a round trip inside a region).
func (l *lagProbe) sample(ctx context.Context) (lagSample, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var err error
	for _, c := range []struct {
		conn **pgx.Conn
		node string
	}{{&l.pc, l.primary}, {&l.sc, l.standby}} {
		if *c.conn == nil {
			if *c.conn, err = dial(ctx, l.n, regionHosts[regionOf(c.node)].client, nodeAddr(c.node)); err != nil {
				*c.conn = nil
				return lagSample{}, fmt.Errorf("connect %s: %w", c.node, err)
			}
		}
	}
	s := lagSample{At: time.Now()}
	var cur string
	if err := l.pc.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&cur); err != nil {
		l.reset()
		return lagSample{}, fmt.Errorf("%s: %w", l.primary, err)
	}
	var recv, replay *string
	var delay *float64
	if err := l.sc.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, "+
		"extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8").Scan(&recv, &replay, &delay); err != nil {
		l.reset()
		return lagSample{}, fmt.Errorf("%s: %w", l.standby, err)
	}
	if recv == nil || replay == nil {
		return lagSample{}, fmt.Errorf("%s: no WAL received or replayed yet", l.standby)
	}
	c, err1 := parseLSN(cur)
	rc, err2 := parseLSN(*recv)
	rp, err3 := parseLSN(*replay)
	if err1 != nil || err2 != nil || err3 != nil {
		return lagSample{}, fmt.Errorf("LSNs %q %q %q", cur, *recv, *replay)
	}
	s.ReceivedBytes, s.ReplayedBytes = max(c-rc, 0), max(c-rp, 0)
	if delay != nil {
		s.ReplayDelay = time.Duration(*delay * float64(time.Second))
	}
	return s, nil
}

func (l *lagProbe) reset() {
	for _, c := range []**pgx.Conn{&l.pc, &l.sc} {
		if *c != nil {
			(*c).Close(context.Background())
			*c = nil
		}
	}
}

func (l *lagProbe) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reset()
}
