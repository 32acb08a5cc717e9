package pgwrite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const ms = time.Millisecond

// writes builds a writer's record from "seq:end_ms:outcome" items, where
// outcome is a (acked), f (failed) or i (indeterminate).
func writes(t *testing.T, items ...string) []Write {
	t.Helper()
	var out []Write
	for _, it := range items {
		var seq, end int
		var o string
		if _, err := fmt.Sscanf(strings.ReplaceAll(it, ":", " "), "%d %d %s", &seq, &end, &o); err != nil {
			t.Fatalf("bad item %q: %v", it, err)
		}
		w := Write{Seq: seq, Start: time.Duration(end-5) * ms, End: time.Duration(end) * ms}
		switch o {
		case "a":
			w.Outcome = Acked
		case "f":
			w.Outcome, w.Err = Failed, "connect: refused"
		case "i":
			w.Outcome, w.Err = Indeterminate, "unexpected EOF"
		default:
			t.Fatalf("bad outcome in %q", it)
		}
		out = append(out, w)
	}
	return out
}

func TestGapAround(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		fault  time.Duration
		want   time.Duration
	}{
		{"the gap spans the fault", []string{"1:20:a", "2:40:a", "3:60:f", "4:80:f", "5:1040:a", "6:1060:a"}, 50 * ms, 1000 * ms},
		{"a longer gap later counts", []string{"1:20:a", "2:40:a", "3:300:a", "4:2300:a"}, 50 * ms, 2000 * ms},
		{"gaps before the fault do not", []string{"1:20:a", "2:5020:a", "3:5040:a", "4:5300:a"}, 5030 * ms, 260 * ms},
		{"failed and indeterminate writes do not end a gap", []string{"1:20:a", "2:500:i", "3:900:f", "4:1500:a"}, 30 * ms, 1480 * ms},
		{"no write back after the fault", []string{"1:20:a", "2:40:a", "3:60:f"}, 50 * ms, Never},
		{"nothing acknowledged at all", []string{"1:20:f"}, 10 * ms, Never},
		{"out of order completions are sorted", []string{"2:60:a", "1:20:a", "3:1060:a"}, 30 * ms, 1000 * ms},
		{"the first write after the fault is the first acknowledged", []string{"1:1000:a", "2:1020:a"}, 10 * ms, 20 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GapAround(writes(t, tc.writes...), tc.fault); got != tc.want {
				t.Errorf("GapAround = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLongestGap(t *testing.T) {
	w := writes(t, "1:20:a", "2:40:a", "3:300:a", "4:310:f", "5:2000:a")
	for _, tc := range []struct{ t0, t1, want time.Duration }{
		{0, 1000 * ms, 260 * ms},
		{0, 3000 * ms, 1700 * ms},
		{30 * ms, 100 * ms, 0}, // one write: no gap
	} {
		if got := LongestGap(w, tc.t0, tc.t1); got != tc.want {
			t.Errorf("LongestGap(%v, %v) = %v, want %v", tc.t0, tc.t1, got, tc.want)
		}
	}
}

func TestCompare(t *testing.T) {
	w := writes(t, "1:20:a", "2:40:a", "3:60:i", "4:80:i", "5:100:f", "6:120:f", "7:140:a")
	// Row 2 is lost, the indeterminate row 3 made it, failed row 6 is
	// there (a misclassification), 99 was never tried.
	r := Compare(w, []int{1, 3, 6, 7, 99})
	want := LossReport{Lost: []int{2}, IndeterminateFound: 1, FailedFound: []int{6}, Unknown: []int{99}}
	if !slices.Equal(r.Lost, want.Lost) || r.IndeterminateFound != want.IndeterminateFound ||
		!slices.Equal(r.FailedFound, want.FailedFound) || !slices.Equal(r.Unknown, want.Unknown) {
		t.Errorf("Compare = %+v, want %+v", r, want)
	}
	if r := Compare(w, []int{1, 2, 7}); len(r.Lost) != 0 || r.IndeterminateFound != 0 {
		t.Errorf("Compare with every acknowledged row = %+v, want nothing lost", r)
	}
	if a, f, i := Tally(w); a != 3 || f != 2 || i != 2 {
		t.Errorf("Tally = %d, %d, %d; want 3 acked, 2 failed, 2 indeterminate", a, f, i)
	}
	if got := ErrorKinds(w, 1); !slices.Equal(got, []string{"connect: refused ×2"}) {
		// Two of each: the tie goes to the message that sorts first.
		t.Errorf("ErrorKinds = %q", got)
	}
}

// notSent is an error that says nothing reached the server, as pgconn's
// errors before a write do.
type notSent struct{}

func (notSent) Error() string     { return "dial: connection refused" }
func (notSent) SafeToRetry() bool { return true }

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Outcome
	}{
		{nil, Acked},
		{&pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, Failed},
		{&pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, Failed},
		{&pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, Failed},
		{fmt.Errorf("exec: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), Indeterminate},
		{&pgconn.PgError{Code: "XX000", Message: "internal error"}, Indeterminate},
		{notSent{}, Failed},
		{context.DeadlineExceeded, Indeterminate},
		{errors.New("unexpected EOF"), Indeterminate},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestCommitLatencies(t *testing.T) {
	ws := []Write{
		{Seq: 1, Outcome: Acked, Commit: 3 * ms},
		{Seq: 2, Outcome: Failed},
		{Seq: 3, Outcome: Indeterminate, Commit: 1000 * ms},
		{Seq: 4, Outcome: Acked, Commit: 5 * ms},
	}
	if got := CommitLatencies(ws); !slices.Equal(got, []time.Duration{3 * ms, 5 * ms}) {
		t.Errorf("CommitLatencies = %v, want [3ms 5ms]: the acknowledged writes' only", got)
	}
}
