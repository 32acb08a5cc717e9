package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests int64
	Seconds  float64
	RPS      float64
	Non2xx   int64 // wrk counts "Non-2xx or 3xx responses"
	SockErr  int64 // connect + read + write + timeout
	SockDesc string
}

var (
	reWrkTotal  = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m)`)
	reWrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reWrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reWrkSock   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk's text report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := reWrkTotal.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no request count in output: %s", harness.LastLines(out, 4))
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	v, _ := strconv.ParseFloat(m[2], 64)
	switch m[3] {
	case "us":
		v /= 1e6
	case "ms":
		v /= 1e3
	case "m":
		v *= 60
	}
	r.Seconds = v
	if m := reWrkRPS.FindStringSubmatch(out); m != nil {
		r.RPS, _ = strconv.ParseFloat(m[1], 64)
	} else if r.Seconds > 0 {
		r.RPS = float64(r.Requests) / r.Seconds
	}
	if m := reWrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reWrkSock.FindStringSubmatch(out); m != nil {
		var parts []string
		for i, name := range []string{"connect", "read", "write", "timeout"} {
			n, _ := strconv.ParseInt(m[i+1], 10, 64)
			r.SockErr += n
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", name, n))
			}
		}
		r.SockDesc = strings.Join(parts, ", ")
	}
	return r, nil
}

// runWrk runs wrk against url with threads threads: one pinned to CPU 1
// (the harness is), or two on CPUs 0 and 1.
func (b *bench) runWrk(ctx context.Context, url string, close bool, threads int, raw string) (wrkResult, error) {
	args := []string{"wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(b.opt.conns), "-d", fmt.Sprintf("%ds", int(b.opt.duration.Seconds())), "--timeout", "5s"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, url)
	if threads == 2 {
		args = append([]string{"taskset", "-c", "0,1"}, args...)
	}
	out, err := harness.Run(ctx, b.opt.duration+30*time.Second, nil, args...)
	_ = os.WriteFile(raw, []byte(strings.Join(args, " ")+"\n"+out), 0o644)
	if err != nil {
		return wrkResult{}, err
	}
	return parseWrk(out)
}

// vegetaResult is the part of `vegeta report -type=json` that we use.
// Latencies are in nanoseconds.
type vegetaResult struct {
	Latencies struct {
		P50 int64 `json:"50th"`
		P90 int64 `json:"90th"`
		P99 int64 `json:"99th"`
		Max int64 `json:"max"`
	} `json:"latencies"`
	Requests    int64            `json:"requests"`
	Rate        float64          `json:"rate"`
	Throughput  float64          `json:"throughput"`
	Success     float64          `json:"success"`
	StatusCodes map[string]int64 `json:"status_codes"`
	Errors      []string         `json:"errors"`
}

// failed is the number of requests that did not get a 2xx.
func (v vegetaResult) failed() int64 {
	return v.Requests - int64(v.Success*float64(v.Requests)+0.5)
}

// vegetaWorkers bounds vegeta's concurrency. Unbounded, vegeta on one CPU
// falls into a spiral (a late request spawns workers, workers open
// connections, which makes the next requests later); 16 workers keep its
// own overhead at about 0.5ms per request here and sustain >15k req/s.
const vegetaWorkers = 16

// runVegeta attacks url at a fixed rate (open loop) and reports latencies.
func (b *bench) runVegeta(ctx context.Context, url string, rate int, keepalive bool, raw string) (vegetaResult, error) {
	var v vegetaResult
	targets := raw + ".targets"
	if err := os.WriteFile(targets, []byte("GET "+url+"\n"), 0o644); err != nil {
		return v, err
	}
	bin := raw + ".bin"
	args := []string{b.vegetaBin, "attack", "-targets=" + targets, "-rate=" + strconv.Itoa(rate), "-duration=" + fmt.Sprintf("%ds", int(b.opt.duration.Seconds())),
		"-keepalive=" + strconv.FormatBool(keepalive), "-timeout=5s", "-output=" + bin,
		"-workers=" + strconv.Itoa(vegetaWorkers), "-max-workers=" + strconv.Itoa(vegetaWorkers)}
	if out, err := harness.Run(ctx, b.opt.duration+30*time.Second, nil, args...); err != nil {
		return v, fmt.Errorf("%w %s", err, harness.LastLines(out, 3))
	}
	out, err := harness.Run(ctx, 60*time.Second, nil, b.vegetaBin, "report", "-type=json", bin)
	if err != nil {
		return v, err
	}
	_ = os.WriteFile(raw+".json", []byte(out), 0o644)
	if !b.opt.keepRaw {
		_ = os.Remove(bin)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return v, fmt.Errorf("vegeta report: %w", err)
	}
	return v, nil
}

// rawPath names a raw output file for one run.
func (b *bench) rawPath(parts ...string) string {
	return filepath.Join(b.rawDir, strings.Join(parts, "-"))
}
