package netlab_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
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
	const seconds = 5

	var rows []string
	var kernelRTT time.Duration
	for _, c := range []struct {
		d   time.Duration
		big bool // the sender's TCP buffers may grow to 32 MiB, not 4
	}{{0, false}, {time.Microsecond, false}, {20 * time.Millisecond, false}, {50 * time.Millisecond, false}, {50 * time.Millisecond, true}} {
		// A Net of its own for each, so that the relay's counters start
		// from zero.
		n := testnet.Start(t, netlab.Options{Hosts: []string{"n1"}, Segment2: []string{"w1"}, WANDelay: c.d})
		n1, w1 := n.Host("n1"), n.Host("w1")
		reach(t, n1, w1.Addr)
		if c.big {
			err := n1.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_wmem", []byte("4096 16384 33554432"), 0)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		median, p99, busyPing := pingRTT(t, n1, w1.Addr, c.d)
		if c.d == 0 {
			kernelRTT = median
		}
		mbps, relayCPU, busy := throughput(t, n1, w1, seconds)
		st := n.WANStats()
		path := "kernel forwarding"
		if c.d > 0 {
			path = fmt.Sprintf("relay, delay %v", c.d)
		}
		if c.big {
			path += ", sender's tcp_wmem up to 32 MiB"
		}
		rows = append(rows, fmt.Sprintf("| %s | %.3f / %.3f ms | %+.3f ms | %.2f | %.0f MB/s | %.2f cores (%.2f s/GB) | %.2f | %d + %d | %.1f MiB |",
			path, ms(median), ms(p99), ms(median-kernelRTT-2*c.d), busyPing, mbps, relayCPU, relayCPU/mbps*1000, busy,
			st.Dropped, st.KernelDropped, float64(st.MaxQueuedBytes)/(1<<20)))
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("n1 (198.18.1.11) -> w1 (198.18.2.11) on a %d-core machine; 100 ICMP echoes 10 ms apart, then one TCP stream for %ds\n"+
		"| path | RTT median / p99 | added to the median beyond 2×delay | cores busy (echoes) | TCP | relay CPU | cores busy (TCP) | drops (relay + kernel) | most held |\n"+
		"|---|---|---|---|---|---|---|---|---|\n%s", runtime.NumCPU(), seconds, strings.Join(rows, "\n"))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pingRTT sends 100 ICMP echo requests from h to dst, one at a time and
// 10ms apart, and returns the median and 99th percentile of their round
// trips, and how many cores the machine kept busy meanwhile; each must
// take at least 2d.
func pingRTT(t *testing.T, h *netlab.Host, dst netip.Addr, d time.Duration) (median, p99 time.Duration, busy float64) {
	t.Helper()
	c, err := h.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	idle0, total0 := machineCPU(t)
	var rtts []time.Duration
	buf := make([]byte, 1500)
	for seq := range 100 {
		// Echo request: type 8, code 0, checksum, identifier, sequence.
		req := []byte{8, 0, 0, 0, 0x68, 0x76, 0, byte(seq), 'n', 'e', 't', 'l', 'a', 'b', 0, 0}
		sum := icmpChecksum(req)
		req[2], req[3] = byte(sum>>8), byte(sum)
		start := time.Now()
		if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(start.Add(5 * time.Second))
		for {
			size, _, err := c.ReadFrom(buf)
			if err != nil {
				t.Fatalf("echo %d: %v", seq, err)
			}
			if size == len(req) && buf[0] == 0 && bytes.Equal(buf[4:size], req[4:]) {
				break
			}
		}
		rtts = append(rtts, time.Since(start))
		time.Sleep(10 * time.Millisecond)
	}
	idle1, total1 := machineCPU(t)
	slices.Sort(rtts)
	if rtts[0] < 2*d {
		t.Fatalf("the fastest echo took %v, less than twice the delay %v", rtts[0], d)
	}
	return rtts[50], rtts[98], busyCores(idle0, total0, idle1, total1)
}

// icmpChecksum is the Internet checksum of b (RFC 1071).
func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
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
	busy = busyCores(idle0, total0, idle1, total1)
	var size, secs float64
	lines := strings.Split(strings.TrimSpace(sinkOut.String()), "\n")
	if _, err := fmt.Sscan(lines[len(lines)-1], &size, &secs); err != nil || secs == 0 {
		t.Fatalf("sink said %q", sinkOut.String())
	}
	return size / secs / 1e6, relayCPU, busy
}

// busyCores returns how many cores were busy between two readings of
// machineCPU.
func busyCores(idle0, total0, idle1, total1 float64) float64 {
	return ((total1 - total0) - (idle1 - idle0)) / (total1 - total0) * float64(runtime.NumCPU())
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
