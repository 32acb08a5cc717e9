// Package report draws a drill's result as one HTML page that a person
// opens from a file, mails or keeps beside a change ticket: the verdict,
// each part's observed RTO and RPO against its objectives, and a timeline
// of the faults, the clients' outcomes and the deployment's changes on one
// time axis.
//
// The page is self-contained because it outlives the drill and travels:
// the CSS and the timeline (SVG) are inline, fonts are the system's, and
// there is no script, image, style sheet or font it would fetch, so it
// looks the same offline, years later, and tells no server it was opened.
// Everything the result holds is text from outside (node names, error
// messages, URLs), so html/template escapes all of it in its context.
//
// The elements carry stable hooks for tests and for people who script
// around the page: id="verdict" with data-met, class="part" with
// data-part and data-met (the tables), class="lane" likewise (the
// timeline), class="fault", class="bucket ok" and class="bucket failed",
// class="gap" (no operation succeeded) and class="event".
package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
)

//go:embed report.html.tmpl
var pageText string

var pageTmpl = template.Must(template.New("report").Parse(pageText))

// HTML writes r as a self-contained HTML page to w.
func HTML(w io.Writer, r drill.Result) error {
	if err := pageTmpl.Execute(w, newPage(r)); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// page is what the template draws: every text and coordinate worked out
// here, so that the template only places them.
type page struct {
	Scenario, About string
	Started, Length string
	Met             bool
	Verdict         string
	Reasons         []string
	Faults          []faultEntry
	Parts           []partTable
	Chart           chart
	Events          []eventItem
	BucketWidth     string
}

type faultEntry struct {
	ID, Node, Kind, What, From, To, Detail string
}

type partTable struct {
	Part, Workload      string
	Met                 bool
	Verdict             string
	RTO, RTOObjective   string
	RPO, RPOObjective   string
	Lost                string
	OK, Failed, Unknown int
	Reasons             []string
	// RTOClass and RPOClass mark an observation kept or broken; empty
	// when there is no objective or nothing was measured.
	RTOClass, RPOClass string
	HasRPO             bool
}

// eventItem is an event in the list under the timeline, numbered as
// its marker is (the list's own numbers).
type eventItem struct {
	At, What string
}

func newPage(r drill.Result) page {
	p := page{
		Scenario: r.Scenario,
		About:    r.About,
		Length:   seconds(r.Length),
		Met:      r.Met,
		Verdict:  verdict(r.Met),
		Reasons:  r.Reasons,
		Chart:    newChart(r),
		// The footer says what a bar of the timeline counts.
		BucketWidth: duration(drill.BucketWidth),
	}
	if !r.Started.IsZero() {
		p.Started = r.Started.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	for _, f := range r.Faults {
		p.Faults = append(p.Faults, faultEntry{
			ID: f.Fault.ID, Node: f.Node, Kind: string(f.Fault.Spec.Kind), What: faultWhat(f.Fault.Spec),
			From: seconds(f.At), To: seconds(faultEnd(r, f)), Detail: f.Fault.Detail,
		})
	}
	for _, pr := range r.Parts {
		p.Parts = append(p.Parts, newPartTable(pr))
	}
	for _, e := range r.Events {
		p.Events = append(p.Events, eventItem{At: seconds(e.At), What: e.What})
	}
	return p
}

func newPartTable(p drill.PartResult) partTable {
	t := partTable{
		Part: p.Part, Workload: p.Workload, Met: p.Met, Verdict: verdict(p.Met),
		RTO: duration(p.RTO), RTOObjective: orNone(p.ObjectiveRTO),
		RPOObjective: orNone(p.ObjectiveRPO),
		OK:           p.OK, Failed: p.Failed, Unknown: p.Indeterminate, Reasons: p.Reasons,
	}
	if p.Unbounded {
		t.RTO = "more than " + t.RTO + " (never succeeded again)"
	}
	if o := p.ObjectiveRTO; o != nil {
		t.RTOClass = kept(!p.Unbounded && p.RTO <= *o)
	}
	// Only writes can be lost: an HTTP workload has no RPO to observe.
	if !p.LosesWrites() {
		return t
	}
	t.HasRPO = true
	if p.Unbounded {
		// judgeLoad looks for lost writes only once the database answers
		// again: there is nothing to compare with the objective.
		t.RPO, t.Lost = "not measured (the database never answered again)", "not measured"
		return t
	}
	t.RPO = duration(p.RPO)
	t.Lost = fmt.Sprintf("%d of %d acknowledged", len(p.Lost), p.OK)
	if o := p.ObjectiveRPO; o != nil {
		t.RPOClass = kept(len(p.Lost) == 0 || p.RPO < *o)
	}
	return t
}

// kept is the class of an observation against its objective.
func kept(ok bool) string {
	if ok {
		return "kept"
	}
	return "broken"
}

// faultWhat says at what a fault aims: its target role, its peers, or
// its level.
func faultWhat(s fault.Spec) string {
	switch {
	case len(s.Peers) > 0:
		return "peers " + strings.Join(s.Peers, ", ")
	case s.Kind == fault.Fill:
		return fmt.Sprintf("%s to %d%%", s.Target, s.Level)
	}
	return s.Target
}

// faultEnd is when a fault ended, as an offset from the drill's start:
// its Until as the agent set it, or its duration after it began when the
// result does not say (a result made by hand, or read from old JSON).
func faultEnd(r drill.Result, f drill.Injected) time.Duration {
	if !f.Fault.Until.IsZero() && !r.Started.IsZero() {
		if end := f.Fault.Until.Sub(r.Started); end >= f.At {
			return end
		}
	}
	return f.At + f.Fault.Spec.Duration
}

func verdict(met bool) string {
	if met {
		return "MET"
	}
	return "NOT MET"
}

// seconds is an offset on the timeline, to a tenth of a second.
func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// duration is an observed time, as haven.yaml would write it.
func duration(d time.Duration) string {
	return config.Duration(d.Round(time.Millisecond)).String()
}

func orNone(d *time.Duration) string {
	if d == nil {
		return "none"
	}
	return config.Duration(*d).String()
}
