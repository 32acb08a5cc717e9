package lb

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/testenv"
)

const (
	testInterval = 300 * time.Millisecond
	testTimeout  = 200 * time.Millisecond
	testFall     = 2
	webCheck     = `  web:
    http: {path: /healthz, expect_body: "ok"}
    interval: 300ms
    timeout: 200ms
    rise: 2
    fall: 2
`
)

// detectionBound is how long a failed backend may stay in rotation: fall
// probes, each within an interval and its timeout (jitter included in the
// interval's slack).
var detectionBound = time.Duration(testFall)*(testInterval+testTimeout) + testInterval/5

// TestFailoverUnderLoad breaks one of three real backends while a client
// sends steady keep-alive GETs: no request may fail, and the backend must
// leave the rotation within the detection bound, as measured by the
// balancer's own events.
func TestFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs real backend processes (not in -short)")
	}
	faults := []struct {
		name  string
		fault func(t *testing.T, p *proc)
	}{
		{"kill -9", func(t *testing.T, p *proc) { p.kill() }},
		{"hang", func(t *testing.T, p *proc) { p.setMode(t, "hang") }},
		{"500s", func(t *testing.T, p *proc) { p.setMode(t, "fail") }},
		{"SIGTERM", func(t *testing.T, p *proc) { p.cmd.Process.Signal(syscall.SIGTERM) }},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
			lb := startLB(t, "    check: web\n", webCheck, b1.addr, b2.addr, b3.addr)
			gen := newLoadGen(lb.url + "/counter")
			stop := gen.background(8, 200000)
			defer stop()
			gen.waitServed(t, 300)

			at := time.Now()
			f.fault(t, b2)
			var down health.Event
			testenv.Poll(t, 10*time.Second, "b2 marked down", func() (bool, string) {
				ev, ok := lb.events.first(b2.addr, health.Down, at)
				down = ev
				return ok, lb.Status().Backends[1].Health.State.String()
			})
			took := down.At.Sub(at)
			t.Logf("b2 marked down %v after the fault: %s", took, down.Reason)
			if took > detectionBound {
				t.Errorf("b2 left the rotation %v after the fault, want within %v (fall × (interval + timeout))", took, detectionBound)
			}
			gen.waitServed(t, 500)
			stop()
			if fails := gen.fails.all(); len(fails) > 0 {
				t.Errorf("%d of %d requests failed, want none; first: %v", len(fails), int(gen.ok.Load())+len(fails), fails[:min(5, len(fails))])
			}
			if gen.count("b1") == 0 || gen.count("b3") == 0 {
				t.Errorf("healthy backends served b1=%d b3=%d, want both > 0", gen.count("b1"), gen.count("b3"))
			}
		})
	}
}

// TestBackendReturns checks that a backend brought back takes traffic again
// once its checks pass.
func TestBackendReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs real backend processes (not in -short)")
	}
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	lb := startLB(t, "    check: web\n", webCheck, b1.addr, b2.addr)
	gen := newLoadGen(lb.url + "/counter")
	stop := gen.background(4, 200000)
	defer stop()
	gen.waitServed(t, 100)
	b2.kill()
	testenv.Poll(t, 10*time.Second, "b2 down", func() (bool, string) {
		_, ok := lb.events.first(b2.addr, health.Down, time.Time{})
		return ok, ""
	})
	before := gen.count("b2")
	back := time.Now()
	b2.start(t)
	testenv.Poll(t, 10*time.Second, "b2 up and serving", func() (bool, string) {
		_, up := lb.events.first(b2.addr, health.Up, back)
		return up && gen.count("b2") > before+10, "b2 served " + strconv.Itoa(gen.count("b2")-before) + " since restart"
	})
	stop()
	if fails := gen.fails.all(); len(fails) > 0 {
		t.Errorf("%d requests failed, want none: %v", len(fails), fails[:min(5, len(fails))])
	}
}

// TestDrainThenStop: the operator's way to take a backend out: drain, wait
// until nothing is in flight, stop it. No client notices.
func TestDrainThenStop(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs real backend processes (not in -short)")
	}
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	lb := startLB(t, "    check: web\n", webCheck, b1.addr, b2.addr)
	gen := newLoadGen(lb.url + "/counter")
	stop := gen.background(8, 200000)
	defer stop()
	gen.waitServed(t, 300)
	if err := lb.SetState("b2", Drain); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 10*time.Second, "b2 drained", func() (bool, string) {
		st := lb.Status().Backends[1]
		return st.Drained, "inflight " + strconv.FormatInt(st.Inflight, 10)
	})
	b2.cmd.Process.Signal(syscall.SIGTERM)
	<-b2.done
	gen.waitServed(t, 500)
	stop()
	if fails := gen.fails.all(); len(fails) > 0 {
		t.Errorf("%d requests failed, want none: %v", len(fails), fails[:min(5, len(fails))])
	}
}

// TestTCPModeBackendKilled: in TCP mode, new connections made while and
// after a backend is killed all succeed (refused connects are redispatched).
func TestTCPModeBackendKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs real backend processes (not in -short)")
	}
	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	checks := "  web:\n    tcp: {}\n    interval: 300ms\n    timeout: 200ms\n    fall: 2\n"
	lb := startLB(t, "    mode: tcp\n    check: web\n", checks, b1.addr, b2.addr, b3.addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Connections opened before the kill may be in flight on b2 when it
	// dies: TCP mode cannot replay their bytes elsewhere. Connections opened
	// after it must all succeed.
	var ok, failed, inflightLost atomic.Int64
	var killedAt atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		// One short HTTP/1.0 exchange per new connection, bounded in count.
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			start := time.Now().UnixNano()
			if err := tcpExchange(lb.addr); err != nil {
				if k := killedAt.Load(); k == 0 || start < k {
					inflightLost.Add(1)
					continue
				}
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}()
	testenv.Poll(t, 20*time.Second, "connections flowing", func() (bool, string) { return ok.Load() > 200, "" })
	b2.kill()
	killedAt.Store(time.Now().UnixNano())
	base := ok.Load()
	testenv.Poll(t, 20*time.Second, "more connections after the kill", func() (bool, string) { return ok.Load() > base+500, "" })
	cancel()
	<-done
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d new connections failed after kill -9 of a backend, want 0; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	t.Logf("connections in flight on the killed backend that were lost: %d", inflightLost.Load())
}

func tcpExchange(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.0\r\n\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if n == 0 {
		return fmt.Errorf("no response: %v", err)
	}
	if string(buf[:12]) != "HTTP/1.0 200" && string(buf[:12]) != "HTTP/1.1 200" {
		return fmt.Errorf("response %q", buf[:n])
	}
	return nil
}
