package vip

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAddress(t *testing.T) {
	l := newLAN(t)
	a := l.a
	for _, p := range []netip.Prefix{testVIP4, testVIP6} {
		t.Run(p.String(), func(t *testing.T) {
			has := func() bool {
				t.Helper()
				var ok bool
				a.do(t, func() error {
					var err error
					ok, err = HasAddress("eth0", p.Addr())
					return err
				})
				return ok
			}
			if has() {
				t.Fatal("present before AddAddress")
			}
			for range 2 {
				a.do(t, func() error { return AddAddress("eth0", p) })
				if !has() {
					t.Fatal("missing after AddAddress")
				}
			}
			shown := ipCmd(t, "-n", a.name, "addr", "show", "dev", "eth0", "to", p.Addr().String())
			if !strings.Contains(shown, p.String()) {
				t.Fatalf("ip addr show:\n%s", shown)
			}
			if p.Addr().Is6() && (!strings.Contains(shown, "nodad") || strings.Contains(shown, "tentative")) {
				t.Fatalf("IPv6 VIP not usable at once:\n%s", shown)
			}
			for range 2 {
				a.do(t, func() error { return RemoveAddress("eth0", p) })
				if has() {
					t.Fatal("present after RemoveAddress")
				}
			}
			// The node's own address is untouched.
			own := a.v4
			if p.Addr().Is6() {
				own = a.v6
			}
			a.do(t, func() error {
				ok, err := HasAddress("eth0", own)
				if err == nil && !ok {
					t.Errorf("own address %s gone", own)
				}
				return err
			})
		})
	}

	a.do(t, func() error {
		if err := AddAddress("nosuch0", testVIP4); err == nil || !strings.Contains(err.Error(), "vip: add 198.18.10.100/24 to nosuch0:") {
			t.Errorf("AddAddress on a missing interface: %v", err)
		}
		return nil
	})
}

func TestFindInterface(t *testing.T) {
	l := newLAN(t)
	l.a.do(t, func() error {
		for _, vip := range []netip.Addr{testVIP4.Addr(), testVIP6.Addr()} {
			got, err := FindInterface(vip, "")
			if err != nil || got != "eth0" {
				t.Errorf("FindInterface(%s) = %q, %v; want eth0", vip, got, err)
			}
		}
		if got, err := FindInterface(testVIP4.Addr(), "eth0"); err != nil || got != "eth0" {
			t.Errorf("FindInterface with a name = %q, %v", got, err)
		}

		_, err := FindInterface(netip.MustParseAddr("198.19.99.1"), "")
		if err == nil {
			t.Error("FindInterface outside every prefix: no error")
			return nil
		}
		for _, want := range []string{"198.19.99.1", "eth0 198.18.10.1/24", "set the interface explicitly"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "lo ") {
			t.Errorf("error %q lists loopback", err)
		}

		_, err = FindInterface(testVIP4.Addr(), "eth9")
		if err == nil || !strings.Contains(err.Error(), `no interface "eth9"`) || !strings.Contains(err.Error(), "eth0") {
			t.Errorf("FindInterface with a missing name: %v", err)
		}
		return nil
	})
}
