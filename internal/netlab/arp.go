package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ARPOp is the operation of an ARP packet.
type ARPOp uint16

// The ARP operations.
const (
	ARPRequest ARPOp = 1
	ARPReply   ARPOp = 2
)

// String returns "request", "reply" or the number.
func (o ARPOp) String() string {
	switch o {
	case ARPRequest:
		return "request"
	case ARPReply:
		return "reply"
	}
	return fmt.Sprintf("op %d", uint16(o))
}

// ARPPacket is an Ethernet/IPv4 ARP packet that entered the switch.
type ARPPacket struct {
	// Time is when WatchARP read the packet.
	Time time.Time
	// From is the host whose cable carried the packet into the switch.
	From *Host
	// Op is request or reply.
	Op ARPOp
	// SenderMAC and SenderIP are the mapping the packet announces.
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	// TargetMAC and TargetIP are the target's; a request's TargetMAC is
	// usually zero.
	TargetMAC net.HardwareAddr
	TargetIP  netip.Addr
}

// Gratuitous reports whether the packet announces its sender's own mapping
// to everyone, as a host taking over a floating address does: sender and
// target IP are the same.
func (p ARPPacket) Gratuitous() bool { return p.SenderIP == p.TargetIP }

// String describes the packet like tcpdump: "n2: reply 198.18.1.100 is-at
// 02:68:76:00:01:0c", "client: request who-has 198.18.1.12 tell
// 198.18.1.14".
func (p ARPPacket) String() string {
	from := "?"
	if p.From != nil {
		from = p.From.Name
	}
	kind := p.Op.String()
	if p.Gratuitous() {
		kind = "gratuitous " + kind
	}
	if p.Op == ARPRequest && !p.Gratuitous() {
		return fmt.Sprintf("%s: %s who-has %s tell %s (%s)", from, kind, p.TargetIP, p.SenderIP, p.SenderMAC)
	}
	return fmt.Sprintf("%s: %s %s is-at %s", from, kind, p.SenderIP, p.SenderMAC)
}

// WatchARP reports every ARP packet that enters the switch from a host's
// cable, from when it returns until ctx ends or the Net closes; then it
// closes the channel. It reads with packet sockets bound to the switch's
// ports, so each packet names the host that sent it. The reader waits for
// the channel's receiver: drain the channel until it closes.
func (n *Net) WatchARP(ctx context.Context) (<-chan ARPPacket, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.usable(); err != nil {
		return nil, fmt.Errorf("netlab: watch arp: %w", err)
	}
	var ports []arpPort
	err := doIn(n.sw, func() error {
		for _, h := range n.hosts {
			for _, p := range h.ports {
				f, err := openARP(p.name)
				if err != nil {
					return fmt.Errorf("port %s: %w", p.name, err)
				}
				ports = append(ports, arpPort{host: h, file: f})
			}
		}
		return nil
	})
	if err != nil {
		for _, p := range ports {
			p.file.Close()
		}
		return nil, fmt.Errorf("netlab: watch arp: %w", err)
	}

	ch := make(chan ARPPacket, 64)
	quit := make(chan struct{})
	stop := sync.OnceFunc(func() {
		close(quit)
		for _, p := range ports {
			p.file.Close()
		}
	})
	n.watches = append(n.watches, stop)
	context.AfterFunc(ctx, stop)
	var wg sync.WaitGroup
	for _, p := range ports {
		wg.Go(func() { p.read(ch, quit) })
	}
	go func() {
		wg.Wait()
		close(ch)
	}()
	return ch, nil
}

// arpPort reads the ARP packets that enter the switch through one port.
type arpPort struct {
	host *Host
	file *os.File
}

// openARP opens a non-blocking packet socket on the named interface of the
// current namespace that receives only ARP frames. It binds to every
// protocol because the bridge takes frames before sockets bound to a
// single protocol would see them.
func openARP(ifname string) (*os.File, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	// Protocol 0 receives nothing until the bind, after the filter is on.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12}, // EtherType
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.ETH_P_ARP},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach filter: %w", err)
	}
	all := uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8 // network byte order
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: all, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind: %w", err)
	}
	return os.NewFile(uintptr(fd), "arp:"+ifname), nil
}

func (p arpPort) read(ch chan<- ARPPacket, quit <-chan struct{}) {
	rc, err := p.file.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 128) // an ARP frame is 42 bytes, 60 with padding
	for {
		var (
			size int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			size, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			// A port set down by CutLink reports ENETDOWN once; the
			// socket works again when the link comes back.
			if errors.Is(rerr, unix.EINTR) || errors.Is(rerr, unix.ENETDOWN) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue // leaving the switch towards the host
		}
		pkt, ok := parseARP(buf[:size])
		if !ok {
			continue
		}
		pkt.Time, pkt.From = time.Now(), p.host
		select {
		case ch <- pkt:
		case <-quit:
			return
		}
	}
}

// parseARP decodes an Ethernet frame holding an Ethernet/IPv4 ARP packet.
func parseARP(b []byte) (ARPPacket, bool) {
	if len(b) < 14+28 || binary.BigEndian.Uint16(b[12:]) != unix.ETH_P_ARP {
		return ARPPacket{}, false
	}
	a := b[14:]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != 0x0800 || a[4] != 6 || a[5] != 4 {
		return ARPPacket{}, false
	}
	return ARPPacket{
		Op:        ARPOp(binary.BigEndian.Uint16(a[6:])),
		SenderMAC: net.HardwareAddr(slices.Clone(a[8:14])),
		SenderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		TargetMAC: net.HardwareAddr(slices.Clone(a[18:24])),
		TargetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, true
}
