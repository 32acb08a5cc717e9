// Package drill measures what clients see while haven survives faults: a
// prober that asks every host on a segment who answers for a floating
// address, and the analysis that turns its answers into gaps and overlaps.
package drill

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A probe is a UDP datagram "haven-probe SEQ" sent to the floating address.
// Every host that answers for the address replies "NODE EPOCH SEQ" from it.
const probeMagic = "haven-probe"

// ListenResponder binds a UDP socket on addr (the floating address and a
// port) with IP_FREEBIND, so it can bind while another host holds the
// address. Create it inside the host's network namespace.
func ListenResponder(addr netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("drill: responder on %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// Respond answers probes on conn as node, with the epoch that epoch
// returns (the holder's fencing epoch as its notify hook recorded it),
// until ctx ends. A host answers only while its kernel accepts packets for
// the address: while it holds it and its fence is open.
func Respond(ctx context.Context, conn *net.UDPConn, node string, epoch func() string) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 256)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		seq, ok := strings.CutPrefix(string(buf[:n]), probeMagic+" ")
		if !ok {
			continue
		}
		_, _ = conn.WriteToUDPAddrPort([]byte(node+" "+epoch()+" "+seq), from)
	}
}

// Answer is one host's reply to one probe.
type Answer struct {
	Seq      int
	Node     string
	Epoch    string
	Received time.Time
}

// Prober sends probes to a floating address in Ethernet broadcast frames,
// so that every host on the segment receives each probe and every host
// that would answer for the address does: two holders show up as two
// answers to one probe, which a unicast probe (delivered to the one MAC
// address in the client's ARP cache) could not show.
type Prober struct {
	raw   int // AF_PACKET socket
	conn  *net.UDPConn
	ifidx int
	src   netip.AddrPort
	srcHW net.HardwareAddr
	dst   netip.AddrPort
}

// NewProber opens the prober's sockets on iface, from src (the client's
// address and a free port) to dst. Create it inside the client's network
// namespace.
func NewProber(iface string, src, dst netip.AddrPort) (*Prober, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("drill: prober: %w", err)
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(src))
	if err != nil {
		return nil, fmt.Errorf("drill: prober: %w", err)
	}
	src = conn.LocalAddr().(*net.UDPAddr).AddrPort() // the port the kernel chose
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("drill: prober: packet socket: %w", err)
	}
	return &Prober{raw: fd, conn: conn, ifidx: ifi.Index, src: src, srcHW: ifi.HardwareAddr, dst: dst}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Close closes the prober's sockets.
func (p *Prober) Close() error {
	return errors.Join(unix.Close(p.raw), p.conn.Close())
}

// Run sends a probe every interval until ctx ends or count probes were
// sent, and collects the answers until one interval after the last probe.
// sent[i] is when probe i left.
func (p *Prober) Run(ctx context.Context, interval time.Duration, count int) (sent []time.Time, answers []Answer, err error) {
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, err := p.conn.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			f := strings.Fields(string(buf[:n]))
			if len(f) != 3 {
				continue
			}
			seq, err := strconv.Atoi(f[2])
			if err != nil {
				continue
			}
			mu.Lock()
			answers = append(answers, Answer{Seq: seq, Node: f[0], Epoch: f[1], Received: now})
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	sll := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: p.ifidx, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
loop:
	for seq := 0; seq < count; seq++ {
		pkt := p.packet(seq)
		now := time.Now()
		if err := unix.Sendto(p.raw, pkt, 0, &sll); err != nil {
			return sent, nil, fmt.Errorf("drill: send probe %d: %w", seq, err)
		}
		sent = append(sent, now)
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
	}
	time.Sleep(interval) // the last answers are on their way
	p.conn.SetReadDeadline(time.Now())
	<-done
	mu.Lock()
	defer mu.Unlock()
	return sent, answers, nil
}

// packet builds the IPv4 and UDP headers and payload of probe seq (the
// kernel adds the Ethernet header for the SOCK_DGRAM packet socket).
func (p *Prober) packet(seq int) []byte {
	payload := []byte(probeMagic + " " + strconv.Itoa(seq))
	b := make([]byte, 20+8+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], uint16(seq))
	b[8] = 64 // TTL
	b[9] = unix.IPPROTO_UDP
	src, dst := p.src.Addr().As4(), p.dst.Addr().As4()
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], p.src.Port())
	binary.BigEndian.PutUint16(u[2:], p.dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	// The UDP checksum covers a pseudo-header of addresses, protocol and
	// length.
	var pseudo uint32
	for _, w := range [][]byte{src[:], dst[:]} {
		pseudo += uint32(binary.BigEndian.Uint16(w[0:])) + uint32(binary.BigEndian.Uint16(w[2:]))
	}
	pseudo += unix.IPPROTO_UDP + uint32(len(u))
	cs := checksum(u, pseudo)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], cs)
	return b
}

func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
