package health

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ErrICMPPrivilege is returned, wrapped, when the process may not open a raw
// ICMP socket.
var ErrICMPPrivilege = errors.New("icmp probe needs root or CAP_NET_RAW")

// icmpProber sends one echo request per probe on a raw socket of its own and
// waits for the matching reply. A socket per probe costs one syscall pair
// every interval and needs no reader goroutine to outlive the probe.
type icmpProber struct {
	id  uint16 // echo identifier, random per prober
	seq atomic.Uint32
}

func newICMPProber() *icmpProber {
	var b [2]byte
	rand.Read(b[:])
	return &icmpProber{id: binary.BigEndian.Uint16(b[:])}
}

// icmpFamily is what differs between ICMPv4 and ICMPv6.
type icmpFamily struct {
	network, laddr string
	proto          int // for icmp.ParseMessage
	request, reply icmp.Type
}

var (
	icmp4 = icmpFamily{"ip4:icmp", "0.0.0.0", 1, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply}
	icmp6 = icmpFamily{"ip6:ipv6-icmp", "::", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply}
)

func (p *icmpProber) Probe(ctx context.Context, target string) error {
	host, _ := splitTarget(target)
	ip, err := resolveIP(ctx, host)
	if err != nil {
		return fmt.Errorf("icmp: resolve %s: %w", host, ctxCause(ctx, netCause(err)))
	}
	fam := icmp4
	if !ip.Is4() {
		fam = icmp6
	}
	conn, err := icmp.ListenPacket(fam.network, fam.laddr)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: %v", ErrICMPPrivilege, netCause(err))
		}
		return fmt.Errorf("icmp: open %s socket: %w", fam.network, netCause(err))
	}
	defer conn.Close()
	// The deadline covers the whole exchange; AfterFunc also unblocks the
	// read if ctx is cancelled before its deadline.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	echo := p.newEcho()
	if err := send(conn, fam, ip, echo); err != nil {
		return fmt.Errorf("icmp: echo %s: %w", ip, ctxCause(ctx, netCause(err)))
	}
	if err := awaitReply(conn, fam, ip, echo); err != nil {
		return fmt.Errorf("icmp: echo %s: %w", ip, ctxCause(ctx, netCause(err)))
	}
	return nil
}

// newEcho makes the request body. Besides id and seq it carries random data:
// a raw socket sees every ICMP packet the host receives, including replies
// to other pingers that may have picked the same id.
func (p *icmpProber) newEcho() *icmp.Echo {
	data := make([]byte, 16)
	rand.Read(data)
	return &icmp.Echo{ID: int(p.id), Seq: int(uint16(p.seq.Add(1))), Data: data}
}

func send(conn *icmp.PacketConn, fam icmpFamily, ip netip.Addr, echo *icmp.Echo) error {
	// For ICMPv6 the kernel computes the checksum, so Marshal needs no
	// pseudo-header.
	b, err := (&icmp.Message{Type: fam.request, Body: echo}).Marshal(nil)
	if err != nil {
		return err
	}
	_, err = conn.WriteTo(b, &net.IPAddr{IP: ip.AsSlice(), Zone: ip.Zone()})
	return err
}

// awaitReply reads until the reply to echo arrives from ip or the deadline
// passes, skipping everything else the raw socket sees.
func awaitReply(conn *icmp.PacketConn, fam icmpFamily, ip netip.Addr, echo *icmp.Echo) error {
	buf := make([]byte, 1500)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		if !fromIP(peer, ip) {
			continue
		}
		msg, err := icmp.ParseMessage(fam.proto, buf[:n])
		if err != nil || msg.Type != fam.reply {
			continue
		}
		if r, ok := msg.Body.(*icmp.Echo); ok && r.ID == echo.ID && r.Seq == echo.Seq && bytes.Equal(r.Data, echo.Data) {
			return nil
		}
	}
}

func fromIP(peer net.Addr, ip netip.Addr) bool {
	a, ok := peer.(*net.IPAddr)
	if !ok {
		return false
	}
	got, ok := netip.AddrFromSlice(a.IP)
	return ok && got.Unmap() == ip.WithZone("")
}

// resolveIP returns host as an address, looking it up if it is a name.
func resolveIP(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("no address for %s", host)
	}
	return ips[0].Unmap(), nil
}
