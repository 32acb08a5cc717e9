package drill

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Holding is a run of consecutive answered probes by one node under one
// epoch.
type Holding struct {
	Node     string
	Epoch    string
	From, To time.Time // send times of its first and last probe
}

// Report is what a probe run showed.
type Report struct {
	Probes   int
	Answered int
	// Overlaps counts probes that two or more nodes answered: moments with
	// two holders. Overlap is the time they span (probe send times, from
	// the first to the last such probe, per run of them) and Overlapping
	// describes the first.
	Overlaps    int
	Overlap     time.Duration
	Overlapping string
	Holdings    []Holding
	sent        []time.Time
	answered    []bool
}

// Analyze turns a probe run into a report.
func Analyze(sent []time.Time, answers []Answer) Report {
	r := Report{Probes: len(sent), sent: sent, answered: make([]bool, len(sent))}
	by := make([][]Answer, len(sent))
	for _, a := range answers {
		if a.Seq >= 0 && a.Seq < len(sent) && !slices.ContainsFunc(by[a.Seq], func(b Answer) bool { return b.Node == a.Node }) {
			by[a.Seq] = append(by[a.Seq], a)
		}
	}
	var runStart = -1
	for seq, as := range by {
		if len(as) == 0 {
			continue
		}
		r.Answered++
		r.answered[seq] = true
		if len(as) > 1 {
			r.Overlaps++
			if r.Overlapping == "" {
				var who []string
				for _, a := range as {
					who = append(who, a.Node+" (epoch "+a.Epoch+")")
				}
				r.Overlapping = fmt.Sprintf("probe %d answered by %s", seq, strings.Join(who, " and "))
			}
			if runStart < 0 {
				runStart = seq
			}
			r.Overlap += sent[seq].Sub(sent[max(runStart, seq-1)])
		} else {
			runStart = -1
		}
		a := as[0]
		if n := len(r.Holdings); n > 0 && r.Holdings[n-1].Node == a.Node && r.Holdings[n-1].Epoch == a.Epoch {
			r.Holdings[n-1].To = sent[seq]
			continue
		}
		r.Holdings = append(r.Holdings, Holding{Node: a.Node, Epoch: a.Epoch, From: sent[seq], To: sent[seq]})
	}
	return r
}

// GapAt is the outage a client saw around t: from the send time of the
// last answered probe sent at or before t to that of the first answered
// probe sent after t. It is 0 when t falls between two answered probes
// and no probe was lost, and -1 when no probe after t was answered.
func (r Report) GapAt(t time.Time) time.Duration {
	last, next := -1, -1
	for i, s := range r.sent {
		if !r.answered[i] {
			continue
		}
		if !s.After(t) {
			last = i
		} else {
			next = i
			break
		}
	}
	if next < 0 {
		return -1
	}
	if last < 0 || next == last+1 {
		return 0
	}
	return r.sent[next].Sub(r.sent[last])
}

// OutageAfter is the first outage a client saw after t: from the send time
// of the last answered probe before the first unanswered probe sent after
// t, to that of the next answered probe. A holder that is killed keeps
// answering until its fence closes, so the outage starts later than the
// fault. It is 0 when every probe after t was answered and -1 when the
// outage had not ended when the probes stopped.
func (r Report) OutageAfter(t time.Time) time.Duration {
	first := -1
	for i, s := range r.sent {
		if s.After(t) && !r.answered[i] {
			first = i
			break
		}
	}
	if first < 0 {
		return 0
	}
	last := -1
	for i := first - 1; i >= 0; i-- {
		if r.answered[i] {
			last = i
			break
		}
	}
	for i := first + 1; i < len(r.sent); i++ {
		if r.answered[i] {
			if last < 0 {
				return r.sent[i].Sub(t)
			}
			return r.sent[i].Sub(r.sent[last])
		}
	}
	return -1
}

// MaxGap is the longest run without an answer between two answered
// probes.
func (r Report) MaxGap() time.Duration {
	var gap time.Duration
	last := -1
	for i := range r.sent {
		if !r.answered[i] {
			continue
		}
		if last >= 0 && i > last+1 {
			gap = max(gap, r.sent[i].Sub(r.sent[last]))
		}
		last = i
	}
	return gap
}

// HolderAt is the node that answered the last answered probe sent at or
// before t ("" if none).
func (r Report) HolderAt(t time.Time) string {
	for i := len(r.Holdings) - 1; i >= 0; i-- {
		if !r.Holdings[i].From.After(t) {
			return r.Holdings[i].Node
		}
	}
	return ""
}

// String summarises the report for a test log.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d probes, %d answered, %d answered twice, longest gap %v; holders:", r.Probes, r.Answered, r.Overlaps, r.MaxGap())
	for _, h := range r.Holdings {
		fmt.Fprintf(&b, " %s(epoch %s) %s–%s;", h.Node, h.Epoch, h.From.Format("15:04:05.000"), h.To.Format("15:04:05.000"))
	}
	return b.String()
}
