package report

import (
	"time"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// Offsets of the sample drill: a node-loss of db1 (two faults from 3s
// to 13s); the database writes resume on db2 at 9.8s, the HTTP requests
// only at 14.2s, after the faults.
const (
	sampleFault     = 3 * time.Second
	sampleFaultEnd  = 13 * time.Second
	sampleDBBack    = 9800 * time.Millisecond
	sampleWebBack   = 14200 * time.Millisecond
	sampleLength    = 20 * time.Second
	sampleWebReason = "RTO 5s: HTTP GET http://198.18.0.100/ stopped for 11.2s"
)

// sample is a result as haven drill run node-loss fills it: two parts,
// two faults, the primary's move, and the web part NOT MET.
func sample() drill.Result {
	start := time.Date(2026, 12, 4, 23, 40, 5, 0, time.UTC)
	d := func(v time.Duration) *time.Duration { return &v }
	inject := func(id string, at time.Duration, spec fault.Spec, detail string) drill.Injected {
		return drill.Injected{Node: "db1", At: at, Fault: fault.Fault{
			ID: id, Spec: spec, Started: start.Add(at), Until: start.Add(at + spec.Duration), Detail: detail,
		}}
	}
	peers := []string{"db2", "db3", "lb1", "lb2"}
	r := drill.Result{
		Scenario: "node-loss",
		About:    "the primary's node lost: every haven process on it frozen and its traffic dropped for the fault's duration",
		Started:  start,
		Length:   sampleLength,
		Faults: []drill.Injected{
			inject("1", sampleFault, fault.Spec{Kind: fault.Drop, Peers: peers, Duration: 10 * time.Second}, "dropping traffic with 198.18.1.12, 198.18.1.13, 198.18.1.21, 198.18.1.22"),
			inject("2", sampleFault+40*time.Millisecond, fault.Spec{Kind: fault.Pause, Target: "agent", Duration: 9960 * time.Millisecond}, "SIGSTOP to agent (pid 812 and 14 processes under it)"),
		},
		Events: []drill.Event{
			{At: sampleFault, What: "fault 1 on db1: dropping traffic with 198.18.1.12, 198.18.1.13, 198.18.1.21, 198.18.1.22"},
			{At: sampleFault + 40*time.Millisecond, What: "fault 2 on db1: SIGSTOP to agent (pid 812 and 14 processes under it)"},
			{At: 9500 * time.Millisecond, What: "the primary is db2 (was db1)"},
			{At: sampleFaultEnd, What: "the faults end"},
		},
		Parts: []drill.PartResult{
			{
				Part: "database", Workload: "database writes through the router (haven_drill_writes)",
				OK: 640, Failed: 6, Indeterminate: 1,
				RTO: sampleDBBack - sampleFault, ObjectiveRTO: d(30 * time.Second), ObjectiveRPO: d(0),
				Met:      true,
				Outcomes: outcomes(sampleDBBack, 12, time.Second),
			},
			{
				Part: "web", Workload: "HTTP GET http://198.18.0.100/",
				OK: 720, Failed: 11,
				RTO: sampleWebBack - sampleFault, ObjectiveRTO: d(5 * time.Second),
				Met: false, Reasons: []string{sampleWebReason},
				Outcomes: outcomes(sampleWebBack, 12, time.Second),
			},
		},
		Met:     false,
		Reasons: []string{"web: " + sampleWebReason},
	}
	return r
}

// outcomes are a client's buckets over the sample drill: ok successes a
// bucket until the fault, none until back, one failure every failEvery
// in between (the client's timeouts), successes again from back on.
func outcomes(back time.Duration, ok int, failEvery time.Duration) []drill.Bucket {
	var out []drill.Bucket
	for at := time.Duration(0); at < sampleLength; at += drill.BucketWidth {
		b := drill.Bucket{At: at}
		switch {
		case at < sampleFault || at >= back:
			b.OK = ok
		case (at-sampleFault)%failEvery == 0 && at > sampleFault:
			b.Failed = 1
		default:
			continue // the operations hang: none ends in this bucket
		}
		out = append(out, b)
	}
	return out
}
