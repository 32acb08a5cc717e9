package vip

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

func TestARPPacket(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	got := arpPacket(arpRequest, mac, netip.MustParseAddr("198.18.1.100"))
	want := []byte{
		0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, request
		2, 0, 0, 0, 0, 1, 198, 18, 1, 100, // sender
		0, 0, 0, 0, 0, 0, 198, 18, 1, 100, // target
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("arpPacket = % x, want % x", got, want)
	}
}

// announceUntil announces vip from h until b's neighbour entry for it holds
// h's MAC; a frame can be lost, so the caller repeats, as here.
func announceUntil(t *testing.T, h, b *host, vip netip.Addr) {
	t.Helper()
	sent := 0
	testenv.Poll(t, 5*time.Second, "b learns "+h.name+"'s MAC for "+vip.String(), func() (bool, string) {
		h.do(t, func() error { return Announce("eth0", vip) })
		sent++
		mac, seen := b.neighMAC(t, vip)
		return mac == h.mac.String(), seen
	})
	t.Logf("%s: b's entry for %s points at %s after %d announcement(s)", h.name, vip, h.mac, sent)
}

func TestAnnounceIPv4Failover(t *testing.T) {
	l := newLAN(t)
	a, b, c := l.a, l.b, l.c
	vip := testVIP4.Addr()

	// b creates entries from gratuitous ARP only with arp_accept; without
	// it (the default) it updates the entries it has, the failover case.
	b.sysctl(t, "net.ipv4.conf.all.arp_accept", "1")
	a.do(t, func() error { return AddAddress("eth0", testVIP4) })
	if mac, seen := b.neighMAC(t, vip); mac != "" {
		t.Fatalf("b has an entry before any announcement: %s", seen)
	}
	announceUntil(t, a, b, vip)

	b.sysctl(t, "net.ipv4.conf.all.arp_accept", "0")
	a.do(t, func() error { return RemoveAddress("eth0", testVIP4) })
	c.do(t, func() error { return AddAddress("eth0", testVIP4) })
	announceUntil(t, c, b, vip)
}

func TestAnnounceIPv6Failover(t *testing.T) {
	l := newLAN(t)
	a, b, c := l.a, l.b, l.c
	vip := testVIP6.Addr()

	// An unsolicited advertisement creates no entry unless the receiver
	// is a router with accept_untracked_na set (RFC 9131); it updates an
	// existing entry on any host.
	b.sysctl(t, "net.ipv6.conf.eth0.forwarding", "1")
	b.sysctl(t, "net.ipv6.conf.eth0.accept_untracked_na", "1")
	a.do(t, func() error { return AddAddress("eth0", testVIP6) })
	if mac, seen := b.neighMAC(t, vip); mac != "" {
		t.Fatalf("b has an entry before any announcement: %s", seen)
	}
	announceUntil(t, a, b, vip)

	b.sysctl(t, "net.ipv6.conf.eth0.accept_untracked_na", "0")
	a.do(t, func() error { return RemoveAddress("eth0", testVIP6) })
	c.do(t, func() error { return AddAddress("eth0", testVIP6) })
	announceUntil(t, c, b, vip)
}

func TestAnnounceErrors(t *testing.T) {
	l := newLAN(t)
	l.a.do(t, func() error {
		if err := Announce("nosuch0", testVIP4.Addr()); err == nil {
			t.Error("Announce on a missing interface: no error")
		}
		if err := Announce("lo", testVIP4.Addr()); err == nil {
			t.Error("Announce on loopback: no error")
		}
		// IPv6: the address must be on the interface.
		if err := Announce("eth0", testVIP6.Addr()); err == nil {
			t.Error("Announce of an IPv6 address not on the interface: no error")
		}
		return nil
	})
}

// TestAnnounceFenced shows that announcements of an address that is not
// live never leave the node: the kernel drops them (the IPv4 gratuitous ARP
// at the netdev egress hook, the IPv6 advertisement at inet output).
func TestAnnounceFenced(t *testing.T) {
	requirePrereqs(t, "nft")
	l := newLAN(t)
	a, b := l.a, l.b
	b.sysctl(t, "net.ipv4.conf.all.arp_accept", "1")
	b.sysctl(t, "net.ipv6.conf.eth0.forwarding", "1")
	b.sysctl(t, "net.ipv6.conf.eth0.accept_untracked_na", "1")

	f := NewFence(FenceConfig{NetNS: int(a.ns)})
	if err := f.Install([]netip.Addr{testVIP4.Addr(), testVIP6.Addr()}); err != nil {
		t.Fatal(err)
	}
	if err := f.Guard("eth0"); err != nil {
		t.Fatal(err)
	}
	if err := f.Guard("eth0"); err != nil {
		t.Fatalf("second Guard: %v", err)
	}
	t.Logf("egress guard:\n%s", nftList(t, a, "table", "netdev", TableName))

	for _, p := range []netip.Prefix{testVIP4, testVIP6} {
		vip := p.Addr()
		a.do(t, func() error { return AddAddress("eth0", p) })

		// Closed: dropped in the kernel, counted, and Announce says so.
		var err error
		a.do(t, func() error { err = Announce("eth0", vip); return nil })
		if err == nil {
			t.Errorf("%s: Announce with the fence closed: no error", vip)
		} else {
			t.Logf("%s: Announce with the fence closed: %v", vip, err)
		}
		var chain []string
		if vip.Is4() {
			chain = []string{"chain", "netdev", TableName, "egress_eth0"}
		} else {
			chain = []string{"chain", "inet", TableName, chainOutput}
		}
		listed := nftList(t, a, chain...)
		if m := counterRE.FindStringSubmatch(listed); m == nil || m[1] == "0" {
			t.Fatalf("%s: no announcement dropped by the fence:\n%s", vip, listed)
		}
		if mac, seen := b.neighMAC(t, vip); mac != "" {
			t.Fatalf("%s: b learned the fenced address: %s", vip, seen)
		}

		// Open: the announcement goes out.
		if err := f.Open(vip, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		announceUntil(t, a, b, vip)
	}

	// Guard survives a reinstall that has to replace the tables: the chain
	// is recreated (here: the tables are removed, then installed again).
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := f.Install([]netip.Addr{testVIP4.Addr()}); err != nil {
		t.Fatal(err)
	}
	if out, err := a.run("nft", "list", "chain", "netdev", TableName, "egress_eth0"); err == nil {
		t.Fatalf("egress chain after Remove and Install, without Guard:\n%s", out)
	}
}
