package netlab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// TestMain runs the test binary as a traffic helper when NETLAB_HELPER
// says so: TestWANMeasure starts it inside hosts, so that the traffic's
// CPU is not the relay's.
func TestMain(m *testing.M) {
	if mode := os.Getenv("NETLAB_HELPER"); mode != "" {
		if err := helper(mode, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "netlab helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper is a one-connection TCP sink ("sink ADDR": it prints "ready",
// then, at the end of the stream, "BYTES SECONDS") or source ("source ADDR
// SECONDS": it writes for that long, then closes and waits for the sink to
// close).
func helper(mode string, args []string) error {
	switch {
	case mode == "sink" && len(args) == 1:
		l, err := net.Listen("tcp4", args[0])
		if err != nil {
			return err
		}
		fmt.Println("ready")
		c, err := l.Accept()
		if err != nil {
			return err
		}
		start := time.Now()
		c.SetDeadline(start.Add(time.Minute))
		size, err := io.Copy(io.Discard, c)
		if err != nil {
			return err
		}
		fmt.Println(size, time.Since(start).Seconds())
		return c.Close()
	case mode == "source" && len(args) == 2:
		secs, err := strconv.ParseFloat(args[1], 64)
		if err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp4", args[0], 10*time.Second)
		if err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		end := time.Now().Add(time.Duration(secs * float64(time.Second)))
		c.SetDeadline(end.Add(time.Minute))
		for time.Now().Before(end) {
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
		c.(*net.TCPConn).CloseWrite()
		_, err = io.Copy(io.Discard, c)
		return err
	}
	return fmt.Errorf("unknown mode %s %q", mode, args)
}

// TestWANMeasure measures what the WAN relay adds: round trips, the
// throughput of one TCP stream, the relay's CPU and its drops, for plain
// kernel forwarding, the relay with a 1µs delay (its own cost), and delays
// of 20ms and 50ms. docs/testing.md holds its numbers. It runs only with
// NETLAB_MEASURE=1:
//
//	NETLAB_MEASURE=1 go test -count=1 -run TestWANMeasure -v ./internal/netlab
func TestWANMeasure(t *testing.T) {
	if os.Getenv("NETLAB_MEASURE") != "1" {
		t.Skip("a measurement: set NETLAB_MEASURE=1 to run it")
	}
	ping := testenv.NeedCommand(t, "ping", "iputils-ping")
	n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}})
	n1, w1 := n.Host("n1"), n.Host("w1")
	reach(t, n1, w1.Addr)
	const seconds = 5

	var rows []string
	var kernelRTT time.Duration
	for _, d := range []time.Duration{0, time.Microsecond, 20 * time.Millisecond, 50 * time.Millisecond} {
		if err := n.SetWANDelay(d); err != nil {
			t.Fatal(err)
		}
		before := n.WANStats()
		avg, mdev := pingRTT(t, n1, ping, w1.Addr, d)
		if d == 0 {
			kernelRTT = avg
		}
		mbps, relayCPU, busy := throughput(t, n1, w1, seconds)
		after := n.WANStats()
		path := "kernel forwarding"
		if d > 0 {
			path = fmt.Sprintf("relay, delay %v", d)
		}
		rows = append(rows, fmt.Sprintf("| %s | %.3f ms ± %.3f | %+.3f ms | %.0f MB/s | %.2f cores (%.2f s/GB) | %.2f of %d | %d + %d |",
			path, ms(avg), ms(mdev), ms(avg-kernelRTT-2*d), mbps, relayCPU, relayCPU/mbps*1000, busy, runtime.NumCPU(),
			after.Dropped-before.Dropped, after.KernelDropped-before.KernelDropped))
	}
	t.Logf("one TCP stream for %ds, n1 -> w1; RTT of 100 pings, 10 ms apart\n"+
		"| path | RTT | added beyond 2×delay | TCP | relay CPU | machine busy | drops (relay + kernel) |\n"+
		"|---|---|---|---|---|---|---|\n%s", seconds, strings.Join(rows, "\n"))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

var pingSummary = regexp.MustCompile(`= ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) ms`)

// pingRTT runs 100 pings from h to dst, 10ms apart, and returns their
// average round trip and its deviation; each must take at least 2d.
func pingRTT(t *testing.T, h *netlab.Host, ping string, dst netip.Addr, d time.Duration) (avg, mdev time.Duration) {
	t.Helper()
	out, err := h.Command(testContext(t), ping, "-n", "-q", "-c", "100", "-i", "0.01", "-W", "5", dst.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("ping: %v: %s", err, out)
	}
	m := pingSummary.FindStringSubmatch(string(out))
	if m == nil || !strings.Contains(string(out), " 0% packet loss") {
		t.Fatalf("ping: lost replies or no summary:\n%s", out)
	}
	dur := func(s string) time.Duration {
		f, _ := strconv.ParseFloat(s, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	if least := dur(m[1]); least < 2*d {
		t.Fatalf("the fastest ping took %v, less than twice the delay %v", least, d)
	}
	return dur(m[2]), dur(m[4])
}

// throughput sends one TCP stream from from to to for seconds, between
// helper processes, and returns its rate in MB/s, the CPU the test process
// (the relay) used meanwhile in cores, and how busy the machine was, in
// cores.
func throughput(t *testing.T, from, to *netlab.Host, seconds int) (mbps, relayCPU, busy float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), time.Duration(seconds)*time.Second+time.Minute)
	defer cancel()
	addr := netip.AddrPortFrom(to.Addr, 5201).String()
	start := func(h *netlab.Host, mode string, args ...string) (*testenv.Buffer, chan error) {
		cmd := h.Command(ctx, os.Args[0], args...)
		cmd.Env = append(os.Environ(), "NETLAB_HELPER="+mode)
		out := &testenv.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		return out, done
	}
	sinkOut, sinkDone := start(to, "sink", addr)
	testenv.Poll(t, 10*time.Second, "the sink listening", func() (bool, string) {
		return strings.Contains(sinkOut.String(), "ready"), sinkOut.String()
	})
	cpu0 := selfCPU(t)
	idle0, total0 := machineCPU(t)
	wall0 := time.Now()
	srcOut, srcDone := start(from, "source", addr, strconv.Itoa(seconds))
	if err := <-srcDone; err != nil {
		t.Fatalf("source: %v: %s", err, srcOut.String())
	}
	if err := <-sinkDone; err != nil {
		t.Fatalf("sink: %v: %s", err, sinkOut.String())
	}
	wall := time.Since(wall0).Seconds()
	idle1, total1 := machineCPU(t)
	relayCPU = (selfCPU(t) - cpu0) / wall
	busy = ((total1 - total0) - (idle1 - idle0)) / (total1 - total0) * float64(runtime.NumCPU())
	var size, secs float64
	lines := strings.Split(strings.TrimSpace(sinkOut.String()), "\n")
	if _, err := fmt.Sscan(lines[len(lines)-1], &size, &secs); err != nil || secs == 0 {
		t.Fatalf("sink said %q", sinkOut.String())
	}
	return size / secs / 1e6, relayCPU, busy
}

// selfCPU returns the CPU seconds the test process has used.
func selfCPU(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	tv := func(v syscall.Timeval) float64 { return float64(v.Sec) + float64(v.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// machineCPU returns the idle and total ticks of every CPU, from /proc/stat.
func machineCPU(t *testing.T) (idle, total float64) {
	t.Helper()
	f, err := os.Open("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	fields := strings.Fields(s.Text()) // cpu user nice system idle iowait irq softirq steal ...
	for i, f := range fields[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return idle, total
}
