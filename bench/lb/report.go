package main

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

func (b *bench) header() string {
	var sb strings.Builder
	sb.WriteString(harness.Header("haven load-balancer benchmark (bench/lb)",
		fmt.Sprintf("%d interleaved round(s) of %s per target, medians reported", b.opt.rounds, b.opt.duration),
		b.opt.quick, b.machine, b.versions))
	sb.WriteString("Placement: each proxy on CPU 0 with one worker (HAProxy nbthread 1, nginx worker_processes 1, " +
		"Caddy and haven GOMAXPROCS=1; in TCP mode haven adds a processor, on the same CPU, for its io_uring loop to wait on); wrk, vegeta, the harness and the three nginx backends on CPU 1. " +
		"Round robin over the same three backends, keep-alive to the backends, logging off, active health checks every 2s " +
		"(nginx open source has none: passive max_fails=1 fail_timeout=2s). " +
		"The sections marked two cores run each proxy with two workers (HAProxy nbthread 2, nginx worker_processes 2, Caddy and haven GOMAXPROCS=2) " +
		"on CPUs 0 and 1, shared with wrk (two threads) and the backends, as on a small server that runs its own load balancer.\n\n")
	return sb.String()
}

// latHeader names a latency column: at the fixed rate, or none (two cores).
func latHeader(p string, rate int) string {
	if rate > 0 {
		return fmt.Sprintf("%s @%d/s", p, rate)
	}
	return p
}

