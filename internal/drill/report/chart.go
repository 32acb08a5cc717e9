package report

import (
	"fmt"
	"strconv"
	"time"

	"github.com/haven-ha/haven/internal/drill"
)

// The timeline's geometry, in SVG user units (CSS pixels at 100%): labels
// on the left, the time axis across the rest. Rows from the top: the
// event markers (in up to eventLevels rows, so that close events do not
// hide each other), a row per fault, a lane per part, the axis.
const (
	chartWidth  = 960
	plotLeft    = 190
	plotRight   = chartWidth - 24
	eventLevels = 3
	eventRow    = 18
	faultRow    = 22
	laneRow     = 68
	barsHeight  = 50
	axisRow     = 30
	// labelRunes bounds a label left of the plot; the whole text is in
	// the element's tooltip and in the tables.
	labelRunes = 26
)

// px is a coordinate, printed to a tenth.
type px float64

func (p px) String() string { return strconv.FormatFloat(float64(p), 'f', 1, 64) }

// chart is the timeline as the template draws it.
type chart struct {
	Width, Height   int
	Left, Right     px
	PlotWidth       px
	FaultsTop, Axis px
	Ticks           []tick
	Faults          []faultBar
	Lanes           []lane
	Events          []eventMark
}

type tick struct {
	X     px
	Label string
}

type faultBar struct {
	X, W, Y, LabelY px
	Label, Title    string
	Node, Kind      string
}

type lane struct {
	Part              string
	Met               bool
	Verdict           string
	Label             string
	Top, Height       px
	LabelY, VerdictY  px
	Buckets           []bar
	Gaps              []bar
	Baseline, BarsTop px
	Title             string
	// Failing counts the buckets with failed operations.
	Failing int
}

// bar is a rectangle with its tooltip: an outcome bucket (OK or failed
// operations) or a gap without success.
type bar struct {
	Class      string
	X, Y, W, H px
	At         string
	Count      int
	Title      string
}

type eventMark struct {
	N          int
	X, Y, Line px
	Title      string
}

// timeScale maps offsets from the drill's start to x.
type timeScale struct{ extent time.Duration }

func (s timeScale) x(d time.Duration) px {
	return px(plotLeft + float64(plotRight-plotLeft)*d.Seconds()/s.extent.Seconds())
}

func newChart(r drill.Result) chart {
	s := timeScale{extent: extent(r)}
	c := chart{Width: chartWidth, Left: plotLeft, Right: plotRight, PlotWidth: plotRight - plotLeft}
	c.FaultsTop = px(8 + eventLevels*eventRow + 6)
	y := float64(c.FaultsTop)
	for _, f := range r.Faults {
		c.Faults = append(c.Faults, newFaultBar(s, r, f, y))
		y += faultRow
	}
	y += 8
	for _, p := range r.Parts {
		c.Lanes = append(c.Lanes, newLane(s, p, y))
		y += laneRow
	}
	c.Axis = px(y + 4)
	c.Height = int(y) + 4 + axisRow
	c.Ticks = ticks(s)
	c.Events = eventMarks(s, r.Events, c.Axis)
	return c
}

// extent is the time the axis spans: the drill's length, or longer if
// a fault, an event or an outcome lies beyond it; at least a second.
func extent(r drill.Result) time.Duration {
	e := max(r.Length, time.Second)
	for _, f := range r.Faults {
		e = max(e, faultEnd(r, f))
	}
	for _, ev := range r.Events {
		e = max(e, ev.At)
	}
	for _, p := range r.Parts {
		if n := len(p.Outcomes); n > 0 {
			e = max(e, p.Outcomes[n-1].At+drill.BucketWidth)
		}
	}
	return e
}

func newFaultBar(s timeScale, r drill.Result, f drill.Injected, y float64) faultBar {
	end := faultEnd(r, f)
	x0, x1 := s.x(f.At), s.x(end)
	label := fmt.Sprintf("%s on %s", f.Fault.Spec.Kind, f.Node)
	return faultBar{
		X: x0, W: max(x1-x0, 2), Y: px(y + 5), LabelY: px(y + 15),
		Label: clip(label), Node: f.Node, Kind: string(f.Fault.Spec.Kind),
		Title: fmt.Sprintf("fault %s on %s, %s to %s: %s", f.Fault.ID, f.Node, seconds(f.At), seconds(end), f.Fault.Detail),
	}
}

