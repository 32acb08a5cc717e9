// Command dnslib measures the two DNS libraries haven's traffic manager
// could be built on, github.com/miekg/dns (v1, which haven uses) and
// codeberg.org/miekg/dns (v2), and prints the results as markdown.
//
// It runs the Go benchmarks of the answer path (answer_test.go) with go
// test, then a throughput comparison with real packets: each library's own
// UDP server (serve.go), one at a time on 127.0.0.1 pinned to CPU 1, loaded
// by dnsperf pinned to CPU 0. From this folder:
//
//	go run .                       # benchmarks, count 5; 5 dnsperf runs of 10 s per cell
//	go run . -quick                # count 1, 1 run of 3 s per cell
//	go run . -micro=false          # dnsperf only
//
// With -serve v1 or -serve v2 it is the server instead (the harness starts
// itself that way); it stops on SIGINT, SIGTERM or after -lifetime.
//
// This is its own module so that v2 never enters haven's dependencies.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var opt options
	flag.StringVar(&opt.serve, "serve", "", "run as the server of library v1 or v2 on -addr")
	flag.StringVar(&opt.addr, "addr", "127.0.0.1:15353", "address the servers listen on (127.0.0.1 only)")
	flag.DurationVar(&opt.lifetime, "lifetime", 2*time.Minute, "a server stops by itself after this long")
	flag.BoolVar(&opt.micro, "micro", true, "run the Go benchmarks")
	flag.IntVar(&opt.count, "count", 5, "go test -count for the benchmarks")
	flag.BoolVar(&opt.perf, "perf", true, "run the dnsperf comparison")
	flag.IntVar(&opt.runs, "runs", 5, "dnsperf runs per cell")
	flag.DurationVar(&opt.duration, "d", 10*time.Second, "duration of one dnsperf run")
	quick := flag.Bool("quick", false, "development: -count 1 -runs 1 -d 3s")
	flag.Parse()
	if *quick {
		opt.count, opt.runs, opt.duration = 1, 1, 3*time.Second
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, opt); err != nil {
		fmt.Fprintln(os.Stderr, "dnslib:", err)
		os.Exit(1)
	}
}

type options struct {
	serve    string
	addr     string
	lifetime time.Duration
	micro    bool
	count    int
	perf     bool
	runs     int
	duration time.Duration
}

func run(ctx context.Context, opt options) error {
	if opt.serve != "" {
		ctx, cancel := context.WithTimeout(ctx, opt.lifetime)
		defer cancel()
		err := serve(ctx, opt.serve, opt.addr, func() {})
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintf(os.Stderr, "dnslib: %s server stopped after -lifetime %s\n", opt.serve, opt.lifetime)
		}
		return err
	}
	if opt.micro {
		if err := micro(ctx, opt.count); err != nil {
			return err
		}
	}
	if opt.perf {
		if err := throughput(ctx, opt); err != nil {
			return err
		}
	}
	return nil
}
