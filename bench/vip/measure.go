package main

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/drill"
)

// probeRun is what one prober run saw, probe by probe.
type probeRun struct {
	interval time.Duration
	sent     []time.Time
	by       [][]string // the distinct nodes that answered probe i, sorted
}

func newProbeRun(interval time.Duration, sent []time.Time, answers []drill.Answer) probeRun {
	p := probeRun{interval: interval, sent: sent, by: make([][]string, len(sent))}
	for _, a := range answers {
		if a.Seq < 0 || a.Seq >= len(sent) || slices.Contains(p.by[a.Seq], a.Node) {
			continue
		}
		p.by[a.Seq] = append(p.by[a.Seq], a.Node)
	}
	for _, b := range p.by {
		slices.Sort(b)
	}
	return p
}

// twoHolders counts the probes that two or more nodes answered, and the
// time with two holders: for each run of consecutive such probes, from the
// send time of its first probe to that of its last, plus one probe
// interval (so one doubly answered probe counts as one interval).
func (p probeRun) twoHolders() (probes int, d time.Duration) {
	start := -1
	for i := 0; i <= len(p.by); i++ {
		double := i < len(p.by) && len(p.by[i]) > 1
		if double {
			probes++
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			d += p.sent[i-1].Sub(p.sent[start]) + p.interval
			start = -1
		}
	}
	return probes, d
}

// firstDouble describes the first probe two nodes answered: "n1+n2", or ""
// when there was none.
func (p probeRun) firstDouble() string {
	for _, b := range p.by {
		if len(b) > 1 {
			return strings.Join(b, "+")
		}
	}
	return ""
}

// holderChanges counts how often the node answering alone changed: probes
// that nobody or several nodes answered are skipped, so n1, n1+n2, n2 is
// one change.
func (p probeRun) holderChanges() int {
	n, last := 0, ""
	for _, b := range p.by {
		if len(b) != 1 {
			continue
		}
		if last != "" && b[0] != last {
			n++
		}
		last = b[0]
	}
	return n
}

// failovers counts the changes of the node answering alone away from
// node, as holderChanges counts them: how often node lost the address.
func (p probeRun) failovers(node string) int {
	n, last := 0, ""
	for _, b := range p.by {
		if len(b) != 1 {
			continue
		}
		if last == node && b[0] != node {
			n++
		}
		last = b[0]
	}
	return n
}

