package vip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

// allNodes is ff02::1, the link-local all-nodes multicast group.
var allNodes = netip.MustParseAddr("ff02::1")

// Announce sends one announcement on iface that addr is reachable at the
// interface's MAC address, so neighbours (and switches) update their caches
// after a failover: for IPv4 a gratuitous ARP request (sender and target
// protocol address both addr, broadcast), for IPv6 an unsolicited neighbour
// advertisement to ff02::1 with the Override flag and a target link-layer
// address option, sent from addr with hop limit 255. addr must be on iface.
// The caller decides how many to send and when; a single frame can be lost.
//
// It works in the network namespace of the calling thread. Announcements
// pass through the fence: while addr is not live, the kernel drops them and
// Announce returns an error. The IPv6 advertisement meets the inet output
// hook; the IPv4 ARP is written to a packet socket, which only the netdev
// egress hook sees, so it is fenced once Fence.Guard(iface) was called.
func Announce(iface string, addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("vip: announce on %s: invalid address", iface)
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("vip: announce %s on %s: %w", addr, iface, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return fmt.Errorf("vip: announce %s on %s: interface has no Ethernet address (%q)", addr, iface, ifi.HardwareAddr)
	}
	if addr.Is4() {
		err = gratuitousARP(ifi, addr)
	} else {
		err = unsolicitedNA(ifi, addr)
	}
	if err != nil {
		return fmt.Errorf("vip: announce %s on %s: %w", addr, iface, err)
	}
	return nil
}

// gratuitousARP broadcasts an ARP request for addr from addr, the form
// RFC 5227 calls an ARP announcement and keepalived sends.
func gratuitousARP(ifi *net.Interface, addr netip.Addr) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  ifi.Index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	if err := unix.Sendto(fd, arpPacket(arpRequest, ifi.HardwareAddr, addr), 0, to); err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			// What a drop at the egress hook looks like from here.
			return fmt.Errorf("send gratuitous ARP: %w (dropped: the fence is closed for it, or the queue is full)", err)
		}
		return fmt.Errorf("send gratuitous ARP: %w", err)
	}
	return nil
}

const arpRequest = 1

// arpPacket returns an Ethernet/IPv4 ARP packet (without the Ethernet
// header) with sender and target protocol address addr and sender hardware
// address mac; the target hardware address is zero.
func arpPacket(op uint16, mac net.HardwareAddr, addr netip.Addr) []byte {
	b := make([]byte, 0, 28)
	b = binary.BigEndian.AppendUint16(b, 1)      // htype Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // ptype IPv4
	b = append(b, 6, 4)                          // hlen, plen
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, mac...)
	b = append(b, addr.AsSlice()...)
	b = append(b, make([]byte, 6)...)
	b = append(b, addr.AsSlice()...)
	return b
}

// unsolicitedNA sends an unsolicited neighbour advertisement for addr to
// all nodes (RFC 4861 section 7.2.6).
func unsolicitedNA(ifi *net.Interface, addr netip.Addr) error {
	c, _, err := ndp.Listen(ifi, ndp.Addr(addr.String()))
	if err != nil {
		return err
	}
	defer c.Close()
	na := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: addr,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ifi.HardwareAddr},
		},
	}
	if err := c.WriteTo(na, nil, allNodes); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("send neighbour advertisement: %w (dropped by the firewall: the fence is closed for it)", err)
		}
		return fmt.Errorf("send neighbour advertisement: %w", err)
	}
	return nil
}

// htons converts v to network byte order, as packet sockets expect their
// protocol.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
