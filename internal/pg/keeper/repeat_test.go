package keeper

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// A warning that comes back every round is logged once, then again every
// repeatEvery with the count, then once more when another replaces it;
// success after repeats says how long it failed.
func TestRepeatsLogOnceThenCount(t *testing.T) {
	var out testenv.Buffer
	h := slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == "since" || a.Key == "until" {
			return slog.Attr{}
		}
		return a
	}})
	r := &repeats{log: slog.New(h)}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	round := func(err error) {
		if err == nil {
			r.ok(now)
		} else {
			r.warn(now, "keeper step", err)
		}
		now = now.Add(keeperTick)
	}
	unreachable := errors.New("cannot reach it: chmod o+x /var/lib/haven/db1")
	for range 4 * 60 * 2 { // two minutes of rounds
		round(unreachable)
	}
	round(errors.New("promote: timeout"))
	round(errors.New("promote: timeout"))
	round(nil)
	round(nil)
	round(errors.New("once"))
	round(nil)

	want := []string{
		`level=WARN msg="keeper step" err="cannot reach it: chmod o+x /var/lib/haven/db1"`,
		`level=WARN msg="keeper step" err="cannot reach it: chmod o+x /var/lib/haven/db1" repeated=240`,
		`level=WARN msg="keeper step" err="cannot reach it: chmod o+x /var/lib/haven/db1" repeated=239`,
		`level=WARN msg="keeper step" err="promote: timeout"`,
		`level=INFO msg="keeper step succeeds again" err_before="promote: timeout" failed=2 for=500ms`,
		`level=WARN msg="keeper step" err=once`,
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("logged:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
}
