package drill

import (
	"strings"
	"testing"
	"time"
)

func TestAnalyzeGapsAndOverlaps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sent []time.Time
	for i := range 10 {
		sent = append(sent, t0.Add(time.Duration(i)*10*time.Millisecond))
	}
	var answers []Answer
	answer := func(seq int, node, epoch string) {
		answers = append(answers, Answer{Seq: seq, Node: node, Epoch: epoch})
	}
	// n1 answers 0-2, nobody 3-5, n2 answers 6-9, and n1 answers 8 too.
	for seq := range 3 {
		answer(seq, "n1", "5")
	}
	for seq := 6; seq < 10; seq++ {
		answer(seq, "n2", "9")
	}
	answer(8, "n1", "5")
	answer(8, "n1", "5") // a duplicate datagram is one answer

	r := Analyze(sent, answers)
	if r.Answered != 7 || r.Overlaps != 1 {
		t.Fatalf("answered %d, overlaps %d; want 7 and 1", r.Answered, r.Overlaps)
	}
	if !strings.Contains(r.Overlapping, "probe 8") {
		t.Errorf("overlap described as %q", r.Overlapping)
	}
	if got := r.MaxGap(); got != 40*time.Millisecond {
		t.Errorf("MaxGap %v, want 40ms (probe 2 to probe 6)", got)
	}
	if got := r.GapAt(sent[3]); got != 40*time.Millisecond {
		t.Errorf("GapAt(probe 3) %v, want 40ms", got)
	}
	if got := r.GapAt(sent[0]); got != 0 {
		t.Errorf("GapAt(probe 0) %v, want 0: probe 1 was answered", got)
	}
	if got := r.GapAt(sent[9]); got != -1 {
		t.Errorf("GapAt(last probe) %v, want -1: nothing answered after it", got)
	}
	if got := r.OutageAfter(sent[0]); got != 40*time.Millisecond {
		t.Errorf("OutageAfter(probe 0) %v, want 40ms: n1 answered until probe 2", got)
	}
	if got := r.OutageAfter(sent[6]); got != 0 {
		t.Errorf("OutageAfter(probe 6) %v, want 0: every later probe was answered", got)
	}
	if got := r.HolderAt(sent[7]); got != "n2" {
		t.Errorf("HolderAt(probe 7) %q, want n2", got)
	}
	if len(r.Holdings) < 2 || r.Holdings[0].Node != "n1" || r.Holdings[1].Node != "n2" {
		t.Errorf("holdings %+v", r.Holdings)
	}
}
