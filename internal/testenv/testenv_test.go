package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

// recorder is a testing.TB that records how a helper ended the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

// run calls f with a recorder on a goroutine of its own, as the testing
// package runs a test, and returns the recorder once f has returned or
// ended the test.
func run(f func(t testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestNeed(t *testing.T) {
	const why = "needs dig (apt-get install bind9-dnsutils)"
	for _, tc := range []struct {
		ci         string
		ok         bool
		skip, fail string
	}{
		{ci: "", ok: true},
		{ci: "true", ok: true},
		{ci: "", skip: why},
		{ci: "1", skip: why}, // only "true" is CI
		{ci: "true", fail: why + "; CI=true, where scripts/prereqs.sh must provide it"},
	} {
		t.Run(fmt.Sprintf("CI=%q,ok=%v", tc.ci, tc.ok), func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			returned := false
			r := run(func(t testing.TB) {
				Need(t, tc.ok, "needs %s (apt-get install %s)", "dig", "bind9-dnsutils")
				returned = true
			})
			if returned != tc.ok || r.skipped != tc.skip || r.failed != tc.fail {
				t.Errorf("Need: returned %v, skipped %q, failed %q; want returned %v, skipped %q, failed %q",
					returned, r.skipped, r.failed, tc.ok, tc.skip, tc.fail)
			}
		})
	}
}

func TestNeedCommand(t *testing.T) {
	t.Setenv("CI", "")
	var path string
	if r := run(func(t testing.TB) { path = NeedCommand(t, "sh", "dash") }); r.skipped != "" || r.failed != "" || path == "" {
		t.Errorf("NeedCommand(sh) = %q; skipped %q, failed %q", path, r.skipped, r.failed)
	}
	r := run(func(t testing.TB) { NeedCommand(t, "haven-no-such-program", "haven-pkg") })
	if want := "needs haven-no-such-program (apt-get install haven-pkg)"; r.skipped != want {
		t.Errorf("NeedCommand of a missing program skipped %q, want %q", r.skipped, want)
	}
}

func TestPoll(t *testing.T) {
	calls := 0
	r := run(func(t testing.TB) {
		Poll(t, time.Minute, "the third call", func() (bool, string) {
			calls++
			return calls == 3, fmt.Sprint(calls)
		})
	})
	if r.failed != "" || calls != 3 {
		t.Errorf("Poll of a condition true on the third call: %d calls, failed %q", calls, r.failed)
	}

	r = run(func(t testing.TB) {
		Poll(t, 20*time.Millisecond, "never", func() (bool, string) { return false, "still\nnot" })
	})
	if want := "never: not within 20ms; last seen: \nstill\nnot"; r.failed != want {
		t.Errorf("Poll of a condition never true failed with %q, want %q", r.failed, want)
	}
}

func TestHaven(t *testing.T) {
	if testing.Short() {
		t.Skip("builds haven")
	}
	bin := Haven(t)
	if again := Haven(t); again != bin {
		t.Errorf("the second Haven = %s, want the first build %s", again, bin)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), Version) {
		t.Errorf("%s version: %v\n%s\nwant %s", bin, err, out, Version)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Error(err)
	}
}

// FreePort's ports are below the ephemeral range, where no connection's
// source port can take them, free when given, and never given twice.
func TestFreePortIsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("FreePort gave %d twice", p)
		}
		seen[p] = true
		if p < 10000 || p >= low {
			t.Fatalf("FreePort = %d, want 10000 <= port < %d (the ephemeral range's start)", p, low)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("FreePort = %d, which cannot be bound: %v", p, err)
		}
		l.Close()
	}
}

// FreePorts gives a run of consecutive free ports (a Galera node's group,
// IST and SST ports), and FreePort never gives one of them afterwards.
func TestFreePortsRunIsNotGivenAgain(t *testing.T) {
	first := FreePorts(t, "127.0.0.1", 5)
	for i := range 5 {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(first+i)))
		if err != nil {
			t.Fatalf("port %d of the run at %d cannot be bound: %v", i, first, err)
		}
		l.Close()
	}
	givenMu.Lock()
	defer givenMu.Unlock()
	for i := range 5 {
		if !given[first+i] {
			t.Errorf("port %d of the run at %d is not marked given: FreePort may give it again", first+i, first)
		}
	}
}
