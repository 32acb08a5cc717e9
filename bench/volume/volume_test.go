package main

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := options{runs: 3, targets: allTargets, scenarios: allScenarios, cutFor: time.Minute, healMax: 12 * time.Minute, tputFor: 15 * time.Second, install: "auto"}
	if err := validate(ok); err != nil {
		t.Fatalf("the defaults are refused: %v", err)
	}
	for name, change := range map[string]func(*options){
		"a target":    func(o *options) { o.targets = []string{"nfs"} },
		"a scenario":  func(o *options) { o.scenarios = []string{"flood"} },
		"no runs":     func(o *options) { o.runs = 0 },
		"a short cut": func(o *options) { o.cutFor = time.Second },
		"an install":  func(o *options) { o.install = "sometimes" },
	} {
		o := ok
		change(&o)
		if err := validate(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestReport: every fault row, the medians and their ratio, and the
// throughput ratios against the local disk and the default volume.
func TestReport(t *testing.T) {
	rs := []result{
		{scenario: "cut", target: "glusterfs", run: 1, stall: 80 * time.Second, acked: 150, healed: 25 * time.Second},
		{scenario: "cut", target: "haven", run: 1, stall: 2 * time.Second, acked: 3000, healed: 40 * time.Second},
		{scenario: "kill", target: "haven", run: 1, stall: time.Second, acked: 3000, lost: 2, firstLost: "w-1 on st3", healErr: "not healed"},
		{scenario: "throughput", target: "local disk", writers: 1, perSec: 2000},
		{scenario: "throughput", target: "glusterfs", writers: 1, perSec: 100},
		{scenario: "throughput", target: "haven", writers: 1, perSec: 120},
	}
	md := report(options{runs: 1, targets: allTargets, cutFor: time.Minute, healMax: 12 * time.Minute, tputFor: 15 * time.Second}, rs, []string{"haven test"})
	for _, want := range []string{
		"| glusterfs | 1 | 80.00 s | 150 | 0 | 0 | 25.00 s |",
		"Median longest write: glusterfs 80.00 s, haven 2.00 s; GlusterFS ÷ haven: 40.0×",
		"| haven | 1 | 1.00 s | 3000 | 0 | 2 | not within 12m0s |",
		"first file missing or different: w-1 on st3",
		"| haven | 1 | 120 | 0.06× | 1.20× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
}