func (b *bench) perfReport(res *perfResult) string {
	var sb strings.Builder
	for _, r := range res.scenarios {
		fmt.Fprintf(&sb, "## %s\n\n", r.title)
		load := fmt.Sprintf("wrk -t 1 -c %d -d %s", b.opt.conns, b.opt.duration)
		if r.cores == 2 {
			load = fmt.Sprintf("taskset -c 0,1 wrk -t 2 -c %d -d %s", b.opt.conns, b.opt.duration)
		}
		if r.close {
			load += " -H 'Connection: close'"
		}
		ka := "-keepalive=true"
		if r.close {
			ka = "-keepalive=false"
		}
		if r.rate > 0 {
			fmt.Fprintf(&sb, "Throughput: `%s`. Latency: `vegeta attack -rate=%d -duration=%s %s -workers=%d -max-workers=%d` (%s).\n\n", load, r.rate, b.opt.duration, ka, vegetaWorkers, vegetaWorkers, r.rateNote)
		} else {
			fmt.Fprintf(&sb, "Throughput: `%s`. Latency: %s.\n\n", load, r.rateNote)
		}
		tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("req/s"), harness.Right("req/s ÷ HAProxy"), harness.Right("CPU-s / 10k req"),
			harness.Right("req / CPU-s"), harness.Right("CPU efficiency vs HAProxy"), harness.Right(latHeader("p50", r.rate)), harness.Right(latHeader("p99", r.rate)), harness.Left("errors"))
		for _, t := range b.opt.targets {
			if t == "caddy" && b.caddyNote != "" && r.status[t] == "" {
				r.status[t] = "n/a: " + b.caddyNote
			}
			if st := r.status[t]; st != "" && len(okRuns(r.runs[t])) == 0 {
				tab.Partial([]string{t, st}, "")
				continue
			}
			runs := r.runs[t]
			if len(runs) == 0 {
				continue
			}
			rps, cpu := medianRPS(runs), medianCPU(runs)
			name := t
			if t == "direct" {
				name = "direct (backend b1)"
			}
			rpsRatio := fmtRatio(roundRatio(runs, r.runs["haproxy"], func(x runRec) float64 { return x.wrk.RPS }, false))
			cpuRatio := fmtRatio(roundRatio(runs, r.runs["haproxy"], cpuPer10k, true))
			if t == "direct" {
				cpuRatio = "(backend's own CPU)"
			}
			var p50s, p99s []float64
			var vFail, vReq int64
			var latErr, achieved string
			for _, l := range r.lat[t] {
				if l.err != "" {
					latErr = l.err
					continue
				}
				p50s = append(p50s, float64(l.v.Latencies.P50))
				p99s = append(p99s, float64(l.v.Latencies.P99))
				vFail += l.v.failed()
				vReq += l.v.Requests
				if l.v.Throughput < 0.97*float64(r.rate) {
					achieved = fmt.Sprintf(" (achieved %.0f/s)", l.v.Throughput)
				}
			}
			p50, p99 := "–", "–"
			if len(p50s) > 0 {
				p50, p99 = fmtDur(int64(harness.Median(p50s))), fmtDur(int64(harness.Median(p99s)))+achieved
			} else if latErr != "" {
				p50 = "failed: " + harness.Truncate(latErr, 80)
			}
			var non2xx, sock int64
			var errs []string
			trouble := map[string]int64{}
			for _, rr := range runs {
				non2xx += rr.wrk.Non2xx
				sock += rr.wrk.SockErr
				if rr.err != "" {
					errs = append(errs, harness.Truncate(rr.err, 80))
				}
				if rr.wrk.SockDesc != "" {
					errs = append(errs, rr.wrk.SockDesc)
				}
				for k, v := range rr.tcp {
					trouble[k] += v
				}
			}
			errCell := fmt.Sprintf("wrk non-2xx %d, socket %d", non2xx, sock)
			if r.rate > 0 {
				errCell += fmt.Sprintf("; vegeta failed %d/%d", vFail, vReq)
			}
			if len(errs) > 0 {
				errCell += " (" + strings.Join(slices.Compact(slices.Sorted(slices.Values(errs))), "; ") + ")"
			}
			if d := describeTrouble(trouble); d != "" {
				errCell += "; host TCP: " + d
			}
			if st := r.status[t]; st != "" {
				errCell += " — " + harness.Truncate(st, 120)
			}
			perCPU := "–"
			if cpu > 0 {
				perCPU = fmt.Sprintf("%.0f", 10000/cpu)
			}
			tab.Row(name, fmt.Sprintf("%.0f", rps), rpsRatio, fmtCPU(cpu), perCPU, cpuRatio, p50, p99, errCell)
		}
		sb.WriteString("\n")
		var others, steal float64
		var busyStarts, n int
		for _, rs := range r.runs {
			for _, rr := range rs {
				others, steal = max(others, rr.others), max(steal, rr.steal)
				n++
				if !rr.quiet {
					busyStarts++
				}
			}
		}
		if r.cores == 2 {
			fmt.Fprintf(&sb, "Noise: %d of %d runs started on a busy machine (>10%% CPU after waiting up to %s); the proxies share their CPUs with the load here, so no run was judged noisy.", busyStarts, n, b.opt.quietWait)
		} else {
			fmt.Fprintf(&sb, "Noise: during the proxy runs kept, CPU 0 was busy with other work up to %.0f%% of the time, and the hypervisor stole up to %.0f%%; "+
				"%d of %d runs started on a busy machine (>10%% CPU after waiting up to %s); %d noisy runs were repeated.", 100*others, 100*steal, busyStarts, n, b.opt.quietWait, r.repeated)
		}
		if others > 0.05 || steal > 0.05 {
			sb.WriteString(" **The machine was not quiet: trust CPU-s/10k over req/s and latency.**")
		}
		sb.WriteString("\n\n")
		if b.opt.rounds > 1 {
			sb.WriteString("Rounds (req/s; CPU-s/10k): ")
			var parts []string
			for _, t := range b.opt.targets {
				var v []string
				for _, rr := range r.runs[t] {
					v = append(v, fmt.Sprintf("%.0f; %s", rr.wrk.RPS, fmtCPU(cpuPer10k(rr))))
				}
				if len(v) > 0 {
					parts = append(parts, t+" "+strings.Join(v, " / "))
				}
			}
			sb.WriteString(strings.Join(parts, " · ") + ".\n\n")
		}
	}
	if res.idleWant > 0 {
		fmt.Fprintf(&sb, "## %d idle keep-alive client connections (HTTP mode)\n\n", res.idleWant)
		sb.WriteString("Each connection made one request and then stayed open; RSS is VmRSS summed over the proxy's process tree.\n\n")
		tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("connections held"), harness.Right("RSS before"), harness.Right("RSS with them"),
			harness.Right("KiB per connection"), harness.Left("notes"))
		for _, t := range b.opt.targets {
			ir, ok := res.idle[t]
			name := t
			if t == "direct" {
				name = "direct (backend b1)"
			}
			if !ok {
				if note := res.idleNote[t]; note != "" {
					tab.Partial([]string{name}, harness.Truncate(note, 160))
				}
				continue
			}
			note := ""
			if ir.Failed > 0 {
				note = fmt.Sprintf("%d failed, first: %s", ir.Failed, harness.Truncate(ir.FirstErr, 120))
			}
			tab.Row(name, strconv.Itoa(ir.Open), fmtKiB(ir.RSSBeforeKiB), fmtKiB(ir.RSSAfterKiB), fmt.Sprintf("%.1f", ir.perConnKiB()), note)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

func (b *bench) failoverReport(rows []failoverRow) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Failure under load\n\n")
	fmt.Fprintf(&sb, "Load: the harness's own HTTP/1.1 client, %d keep-alive connections, GET /, no retries, %s per run (at most %d requests); "+
		"fresh backends and proxy for every run. Proxies run with their retry settings: HAProxy `retries 3`, `option redispatch`, "+
		"`retry-on conn-failure empty-response response-timeout`; nginx `proxy_next_upstream error timeout http_502 http_503`; "+
		"Caddy `lb_try_duration 2s`; haven its defaults. Socket errors include failed dials, and \"on reuse\" counts the failures of a reused keep-alive "+
		"connection before any response byte (the race a browser retries silently).\n\n",
		b.opt.failoverConc, b.opt.failoverDuration, b.opt.failoverMaxReq)
	for _, ev := range failoverEvents {
		fmt.Fprintf(&sb, "- **%s**: %s.\n", ev.name, ev.desc)
	}
	sb.WriteString("\n")
	tab := harness.NewTable(&sb, harness.Left("event"), harness.Left("proxy"), harness.Right("requests"), harness.Right("2xx"), harness.Right("error responses"),
		harness.Right("socket errors (on reuse)"), harness.Right("p99"), harness.Right("max"), harness.Left("notes"))
	for _, r := range rows {
		if r.skipped != "" {
			tab.Partial([]string{r.event, r.proxy}, harness.Truncate(r.skipped, 200))
			continue
		}
		s := r.stats
		var notes []string
		if s.Non2xx > 0 {
			var codes []string
			keys := make([]int, 0, len(s.Codes))
			for c := range s.Codes {
				keys = append(keys, c)
			}
			sort.Ints(keys)
			for _, c := range keys {
				if c/100 != 2 {
					codes = append(codes, fmt.Sprintf("%d×%d", s.Codes[c], c))
				}
			}
			notes = append(notes, strings.Join(codes, " "))
		}
		if s.SockErr > 0 && s.FirstErr != "" {
			notes = append(notes, "first: "+harness.Truncate(s.FirstErr, 80))
		}
		notes = append(notes, r.notes...)
		tab.Row(r.event, r.proxy, fmt.Sprint(s.Requests), fmt.Sprint(s.OK), fmt.Sprint(s.Non2xx), fmt.Sprintf("%d (%d)", s.SockErr, s.ReuseErr),
			fmtDur(s.P99.Nanoseconds()), fmtDur(s.Max.Nanoseconds()), strings.Join(notes, "; "))
	}
	sb.WriteString("\n")
	return sb.String()
}

func fmtRatio(v float64) string {
	if v <= 0 {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func fmtCPU(v float64) string {
	if v <= 0 {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func fmtDur(ns int64) string {
	if ns <= 0 {
		return "–"
	}
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtKiB(k int64) string {
	if k >= 10*1024 {
		return fmt.Sprintf("%.1f MiB", float64(k)/1024)
	}
	return fmt.Sprintf("%d KiB", k)
}
