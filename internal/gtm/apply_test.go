package gtm

import (
	"slices"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/config"
)

// The decision tests drive a traffic manager that is not run: they give
// it verdicts as its monitors' transitions would, and move its fake
// clock. An answer can only move when a verdict arrives or the fake time
// reaches the end of a delay or drain, so "not moved yet" is asserted at
// once, and "moved" (answersSoon) waits only for the goroutine that the
// fake timer wakes.

// epoch is where the decision tests' fake clocks start.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simService is a traffic manager whose name www fails over from east
// (checked) to west (unchecked) after failover, and back after failback,
// on a fake clock.
func simService(t *testing.T, failover, failback time.Duration) (*Service, *clock.Fake) {
	t.Helper()
	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers = []string{"n1"}
	rec := cfg.Traffic.Records["www"]
	rec.FailoverDelay, rec.FailbackDelay = config.Duration(failover), config.Duration(failback)
	clk := clock.NewFake(epoch)
	svc, err := NewService(cfg, "n1", ServiceOptions{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc, clk
}

// verdict gives rel's target this instance's verdict, as its monitor's
// transition does.
func verdict(t *testing.T, svc *Service, rel, target string, up bool) {
	t.Helper()
	tm := svc.monitor(rel, target)
	if tm == nil {
		t.Fatalf("%s has no target %s", rel, target)
	}
	svc.setLocal([]*targetMonitor{tm}, up)
}

// answersNow checks what www answers now.
func answersNow(t *testing.T, svc *Service, step string, want []string) {
	t.Helper()
	if got := answers(svc); !slices.Equal(got, want) {
		t.Fatalf("%s: www answers %v, want %v", step, got, want)
	}
}

// A verdict must hold for its delay before the answers follow it: the
// failover delay for down, the failback delay for up, counted from the
// verdict, to the nanosecond.
func TestFailoverAndFailbackDelays(t *testing.T) {
	const failover, failback = 30 * time.Second, 10 * time.Second
	svc, clk := simService(t, failover, failback)
	verdict(t, svc, "www", "east", true)
	answersNow(t, svc, "east up", eastAnswer)

	verdict(t, svc, "www", "east", false)
	answersNow(t, svc, "east just went down", eastAnswer)
	clk.Advance(failover - time.Nanosecond)
	answersNow(t, svc, "east down for the failover delay less 1ns", eastAnswer)
	clk.Advance(time.Nanosecond)
	answersSoon(t, svc, "east down for the failover delay", westAnswer)

	verdict(t, svc, "www", "east", true)
	answersNow(t, svc, "east just came back", westAnswer)
	clk.Advance(failback - time.Nanosecond)
	answersNow(t, svc, "east up for the failback delay less 1ns", westAnswer)
	clk.Advance(time.Nanosecond)
	answersSoon(t, svc, "east up for the failback delay", eastAnswer)
}

// A blip shorter than the failover delay moves nothing, and leaves
// nothing behind: the next failure waits the whole delay again.
func TestBlipShorterThanFailoverDelay(t *testing.T) {
	const failover = 30 * time.Second
	svc, clk := simService(t, failover, 0)
	verdict(t, svc, "www", "east", true)
	verdict(t, svc, "www", "east", false)
	clk.Advance(failover / 2)
	verdict(t, svc, "www", "east", true)
	answersNow(t, svc, "after a blip of half the delay", eastAnswer)
	if n := clk.Waiters(); n != 0 {
		t.Fatalf("after the blip, %d timers are pending, want none: the failover it started must be called off", n)
	}
	clk.Advance(failover)
	answersNow(t, svc, "past the blip's failover time", eastAnswer)

	verdict(t, svc, "www", "east", false)
	answersNow(t, svc, "a second failure, the delay after the first", eastAnswer)
	clk.Advance(failover - time.Nanosecond)
	answersNow(t, svc, "the second failure, for the delay less 1ns", eastAnswer)
	clk.Advance(time.Nanosecond)
	answersSoon(t, svc, "the second failure, for the delay", westAnswer)
}

// A drain takes a healthy target out of the answers until it ends, by
// itself when its time is up or by Enable; unknown targets are refused.
func TestDrain(t *testing.T) {
	svc, clk := simService(t, 0, 0)
	verdict(t, svc, "www", "east", true)
	east := func() TargetStatus { return svc.Status().Names[0].Targets[0] }

	if err := svc.Drain("www", "east", time.Hour); err != nil {
		t.Fatal(err)
	}
	answersNow(t, svc, "drained east", westAnswer)
	if got, want := east().DrainedUntil, epoch.Add(time.Hour); !got.Equal(want) {
		t.Errorf("status says east is drained until %v, want %v", got, want)
	}
	if err := svc.Enable("www", "east"); err != nil {
		t.Fatal(err)
	}
	answersNow(t, svc, "enabled east", eastAnswer)
	if got := east().DrainedUntil; !got.IsZero() || clk.Waiters() != 0 {
		t.Errorf("enabled east: drained until %v, %d timers pending; want neither", got, clk.Waiters())
	}

	const d = 5 * time.Minute
	if err := svc.Drain("www", "east", d); err != nil {
		t.Fatal(err)
	}
	clk.Advance(d - time.Nanosecond)
	answersNow(t, svc, "drained for the drain's time less 1ns", westAnswer)
	clk.Advance(time.Nanosecond)
	answersSoon(t, svc, "drained for the drain's time", eastAnswer)
	if got := east().DrainedUntil; !got.IsZero() {
		t.Errorf("the drain ended, status says drained until %v", got)
	}

	if err := svc.Drain("www", "nope", time.Minute); err == nil {
		t.Error("a drain of a target www does not have succeeded")
	}
	if err := svc.Drain("www", "east", 0); err == nil {
		t.Error("a drain for 0s succeeded")
	}
	if err := svc.Drain("www", "west", time.Minute); err != nil {
		t.Errorf("drain of an unchecked target: %v", err)
	}
	answersNow(t, svc, "west drained, east up", eastAnswer)
}

// A drain kept in etcd takes the target out of the answers as a local one
// does, until its time or until the records no longer hold it; a local
// Enable does not end it (the record does), and the later of a local and
// a recorded drain counts.
func TestRecordedDrain(t *testing.T) {
	svc, clk := simService(t, 0, 0)
	verdict(t, svc, "www", "east", true)
	east := func() TargetStatus { return svc.Status().Names[0].Targets[0] }

	svc.SetRecordedDrains(map[string]time.Time{DrainKey("www", "east"): epoch.Add(time.Hour)})
	answersNow(t, svc, "east drained by a record", westAnswer)
	if got := east().DrainedUntil; !got.Equal(epoch.Add(time.Hour)) {
		t.Errorf("status says east is drained until %v, want the record's %v", got, epoch.Add(time.Hour))
	}
	if err := svc.Enable("www", "east"); err != nil {
		t.Fatal(err)
	}
	answersNow(t, svc, "a local enable leaves the record's drain", westAnswer)
	svc.SetRecordedDrains(nil)
	answersNow(t, svc, "the record removed", eastAnswer)

	svc.SetRecordedDrains(map[string]time.Time{DrainKey("www", "east"): epoch.Add(time.Minute)})
	if err := svc.Drain("www", "east", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)
	answersNow(t, svc, "the record's time is up, the local drain's is not", westAnswer)
	clk.Advance(time.Minute)
	answersSoon(t, svc, "both ended", eastAnswer)
}
