package keeper

import (
	"log/slog"
	"time"
)

// repeatEvery is how often a warning that keeps coming back is logged
// again, with how many times it came back meanwhile.
const repeatEvery = time.Minute

// repeats logs a warning that comes back round after round once, then
// counts it. The keeper's loop runs every 250ms, and a step that fails the
// same way each time (a directory postgres cannot reach, a primary that
// refuses the replica) would otherwise write the same line four times a
// second and bury everything else. While the warning lasts it is logged
// again every repeatEvery with the count; when another warning replaces
// it, the count not yet logged is; when the step succeeds again, one line
// says how many times and for how long it failed.
type repeats struct {
	log      *slog.Logger
	msg, err string    // the warning being counted ("" when none)
	count    int       // times it came back since it was last logged
	total    int       // times it came back since it was first logged
	first    time.Time // when it was first logged
	last     time.Time // when it was last logged
}

// warn logs msg with err, unless it is the warning logged last: then it
// counts it, and logs it again once repeatEvery has passed.
func (r *repeats) warn(now time.Time, msg string, err error) {
	if msg == r.msg && err.Error() == r.err {
		r.count++
		r.total++
		if now.Sub(r.last) >= repeatEvery {
			r.log.Warn(msg, "err", r.err, "repeated", r.count, "since", r.first)
			r.count, r.last = 0, now
		}
		return
	}
	if r.count > 0 {
		r.log.Warn(r.msg, "err", r.err, "repeated", r.count, "since", r.first, "until", now)
	}
	r.log.Warn(msg, "err", err)
	r.msg, r.err, r.count, r.total, r.first, r.last = msg, err.Error(), 0, 0, now, now
}

// ok ends the warning being counted: the next one is logged at once.
func (r *repeats) ok(now time.Time) {
	if r.msg == "" {
		return
	}
	if r.total > 0 {
		r.log.Info(r.msg+" succeeds again", "err_before", r.err, "failed", r.total+1, "for", now.Sub(r.first).Round(time.Millisecond))
	}
	r.msg, r.err, r.count, r.total = "", "", 0, 0
}
