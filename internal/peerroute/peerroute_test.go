package peerroute

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// run starts Routes in host h's namespace for peers and returns how to
// stop it.
func run(t *testing.T, h *testnet.Host, recheck time.Duration, peers ...netip.Addr) func() {
	t.Helper()
	ns, err := netns.GetFromName(h.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Peers: peers, RTOMin: 20 * time.Millisecond, Recheck: recheck, Handle: nl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	stop := func() { cancel(); wg.Wait(); nl.Close(); ns.Close() }
	t.Cleanup(stop)
	return stop
}

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ourRoutes(t *testing.T, h *testnet.Host) string {
	return ip(t, "-n", h.Namespace, "route", "show", "proto", strconv.Itoa(Protocol))
}

var rtoField = regexp.MustCompile(`\brto:([0-9.]+)`)

// TestShortensTheRetransmissionFloor: a host route with a locked rto_min
// goes in for a directly connected peer, not for one behind the router,
// and TCP's retransmission timer to the peer drops from the kernel's
// 200 ms floor to the route's 20 ms on both ends once both have it. The
// routes go when Routes stops.
func TestShortensTheRetransmissionFloor(t *testing.T) {
	testnet.Require(t)
	testenv.NeedCommand(t, "ss", "iproute2")
	n := testnet.Start(t, testnet.Options{Hosts: []string{"a", "b"}, Segment2: []string{"far"}})
	a, b, far := n.Host("a"), n.Host("b"), n.Host("far")
	stopA := run(t, a, 0, b.Addr, far.Addr)
	stopB := run(t, b, 0, a.Addr)

	testenv.Poll(t, 5*time.Second, "a's route to b", func() (bool, string) {
		got := ourRoutes(t, a)
		return strings.Contains(got, b.Addr.String()+" dev eth0") && strings.Contains(got, "rto_min lock 20ms"), got
	})
	if got := ourRoutes(t, a); strings.Contains(got, far.Addr.String()) {
		t.Errorf("a installed a route to %s, which it reaches through the router:\n%s", far.Addr, got)
	}

	// A connection from a to b: both ends' timers follow the routes.
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", b.Addr.String()+":7000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("x"))
			time.Sleep(2 * time.Second) // keeps the connection open while ss looks
			c.Close()
		}
	}()
	c, err := a.DialContext(context.Background(), "tcp", b.Addr.String()+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Read(make([]byte, 1))
	for _, h := range []*testnet.Host{a, b} {
		out := ip(t, "netns", "exec", h.Namespace, "ss", "-tin", "state", "established")
		m := rtoField.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no rto in ss's output:\n%s", h.Name, out)
		}
		if rto, _ := strconv.ParseFloat(m[1], 64); rto >= 200 {
			t.Errorf("%s: TCP's retransmission timer is %sms with the peer route in place; want about 20ms:\n%s", h.Name, m[1], out)
		}
	}

	stopA()
	stopB()
	for _, h := range []*testnet.Host{a, b} {
		if got := ourRoutes(t, h); strings.TrimSpace(got) != "" {
			t.Errorf("%s: routes left after stop:\n%s", h.Name, got)
		}
	}
}

// TestPutsBackAndCleansUp: a route removed from outside comes back at the
// next check, and a route a crashed agent left (another peer's) is removed
// at start.
func TestPutsBackAndCleansUp(t *testing.T) {
	testnet.Require(t)
	n := testnet.Start(t, testnet.Options{Hosts: []string{"a", "b", "c"}})
	a, b, c := n.Host("a"), n.Host("b"), n.Host("c")
	ip(t, "-n", a.Namespace, "route", "add", c.Addr.String()+"/32", "dev", "eth0", "proto", strconv.Itoa(Protocol))
	run(t, a, 50*time.Millisecond, b.Addr)
	testenv.Poll(t, 5*time.Second, "a's route to b, and c's stale one gone", func() (bool, string) {
		got := ourRoutes(t, a)
		return strings.Contains(got, b.Addr.String()) && !strings.Contains(got, c.Addr.String()), got
	})
	ip(t, "-n", a.Namespace, "route", "del", b.Addr.String()+"/32", "proto", strconv.Itoa(Protocol))
	testenv.Poll(t, 5*time.Second, "a's route to b put back", func() (bool, string) {
		got := ourRoutes(t, a)
		return strings.Contains(got, b.Addr.String()), got
	})
}

func TestNewRejectsAFractionOfAMillisecond(t *testing.T) {
	if _, err := New(Config{RTOMin: 1500 * time.Microsecond}); err == nil || !strings.Contains(err.Error(), "whole number of milliseconds") {
		t.Errorf("New with rto_min 1.5ms: %v", err)
	}
}
