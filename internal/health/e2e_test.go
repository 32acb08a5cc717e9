package health

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMonitorEndToEnd runs a Monitor on the real clock against a real HTTP
// server that fails and recovers, and checks that Run leaves no goroutine
// behind.
func TestMonitorEndToEnd(t *testing.T) {
	before := runtime.NumGoroutine()
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	check := &config.Check{
		HTTP:     &config.HTTPProbe{Path: "/healthz", ExpectStatus: []int{200}},
		Interval: config.Duration(100 * time.Millisecond),
		Timeout:  config.Duration(100 * time.Millisecond),
		Rise:     2,
		Fall:     2,
	}
	rec := newRecorder()
	m := NewMonitor(Options{Check: "web", Target: srv.Listener.Addr().String(),
		Spec: SpecFromConfig(check), Prober: mustProber(t, check), OnTransition: rec.add})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()

	if ev := rec.next(t); ev.To != Up || ev.Reason != "first probe passed" {
		t.Fatalf("event %+v, want the first verdict up", ev)
	}
	status.Store(500)
	failed := time.Now()
	ev := rec.next(t)
	if ev.To != Down || ev.Reason != "http: GET /healthz: status 500, want 200" {
		t.Fatalf("event %+v, want down with the status in the reason", ev)
	}
	t.Logf("down %v after the target started failing (bound 100ms×1.1 + max(100ms×1.1, 100ms) + probe time)", time.Since(failed))
	status.Store(200)
	if ev := rec.next(t); ev.To != Up || ev.Reason != "2 consecutive probes passed" {
		t.Fatalf("event %+v, want up again", ev)
	}
	if s := m.Snapshot(); s.Last == nil || !s.Last.OK || s.ConsecutiveOK < 2 {
		t.Errorf("Snapshot = %+v", s)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	srv.Close()
	testenv.Poll(t, 5*time.Second, "goroutines to return to the baseline", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= before, fmt.Sprintf("%d goroutines, %d before", n, before)
	})
}
