package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// faultEvery is each fault writer's pace: 25 files a second.
const faultEvery = 40 * time.Millisecond

// result is one run of one scenario on one target.
type result struct {
	scenario, target string
	run              int

	// The fault scenarios.
	stall     time.Duration // the longest write of either writer
	acked     int
	refused   int
	lost      int    // acknowledged files absent or different on a brick
	firstLost string //
	healed    time.Duration
	healErr   string

	// throughput.
	writers int
	perSec  float64
}

func (b *bench) scenario(ctx context.Context, sc, target string) ([]result, error) {
	if sc == "throughput" {
		return b.throughput(ctx, target)
	}
	var out []result
	for run := 1; run <= b.opt.runs; run++ {
		harness.Logf("%s on %s: run %d of %d", sc, target, run, b.opt.runs)
		r, err := b.fault(ctx, sc, target, run)
		if err != nil {
			return out, err
		}
		harness.Logf("  longest write %s, %d acknowledged, %d refused, %d lost; healed %s %s",
			harness.Ms(r.stall), r.acked, r.refused, r.lost, harness.Dur(r.healed), r.healErr)
		out = append(out, r)
	}
	return out, nil
}

// fault runs one fault under both writers and checks the volume after its
// heal.
func (b *bench) fault(ctx context.Context, sc, target string, run int) (result, error) {
	r := result{scenario: sc, target: target, run: run}
	c, err := b.startCell(ctx, target, fmt.Sprintf("%s-%s-%d", sc, target, run))
	if err != nil {
		return r, err
	}
	defer c.close()
	var ws []*writer
	stop := make(chan struct{})
	done := make(chan struct{}, len(clients))
	for _, cl := range clients {
		w, err := newWriter(filepath.Join(c.mountDir(cl), "w"), cl, faultEvery)
		if err != nil {
			return r, err
		}
		ws = append(ws, w)
		go func() { w.run(stop, 1<<20); done <- struct{}{} }()
	}
	harness.Sleep(ctx, 3*time.Second)
	switch sc {
	case "cut":
		if err := c.net.CutLink(c.net.Host("st3")); err != nil {
			return r, err
		}
		harness.Sleep(ctx, b.opt.cutFor)
		if err := c.net.RestoreLink(c.net.Host("st3")); err != nil {
			return r, err
		}
	case "kill":
		if _, err := c.killGluster("st3"); err != nil {
			return r, err
		}
		harness.Sleep(ctx, 10*time.Second)
		if target != "haven" {
			if err := c.startGlusterd(ctx, "st3"); err != nil {
				return r, err
			}
		}
		harness.Sleep(ctx, b.opt.cutFor-10*time.Second)
	}
	ended := time.Now()
	harness.Sleep(ctx, 5*time.Second)
	close(stop)
	for range ws {
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			return r, fmt.Errorf("a writer is still blocked 3 minutes after the fault ended: a mount hangs")
		}
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	healed, err := c.waitHealed(ctx, ended, b.opt.healMax)
	r.healed = healed
	if err != nil {
		r.healErr = err.Error()
	}
	var bricks []string
	for _, s := range servers {
		bricks = append(bricks, c.brick(s))
	}
	for _, w := range ws {
		r.stall = max(r.stall, w.longest)
		r.acked += len(w.acked)
		r.refused += w.refused
		lost, first := w.missing("w", bricks)
		r.lost += lost
		if r.firstLost == "" {
			r.firstLost = first
		}
	}
	return r, nil
}

// throughput measures files per second through app1's mount with 1 and 4
// writers, and the local disk's first (before the first target's).
func (b *bench) throughput(ctx context.Context, target string) ([]result, error) {
	var out []result
	if target == b.opt.targets[0] {
		for _, n := range []int{1, 4} {
			dir := filepath.Join(b.dir, fmt.Sprintf("local-%d", n))
			r, err := b.measure(ctx, "local disk", dir, n)
			if err != nil {
				return out, err
			}
			os.RemoveAll(dir)
			out = append(out, r)
		}
	}
	c, err := b.startCell(ctx, target, "throughput-"+target)
	if err != nil {
		return out, err
	}
	defer c.close()
	for _, n := range []int{1, 4} {
		r, err := b.measure(ctx, target, filepath.Join(c.mountDir("app1"), fmt.Sprintf("t%d", n)), n)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// measure runs n writers as fast as they go into dir for the
// throughput's duration.
func (b *bench) measure(ctx context.Context, target, dir string, n int) (result, error) {
	r := result{scenario: "throughput", target: target, writers: n}
	var ws []*writer
	stop := make(chan struct{})
	done := make(chan struct{}, n)
	for i := range n {
		w, err := newWriter(dir, fmt.Sprintf("w%d", i), 0)
		if err != nil {
			return r, err
		}
		ws = append(ws, w)
		go func() { w.run(stop, 1<<20); done <- struct{}{} }()
	}
	start := time.Now()
	harness.Sleep(ctx, b.opt.tputFor)
	close(stop)
	for range ws {
		<-done
	}
	took := time.Since(start)
	for _, w := range ws {
		r.acked += len(w.acked)
		r.refused += w.refused
	}
	r.perSec = float64(r.acked) / took.Seconds()
	harness.Logf("throughput on %s, %d writers: %.0f files/s (%d refused)", target, n, r.perSec, r.refused)
	return r, ctx.Err()
}
