package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// report is the markdown report of every result.
func report(opt options, rs []result, versions []string) string {
	var sb strings.Builder
	run := fmt.Sprintf("%d runs of each fault per target, faults of %s, throughput runs of %s; targets %s",
		opt.runs, opt.cutFor, opt.tputFor, strings.Join(opt.targets, ", "))
	sb.WriteString(harness.Header("Replicated file volume: haven against GlusterFS's defaults", run, opt.quick, harness.Machine(), versions))
	sb.WriteString("`glusterfs` is the guide's volume made by hand with GlusterFS's defaults; `haven` is haven's volume of the same shape (replica 3 on the same three servers, the same FUSE client). See bench/volume/README.md.\n\n")
	for _, sc := range []string{"cut", "kill"} {
		var rows []result
		for _, r := range rs {
			if r.scenario == sc {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		title := map[string]string{
			"cut":  "A server's link cut for " + opt.cutFor.String() + " under two writers (16 KiB files, fsync, 25/s each)",
			"kill": "A server's glusterd, brick and self-heal daemon killed (kill -9) under two writers; the peer's glusterd started again after 10s",
		}[sc]
		sb.WriteString("## " + title + "\n\n")
		t := harness.NewTable(&sb, harness.Left("target"), harness.Right("run"), harness.Right("longest write"),
			harness.Right("acknowledged"), harness.Right("refused"), harness.Right("lost"), harness.Right("healed after"))
		for _, r := range rows {
			healed := harness.Dur(r.healed)
			if r.healErr != "" {
				healed = "not within " + opt.healMax.String()
			}
			t.Row(r.target, fmt.Sprint(r.run), harness.Dur(r.stall), fmt.Sprint(r.acked), fmt.Sprint(r.refused), fmt.Sprint(r.lost), healed)
		}
		sb.WriteString("\n")
		sb.WriteString(summary(rows))
		for _, r := range rows {
			if r.firstLost != "" {
				fmt.Fprintf(&sb, "- %s run %d: first file missing or different: %s\n", r.target, r.run, r.firstLost)
			}
		}
		sb.WriteString("\n")
	}
	var tput []result
	for _, r := range rs {
		if r.scenario == "throughput" {
			tput = append(tput, r)
		}
	}
	if len(tput) > 0 {
		sb.WriteString("## Small files: create, write 16 KiB, fsync, close\n\n")
		t := harness.NewTable(&sb, harness.Left("target"), harness.Right("writers"), harness.Right("files/s"), harness.Right("vs local disk"), harness.Right("vs glusterfs"))
		for _, r := range tput {
			t.Row(r.target, fmt.Sprint(r.writers), fmt.Sprintf("%.0f", r.perSec), ratio(r, tput, "local disk"), ratio(r, tput, "glusterfs"))
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// ratio is r's files per second over those of target with as many writers.
func ratio(r result, all []result, target string) string {
	for _, o := range all {
		if o.target == target && o.writers == r.writers && o.perSec > 0 && r.target != target {
			return fmt.Sprintf("%.2f×", r.perSec/o.perSec)
		}
	}
	return ""
}

// summary is the median longest write of each target and their ratio.
func summary(rows []result) string {
	stalls := map[string][]time.Duration{}
	var order []string
	for _, r := range rows {
		if _, ok := stalls[r.target]; !ok {
			order = append(order, r.target)
		}
		stalls[r.target] = append(stalls[r.target], r.stall)
	}
	var parts []string
	for _, t := range order {
		parts = append(parts, fmt.Sprintf("%s %s", t, harness.Dur(harness.Median(stalls[t]))))
	}
	out := "Median longest write: " + strings.Join(parts, ", ")
	if p, h := stalls["glusterfs"], stalls["haven"]; len(p) > 0 && len(h) > 0 {
		out += fmt.Sprintf("; GlusterFS ÷ haven: %s", harness.Ratio(harness.Median(p), harness.Median(h)))
	}
	return out + ".\n\n"
}
