package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// loadStats counts what a non-retrying HTTP/1.1 keep-alive client saw.
// Every attempt ends in exactly one of OK, Non2xx or a socket error, so
// Requests == OK + Non2xx + SockErr.
type loadStats struct {
	Requests int64
	OK       int64
	Non2xx   int64
	SockErr  int64
	// Of SockErr: the dial failed; or a reused keep-alive connection failed
	// before any byte of the response arrived (the race in which a browser
	// or Go's http.Transport would retry an idempotent request silently).
	DialErr, ReuseErr int64
	Codes             map[int]int64
	P99, Max          time.Duration
	FirstErr          string
}

// countingConn counts the bytes read, to tell "nothing came back" apart from
// "the response broke off".
type countingConn struct {
	net.Conn
	n int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	return n, err
}

// loadRequest is the request of the failover load; Host names no real site.
const loadRequest = "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: haven-bench-failover\r\n\r\n"

// runLoad drives addr with conc workers, each on its own keep-alive
// connection, until dur has passed or maxReq requests were sent. There are no
// retries: every failure is counted. A worker whose connection fails dials a
// new one; a failed dial is retried after 10ms (the load is bounded in time
// anyway).
func runLoad(ctx context.Context, addr string, conc int, dur time.Duration, maxReq int64) loadStats {
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	end, _ := ctx.Deadline()
	var issued atomic.Int64
	type workerStats struct {
		loadStats
		lat []time.Duration
	}
	results := make([]workerStats, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &results[w]
			st.Codes = map[int]int64{}
			var conn *countingConn
			var br *bufio.Reader
			reused := false
			fail := func(err error) {
				st.SockErr++
				if st.FirstErr == "" {
					st.FirstErr = err.Error()
				}
				if conn != nil {
					conn.Close()
					conn = nil
				}
			}
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for ctx.Err() == nil && issued.Add(1) <= maxReq {
				st.Requests++
				start := time.Now()
				if conn == nil {
					c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
					if err != nil {
						if ctx.Err() != nil {
							st.Requests-- // cut by the end of the run, not a failure
							return
						}
						st.DialErr++
						fail(fmt.Errorf("dial: %w", err))
						harness.Sleep(ctx, 10*time.Millisecond)
						continue
					}
					conn = &countingConn{Conn: c}
					br = bufio.NewReader(conn)
					reused = false
				}
				before := conn.n
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, err := io.WriteString(conn, loadRequest)
				var resp *http.Response
				if err == nil {
					resp, err = http.ReadResponse(br, nil)
				}
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					if reused && conn.n == before {
						st.ReuseErr++
					}
					fail(err)
					continue
				}
				st.lat = append(st.lat, time.Since(start))
				st.Codes[resp.StatusCode]++
				if resp.StatusCode/100 == 2 {
					st.OK++
				} else {
					st.Non2xx++
				}
				if resp.Close {
					conn.Close()
					conn = nil
				} else {
					reused = true
				}
				if time.Now().After(end) {
					return
				}
			}
		}()
	}
	wg.Wait()
	total := loadStats{Codes: map[int]int64{}}
	var lat []time.Duration
	for _, r := range results {
		total.Requests += r.Requests
		total.OK += r.OK
		total.Non2xx += r.Non2xx
		total.SockErr += r.SockErr
		total.DialErr += r.DialErr
		total.ReuseErr += r.ReuseErr
		for c, n := range r.Codes {
			total.Codes[c] += n
		}
		if total.FirstErr == "" {
			total.FirstErr = r.FirstErr
		}
		lat = append(lat, r.lat...)
	}
	if len(lat) > 0 {
		total.P99 = harness.Percentile(lat, 99)
		total.Max = slices.Max(lat)
	}
	return total
}

// failoverEvent is one fault injected into a running load.
type failoverEvent struct {
	name string
	desc string
	// inject runs in its own goroutine while the load runs; it returns
	// notes for the report (what it did, what failed).
	inject func(ctx context.Context, b *bench, p *proxy, ps *service, backends []*service, dur time.Duration) []string
}

// victim is the backend that every fault is applied to.
const victim = 1 // b2