// answeredBy returns the nodes that answered probes sent in [from, to),
// sorted.
func (p probeRun) answeredBy(from, to time.Time) []string {
	var out []string
	for i, s := range p.sent {
		if !s.Before(from) && s.Before(to) {
			out = append(out, p.by[i]...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// answered reports whether node answered any probe sent in [from, to).
func (p probeRun) answered(node string, from, to time.Time) bool {
	for i, s := range p.sent {
		if !s.Before(from) && s.Before(to) && slices.Contains(p.by[i], node) {
			return true
		}
	}
	return false
}

// unanswered is the number of probes sent in [from, to) that no node
// answered, times the probe interval.
func (p probeRun) unanswered(from, to time.Time) time.Duration {
	n := 0
	for i, s := range p.sent {
		if !s.Before(from) && s.Before(to) && len(p.by[i]) == 0 {
			n++
		}
	}
	return time.Duration(n) * p.interval
}

// gaps counts the runs of unanswered probes that start in [from, to), and
// returns the longest, measured as drill measures a gap: from the send
// time of the answered probe before the run to that of the answered probe
// after it, but no further than to (nor the last probe).
func (p probeRun) gaps(from, to time.Time) (n int, longest time.Duration) {
	for i := 0; i < len(p.by); i++ {
		if len(p.by[i]) > 0 || i == 0 || len(p.by[i-1]) == 0 {
			continue
		}
		// i is the first unanswered probe after an answered one.
		j := i
		for j < len(p.by) && len(p.by[j]) == 0 {
			j++
		}
		if p.sent[i].Before(from) || !p.sent[i].Before(to) {
			i = j
			continue
		}
		end := p.sent[len(p.sent)-1]
		if j < len(p.by) {
			end = p.sent[j]
		}
		if end.After(to) {
			end = to
		}
		n++
		longest = max(longest, end.Sub(p.sent[i-1]))
		i = j
	}
	return n, longest
}

// lastAlone is the node that answered alone the last such probe sent
// before t ("" if none).
func (p probeRun) lastAlone(t time.Time) string {
	for i := len(p.sent) - 1; i >= 0; i-- {
		if p.sent[i].Before(t) && len(p.by[i]) == 1 {
			return p.by[i][0]
		}
	}
	return ""
}

// steady reports whether the last n probes were all answered by node alone.
func (p probeRun) steady(node string, n int) bool {
	if len(p.by) < n || n <= 0 {
		return false
	}
	for _, b := range p.by[len(p.by)-n:] {
		if len(b) != 1 || b[0] != node {
			return false
		}
	}
	return true
}

// cells renders the probe table for the raw output: one entry per probe,
// the nodes that answered it joined by "+", "" for none.
func (p probeRun) cells() []string {
	out := make([]string, len(p.by))
	for i, b := range p.by {
		out[i] = strings.Join(b, "+")
	}
	return out
}

// runResult is one fault, as the client saw it.
type runResult struct {
	Run    int    `json:"run"`
	Holder string `json:"holder"` // before the fault
	After  string `json:"after"`  // answering alone just before the heal
	// FaultAt and HealAt are offsets from the first probe.
	FaultAt time.Duration `json:"fault_at_ns"`
	HealAt  time.Duration `json:"heal_at_ns"`
	// Outage is drill's Report.OutageAfter(fault): the first client-observed
	// outage after the fault; -1 when the address was not answered again
	// before the probes stopped.
	Outage time.Duration `json:"outage_ns"`
	// MaxGap is the longest gap between two answered probes in the run.
	MaxGap time.Duration `json:"max_gap_ns"`
	// Unanswered is the time without any answer from the fault to the
	// heal: unanswered probes times the probe interval.
	Unanswered time.Duration `json:"unanswered_ns"`
	// FaultGaps counts the runs of unanswered probes that began between
	// the fault and the heal: more than one means the address came back
	// and went again.
	FaultGaps int `json:"fault_gaps"`
	// PreUnanswered, PreGaps and PreLongest describe the steady state
	// before the fault (FaultAt long).
	PreUnanswered   time.Duration `json:"pre_unanswered_ns"`
	PreGaps         int           `json:"pre_gaps"`
	PreLongest      time.Duration `json:"pre_longest_gap_ns"`
	TwoHolderProbes int           `json:"two_holder_probes"`
	TwoHolder       time.Duration `json:"two_holder_ns"`
	TwoHolderWho    string        `json:"two_holder_who,omitempty"`
	Changes         int           `json:"holder_changes"`
	// Failovers counts the changes away from Holder.
	Failovers int `json:"failovers"`
	// Command is how long `haven vip move` took, in a planned handover.
	Command    time.Duration `json:"command_ns,omitempty"`
	CommandOut string        `json:"command_output,omitempty"`
	Notes      []string      `json:"notes,omitempty"`
	Err        string        `json:"error,omitempty"`
}

// never stands for an outage that had not ended when the probes stopped.
const never = time.Duration(math.MaxInt64)

// summary aggregates the runs of one target in one scenario.
type summary struct {
	Runs, Failed int
	// Median and Worst are over the runs' outages; Unrecovered counts the
	// runs whose outage had not ended when the probes stopped: they count
	// as longer than any other, and Median or Worst is never when they
	// decide it.
	Median, Worst time.Duration
	Unrecovered   int
	// MedianUnanswered and WorstUnanswered are over the runs' Unanswered.
	MedianUnanswered, WorstUnanswered time.Duration
	WorstGap                          time.Duration
	RunsTwo                           int
	TwoHolder                         time.Duration
	Changes                           int
	Failovers                         int
}

func summarize(runs []runResult) summary {
	var s summary
	var outages, unanswered []time.Duration
	for _, r := range runs {
		if r.Err != "" {
			s.Failed++
			continue
		}
		s.Runs++
		if r.Outage < 0 {
			s.Unrecovered++
			outages = append(outages, never)
		} else {
			outages = append(outages, r.Outage)
		}
		unanswered = append(unanswered, r.Unanswered)
		s.WorstGap = max(s.WorstGap, r.MaxGap)
		if r.TwoHolderProbes > 0 {
			s.RunsTwo++
		}
		s.TwoHolder += r.TwoHolder
		s.Changes += r.Changes
		s.Failovers += r.Failovers
	}
	s.Median = medianDur(outages)
	s.MedianUnanswered = medianDur(unanswered)
	if len(outages) > 0 {
		s.Worst = slices.Max(outages)
		s.WorstUnanswered = slices.Max(unanswered)
	}
	return s
}

// medianDur is the median of v: the mean of the middle two for an even
// count (never if either is never); 0 for none.
func medianDur(v []time.Duration) time.Duration {
	// The upper middle value is never when either middle value is.
	if harness.Percentile(v, 50) == never {
		return never
	}
	return harness.Median(v)
}