// newLane draws a part's outcomes: per bucket, the operations that
// succeeded (up from the baseline) and those that failed (above them),
// scaled to the part's busiest bucket; and behind them, each stretch of
// buckets in which none succeeded, which is the outage the client saw.
func newLane(s timeScale, p drill.PartResult, top float64) lane {
	l := lane{
		Part: p.Part, Met: p.Met, Verdict: verdict(p.Met), Label: clip(p.Part),
		Title: p.Part + ": " + p.Workload,
		Top:   px(top + 2), Height: px(laneRow - 6),
		LabelY: px(top + 26), VerdictY: px(top + 44),
		BarsTop: px(top + 8), Baseline: px(top + 8 + barsHeight),
	}
	busiest := 1
	for _, b := range p.Outcomes {
		busiest = max(busiest, b.OK+b.Failed)
	}
	unit := barsHeight / float64(busiest)
	for _, b := range p.Outcomes {
		x0, x1 := s.x(b.At), s.x(b.At+drill.BucketWidth)
		w := max(x1-x0, 1)
		at := strconv.FormatFloat(b.At.Seconds(), 'f', 2, 64)
		span := fmt.Sprintf("%s to %s", seconds(b.At), seconds(b.At+drill.BucketWidth))
		okH := 0.0
		if b.OK > 0 {
			okH = max(float64(b.OK)*unit, 1)
			l.Buckets = append(l.Buckets, bar{Class: "bucket ok", X: x0, W: w, Y: l.Baseline - px(okH), H: px(okH), At: at, Count: b.OK,
				Title: fmt.Sprintf("%s: %d succeeded", span, b.OK)})
		}
		if b.Failed > 0 {
			// At least 3 units high: one failure among a busy
			// bucket's successes must still show.
			h := max(float64(b.Failed)*unit, 3)
			h = min(h, barsHeight-okH)
			l.Buckets = append(l.Buckets, bar{Class: "bucket failed", X: x0, W: w, Y: l.Baseline - px(okH+h), H: px(h), At: at, Count: b.Failed,
				Title: fmt.Sprintf("%s: %d failed", span, b.Failed)})
			l.Failing++
		}
	}
	for _, g := range gaps(p.Outcomes) {
		x0, x1 := s.x(g[0]), s.x(g[1])
		l.Gaps = append(l.Gaps, bar{Class: "gap", X: x0, W: max(x1-x0, 1), Y: l.BarsTop, H: barsHeight,
			At:    strconv.FormatFloat(g[0].Seconds(), 'f', 2, 64),
			Title: fmt.Sprintf("nothing succeeded from %s to %s (%s)", seconds(g[0]), seconds(g[1]), duration(g[1]-g[0]))})
	}
	return l
}

// gaps returns the stretches, between the first and the last bucket, of
// buckets in which no operation succeeded (missing buckets included:
// during an outage the operations hang, and end, failed, only later), as
// [from, to) offsets.
func gaps(out []drill.Bucket) [][2]time.Duration {
	if len(out) == 0 {
		return nil
	}
	ok := map[time.Duration]bool{}
	first, last := out[0].At, out[0].At
	for _, b := range out {
		ok[b.At] = ok[b.At] || b.OK > 0
		first, last = min(first, b.At), max(last, b.At)
	}
	var gs [][2]time.Duration
	var from time.Duration = -1
	for at := first; at <= last+drill.BucketWidth; at += drill.BucketWidth {
		switch {
		case at <= last && !ok[at] && from < 0:
			from = at
		case (at > last || ok[at]) && from >= 0:
			gs = append(gs, [2]time.Duration{from, at})
			from = -1
		}
	}
	return gs
}

// tickSteps are the axis's steps, in seconds; ticks picks the first that
// gives at most maxTicks ticks.
var tickSteps = []int{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600}

const maxTicks = 12

func ticks(s timeScale) []tick {
	step := tickSteps[len(tickSteps)-1]
	for _, st := range tickSteps {
		if s.extent.Seconds()/float64(st) <= maxTicks {
			step = st
			break
		}
	}
	var ts []tick
	for sec := 0; time.Duration(sec)*time.Second <= s.extent; sec += step {
		ts = append(ts, tick{X: s.x(time.Duration(sec) * time.Second), Label: strconv.Itoa(sec) + "s"})
	}
	return ts
}

// eventMarks places a numbered marker per event above the faults, in
// the lowest of eventLevels rows where it does not cover the marker
// before it, with a line down to the axis.
func eventMarks(s timeScale, evs []drill.Event, axis px) []eventMark {
	const room = 18 // a marker's width, and then some
	lastX := make([]px, eventLevels)
	for i := range lastX {
		lastX[i] = -room
	}
	var ms []eventMark
	for i, e := range evs {
		x := s.x(e.At)
		level := 0
		for l := range lastX {
			if x-lastX[l] >= room {
				level = l
				break
			}
			if lastX[l] < lastX[level] {
				level = l
			}
		}
		lastX[level] = x
		ms = append(ms, eventMark{N: i + 1, X: x, Y: px(8 + eventRow/2 + level*eventRow), Line: axis,
			Title: fmt.Sprintf("%d. at %s: %s", i+1, seconds(e.At), e.What)})
	}
	return ms
}

// clip shortens a label to labelRunes.
func clip(s string) string {
	r := []rune(s)
	if len(r) <= labelRunes {
		return s
	}
	return string(r[:labelRunes-1]) + "…"
}
