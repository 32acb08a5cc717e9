package vip

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The functions in this file work in the network namespace of the calling
// thread.

// FindInterface returns the name of the interface that should carry vip.
// With a configured name it checks that the interface exists. Otherwise it
// picks the interface, other than loopback, with an address whose prefix
// contains vip (the longest such prefix wins); none, or two interfaces tied,
// is an error that lists the interfaces and prefixes seen.
func FindInterface(vip netip.Addr, name string) (string, error) {
	vip = vip.Unmap()
	if !vip.IsValid() {
		return "", fmt.Errorf("vip: find interface: invalid address")
	}
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return "", fmt.Errorf("vip: find interface for %s: %w", vip, err)
	}
	if name != "" {
		for _, l := range links {
			if l.Attrs().Name == name {
				return name, nil
			}
		}
		names := make([]string, 0, len(links))
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return "", fmt.Errorf("vip: find interface for %s: no interface %q (seen: %s)", vip, name, strings.Join(names, ", "))
	}

	var (
		best     string
		bestBits = -1
		tied     []string
		seen     []string
	)
	for _, l := range links {
		attrs := l.Attrs()
		if attrs.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := netlink.AddrList(l, family(vip))
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return "", fmt.Errorf("vip: find interface for %s: addresses of %s: %w", vip, attrs.Name, err)
		}
		var prefixes []string
		for _, a := range addrs {
			p, ok := prefixOf(a)
			if !ok {
				continue
			}
			prefixes = append(prefixes, p.String())
			if !p.Contains(vip) {
				continue
			}
			switch {
			case p.Bits() > bestBits:
				best, bestBits, tied = attrs.Name, p.Bits(), nil
			case p.Bits() == bestBits && attrs.Name != best && !slices.Contains(tied, attrs.Name):
				tied = append(tied, attrs.Name)
			}
		}
		if len(prefixes) == 0 {
			prefixes = []string{"no " + familyName(vip) + " address"}
		}
		seen = append(seen, attrs.Name+" "+strings.Join(prefixes, " "))
	}
	if best == "" {
		return "", fmt.Errorf("vip: find interface for %s: no interface has a prefix containing it (seen: %s); set the interface explicitly",
			vip, strings.Join(seen, ", "))
	}
	if len(tied) > 0 {
		return "", fmt.Errorf("vip: find interface for %s: interfaces %s and %s both have a /%d prefix containing it; set the interface explicitly",
			vip, best, strings.Join(tied, ", "), bestBits)
	}
	return best, nil
}

// AddAddress adds prefix (the VIP and its prefix length, like
// 198.18.1.100/24) to the interface. Adding an address that is already there
// with the same prefix length is not an error. An IPv6 address is added
// without duplicate address detection (IFA_F_NODAD) so it is usable at once,
// and deprecated (preferred lifetime 0) so the node does not pick it as the
// source of its own connections, which would break when the VIP moves.
func AddAddress(iface string, prefix netip.Prefix) error {
	prefix = netip.PrefixFrom(prefix.Addr().Unmap(), prefix.Bits())
	if !prefix.IsValid() {
		return fmt.Errorf("vip: add %s to %s: invalid prefix", prefix, iface)
	}
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("vip: add %s to %s: %w", prefix, iface, err)
	}
	a := &netlink.Addr{IPNet: ipNet(prefix)}
	if prefix.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
		forever := uint32(math.MaxUint32)
		a.ValidLft = int(forever)
		a.PreferedLft = 0
	}
	if err := netlink.AddrAdd(link, a); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if has, herr := hasPrefix(link, prefix); herr == nil && has {
				return nil
			}
		}
		return fmt.Errorf("vip: add %s to %s: %w", prefix, iface, err)
	}
	return nil
}

// RemoveAddress removes the address of prefix from the interface, whatever
// prefix length it was added with. Removing an address that is not there is
// not an error.
func RemoveAddress(iface string, prefix netip.Prefix) error {
	addr := prefix.Addr().Unmap()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("vip: remove %s from %s: %w", prefix, iface, err)
	}
	addrs, err := netlink.AddrList(link, family(addr))
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("vip: remove %s from %s: %w", prefix, iface, err)
	}
	for _, a := range addrs {
		p, ok := prefixOf(a)
		if !ok || p.Addr() != addr {
			continue
		}
		if err := netlink.AddrDel(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("vip: remove %s from %s: %w", p, iface, err)
		}
	}
	return nil
}

// HasAddress reports whether addr is assigned to the interface, with any
// prefix length.
func HasAddress(iface string, addr netip.Addr) (bool, error) {
	addr = addr.Unmap()
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return false, fmt.Errorf("vip: look up %s on %s: %w", addr, iface, err)
	}
	addrs, err := netlink.AddrList(link, family(addr))
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, fmt.Errorf("vip: look up %s on %s: %w", addr, iface, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok && p.Addr() == addr {
			return true, nil
		}
	}
	return false, nil
}

func hasPrefix(link netlink.Link, prefix netip.Prefix) (bool, error) {
	addrs, err := netlink.AddrList(link, family(prefix.Addr()))
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, err
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok && p == prefix {
			return true, nil
		}
	}
	return false, nil
}

// prefixOf returns the address and prefix length of a as a netip.Prefix.
func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
