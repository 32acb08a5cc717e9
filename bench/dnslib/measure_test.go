package main

import (
	"strings"
	"testing"
	"time"
)

// dnsperf 2.10.0's statistics, as Debian's package prints them.
const perfOut = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q -l 3
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         102970
  Queries completed:    102960 (99.99%)
  Queries lost:         10 (0.01%)

  Response codes:       NOERROR 102960 (100.00%)
  Average packet size:  request 38, response 54
  Run time (s):         3.000983
  Queries per second:   34312.420374

  Average Latency (s):  0.002910 (min 0.000031, max 0.011920)
  Latency StdDev (s):   0.000462
`

func TestParsePerf(t *testing.T) {
	r, err := parsePerf([]byte(perfOut))
	if err != nil {
		t.Fatal(err)
	}
	if r != (perfResult{qps: 34312.420374, sent: 102970, completed: 102960, lost: 10}) {
		t.Errorf("parsePerf = %+v", r)
	}
	if _, err := parsePerf([]byte("dnsperf: error: no queries\n")); err == nil || !strings.Contains(err.Error(), "no statistics") {
		t.Errorf("parsePerf of no statistics: err %v, want no statistics", err)
	}
}

func TestDnsperfArgs(t *testing.T) {
	got := strings.Join(dnsperfArgs("127.0.0.1:15353", "/q", 10*time.Second, []string{"-E", ecsOption}), " ")
	want := "taskset -c 0 dnsperf -s 127.0.0.1 -p 15353 -d /q -l 10 -c 1 -T 1 -q 100 -t 1 -E 8:00011800c61200"
	if got != want {
		t.Errorf("dnsperfArgs = %q, want %q", got, want)
	}
}

func TestParseBench(t *testing.T) {
	out := "BenchmarkAnswer/v1/plain-2   200764   1122 ns/op   128 B/op   3 allocs/op\n" +
		"BenchmarkAnswer/v1/plain-2   200764   1100 ns/op   128 B/op   3 allocs/op\n" +
		"BenchmarkAnswer/v2/plain-2   134337   1926 ns/op   232 B/op   6 allocs/op\nPASS\n"
	res, err := parseBench([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if r := res["Answer/v1/plain"]; r == nil || median(r.ns) != 1111 || r.allocs != 3 || r.bytes != 128 {
		t.Errorf("Answer/v1/plain = %+v", r)
	}
	if !strings.Contains(benchTable(res), "| Answer plain | 1111 | 3 (128) | 1926 | 6 (232) | 1.73 (1.75) |") {
		t.Errorf("benchTable:\n%s", benchTable(res))
	}
}
