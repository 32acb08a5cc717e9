package agent

import (
	"strings"
	"testing"
	"time"
)

// TestDiskWatch: a member's disk is judged slow only when most of enough
// recent fsyncs were slow, and good again once the slow ones leave the
// window.
func TestDiskWatch(t *testing.T) {
	start := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	var d diskWatch
	steps := []struct {
		sec         int
		total, slow uint64
		want        bool
	}{
		{0, 100, 0, false},
		{1, 105, 5, false},  // all slow, but only 5 fsyncs: too few to judge
		{2, 120, 15, true},  // 15 of 20 slow
		{3, 130, 20, true},  // 20 of 30
		{4, 200, 20, false}, // 20 of 100: a burst of fast ones
		{8, 260, 20, false}, // the slow ones left the window
		{9, 261, 21, false}, // one slow fsync among 61
	}
	for _, s := range steps {
		got, why := d.add(at(s.sec), s.total, s.slow)
		if got != s.want {
			t.Errorf("at %ds with %d fsyncs, %d slow: slow=%v (%q); want %v", s.sec, s.total, s.slow, got, why, s.want)
		}
		if got && !strings.Contains(why, "took longer than 32ms") {
			t.Errorf("at %ds the reason %q does not say what counts as slow", s.sec, why)
		}
	}
	if len(d.samples) > 6 {
		t.Errorf("the window keeps %d readings after 9s; want the old ones dropped", len(d.samples))
	}
}