var failoverEvents = []failoverEvent{
	{
		name: "kill -9",
		desc: "SIGKILL backend b2 at 1/3 of the run; it stays down",
		inject: func(ctx context.Context, b *bench, _ *proxy, _ *service, be []*service, dur time.Duration) []string {
			harness.Sleep(ctx, dur/3)
			if err := be[victim].signal(syscall.SIGKILL); err != nil {
				return []string{err.Error()}
			}
			return awaitExit(ctx, be[victim])
		},
	},
	{
		name: "graceful stop",
		desc: "SIGQUIT (nginx graceful shutdown) to backend b2 at 1/3 of the run; it stays down",
		inject: func(ctx context.Context, b *bench, _ *proxy, _ *service, be []*service, dur time.Duration) []string {
			harness.Sleep(ctx, dur/3)
			if err := be[victim].signal(syscall.SIGQUIT); err != nil {
				return []string{err.Error()}
			}
			return awaitExit(ctx, be[victim])
		},
	},
	{
		name: "drain, then stop",
		desc: "drain b2 through the proxy's API at 1/3 of the run, SIGQUIT it at 1/2",
		inject: func(ctx context.Context, b *bench, p *proxy, _ *service, be []*service, dur time.Duration) []string {
			var notes []string
			harness.Sleep(ctx, dur/3)
			if err := p.drain(ctx, b, backendNames[victim]); err != nil {
				notes = append(notes, "drain failed: "+err.Error())
			}
			harness.Sleep(ctx, dur/2-dur/3)
			if err := be[victim].signal(syscall.SIGQUIT); err != nil {
				return append(notes, err.Error())
			}
			return append(notes, awaitExit(ctx, be[victim])...)
		},
	},
	{
		name: "20 reloads",
		desc: "reload the proxy 20 times, evenly from 10% to 90% of the run",
		inject: func(ctx context.Context, b *bench, p *proxy, ps *service, _ []*service, dur time.Duration) []string {
			const n = 20
			start := time.Now()
			failed := 0
			var first string
			for i := range n {
				at := dur/10 + time.Duration(i)*(dur*8/10)/(n-1)
				harness.Sleep(ctx, time.Until(start.Add(at)))
				if ctx.Err() != nil {
					break
				}
				if err := p.reload(ctx, b, ps); err != nil {
					failed++
					if first == "" {
						first = err.Error()
					}
				}
			}
			if failed > 0 {
				return []string{fmt.Sprintf("%d of %d reloads failed, first: %s", failed, n, first)}
			}
			return nil
		},
	},
}

// awaitExit waits for a signalled backend to exit, until the run ends, and
// says how long it took: the proof that the fault happened.
func awaitExit(ctx context.Context, s *service) []string {
	start := time.Now()
	select {
	case <-s.done:
		return []string{fmt.Sprintf("b2 gone after %s", time.Since(start).Round(time.Millisecond))}
	case <-ctx.Done():
		return []string{"b2 still running at the end of the run"}
	}
}

// failoverRow is one (proxy, event) run.
type failoverRow struct {
	proxy, event string
	stats        loadStats
	alive        bool // the proxy was still running at the end
	notes        []string
	skipped      string // why the run did not happen
}

// runFailover runs every event against every proxy, each run on fresh
// backends and a fresh proxy.
func (b *bench) runFailover(ctx context.Context, proxies []*proxy) []failoverRow {
	var rows []failoverRow
	for _, ev := range failoverEvents {
		for _, p := range proxies {
			if ctx.Err() != nil {
				return rows
			}
			harness.Logf("failover: %s / %s", p.name, ev.name)
			row := b.failoverRun(ctx, p, ev)
			harness.Logf("  requests %d, ok %d, non-2xx %d, socket errors %d %s %s", row.stats.Requests, row.stats.OK, row.stats.Non2xx, row.stats.SockErr, row.skipped, joinNotes(row.notes))
			rows = append(rows, row)
		}
	}
	return rows
}

func (b *bench) failoverRun(ctx context.Context, p *proxy, ev failoverEvent) failoverRow {
	row := failoverRow{proxy: p.name, event: ev.name}
	if ev.name == "drain, then stop" && p.drain == nil {
		row.skipped = "n/a"
		return row
	}
	backends, err := b.startBackends(ctx)
	defer func() {
		for _, s := range backends {
			b.sv.stop(s, syscall.SIGTERM, 3*time.Second)
		}
	}()
	if err != nil {
		row.skipped = "backends failed: " + err.Error()
		return row
	}
	ps, err := p.start(ctx, b, "http", true)
	defer b.sv.stop(ps, syscall.SIGTERM, 5*time.Second)
	if err != nil {
		row.skipped = "failed to start: " + err.Error()
		return row
	}
	dur := b.opt.failoverDuration
	b.waitQuiet(ctx)
	var notes []string
	done := make(chan struct{})
	ictx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(done)
		notes = ev.inject(ictx, b, p, ps, backends, dur)
	}()
	row.stats = runLoad(ctx, p.addr, b.opt.failoverConc, dur, b.opt.failoverMaxReq)
	cancel()
	<-done
	row.notes = notes
	row.alive = !ps.exited()
	if !row.alive {
		row.notes = append(row.notes, "proxy exited: "+ps.logTail(3))
	}
	return row
}

func joinNotes(n []string) string {
	out := ""
	for i, s := range n {
		if i > 0 {
			out += "; "
		}
		out += s
	}
	return out
}
