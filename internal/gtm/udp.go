package gtm

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// serveUDP answers on conn until it is closed, with one loop per CPU, each
// with its own buffers, reading and writing datagrams in batches. miekg's
// server starts a goroutine and reads the socket's control messages for
// every packet; profiled under dnsperf, that cost more than the answer
// itself. Over UDP haven needs neither: it
// answers from the address it listens on, and zone transfers (the only
// signed requests it serves) go over TCP.
func (s *Server) serveUDP(conn net.PacketConn) {
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 1) {
		wg.Go(func() { s.udpLoop(conn) })
	}
	wg.Wait()
}

// batch is how many datagrams a loop reads and writes per system call
// (recvmmsg and sendmmsg on Linux): under load a loop answers a batch for
// the price of two system calls.
const batch = 32

func (s *Server) udpLoop(conn net.PacketConn) {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		s.udpLoopPlain(conn)
		return
	}
	var pc interface {
		ReadBatch([]ipv4.Message, int) (int, error)
		WriteBatch([]ipv4.Message, int) (int, error)
	}
	if a, _ := uc.LocalAddr().(*net.UDPAddr); a != nil && a.IP.To4() != nil {
		pc = ipv4.NewPacketConn(uc)
	} else {
		pc = ipv6.NewPacketConn(uc)
	}
	in := make([]ipv4.Message, batch)
	out := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	outBufs := make([][]byte, batch)
	for i := range in {
		bufs[i] = make([]byte, dns.MaxMsgSize)
		in[i].Buffers = [][]byte{bufs[i]}
		outBufs[i] = make([]byte, 0, udpSize)
		out[i].Buffers = [][]byte{nil}
	}
	var sc scratch
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			continue
		}
		k := 0
		for i := range n {
			from, _ := in[i].Addr.(*net.UDPAddr)
			if from == nil {
				continue
			}
			b := s.answerPacket(&sc, bufs[i][:in[i].N], from.AddrPort().Addr(), outBufs[k])
			if b == nil {
				continue
			}
			outBufs[k] = b
			out[k].Buffers[0], out[k].Addr = b, in[i].Addr
			k++
		}
		for sent := 0; sent < k; {
			w, err := pc.WriteBatch(out[sent:k], 0)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					s.log.Debug("udp write", "err", err)
				}
				break
			}
			sent += w
		}
	}
}

// udpLoopPlain serves a PacketConn that is not a UDP socket, one datagram
// at a time.
func (s *Server) udpLoopPlain(conn net.PacketConn) {
	buf := make([]byte, dns.MaxMsgSize)
	out := make([]byte, 0, udpSize)
	var sc scratch
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, _ := addr.(*net.UDPAddr)
		if ua == nil {
			continue
		}
		if b := s.answerPacket(&sc, buf[:n], ua.AddrPort().Addr(), out); b != nil {
			out = b
			conn.WriteTo(b, addr)
		}
	}
}

// scratch is what one UDP loop reuses for every query.
type scratch struct {
	req, reply dns.Msg
	head       []byte         // the query's header and question (parseQuery)
	comp       map[string]int // names already packed (packCompressed)
}

// answerPacket answers one UDP query b from a resolver at from, appending
// the packed answer to out: FORMERR for a message that does not parse
// (when its header does), REFUSED for a zone transfer, else the answer
// from the table. nil means no reply.
func (s *Server) answerPacket(sc *scratch, b []byte, from netip.Addr, out []byte) []byte {
	r := &sc.req
	head, q, ok := parseQuery(b, sc.head)
	var err error
	if ok {
		sc.head = head
		err = r.Unpack(head)
	} else if err = r.Unpack(b); err == nil {
		q = ednsOfWire(r, b)
	}
	if err != nil {
		var h dns.Msg
		if len(b) < 12 || h.Unpack(b[:12]) != nil || h.Response {
			return nil
		}
		m := new(dns.Msg)
		m.SetRcodeFormatError(&h)
		return s.packUDP(sc, m, ednsReply{}, q, out)
	}
	if r.Response {
		return nil // never answer an answer: no loops with another server
	}
	if len(r.Question) == 1 && (r.Question[0].Qtype == dns.TypeAXFR || r.Question[0].Qtype == dns.TypeIXFR) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		return s.packUDP(sc, m, ednsReply{}, q, out)
	}
	m := &sc.reply
	e := s.answerInto(m, r, q, from)
	ans := s.packUDP(sc, m, e, q, out)
	s.logQuery(m, from, "udp")
	return ans
}

// packUDP packs m with the OPT record e into out and counts it. An answer
// that fits the client's buffer gets its OPT written by appendOPT; one
// that does not goes through miekg's Truncate, which sets TC.
func (s *Server) packUDP(sc *scratch, m *dns.Msg, e ednsReply, q queryEDNS, out []byte) []byte {
	// PackBuffer allocates when len(out), not cap(out), is too short.
	out = out[:cap(out)]
	if sc.comp == nil {
		sc.comp = map[string]int{}
	}
	var err error
	b, ok := packCompressed(m, out, sc.comp)
	if !ok {
		b, err = m.PackBuffer(out)
	}
	if err == nil && e.opt {
		b = s.appendOPT(b, e)
	}
	if err == nil && len(b) > udpLimit(q) {
		if e.opt {
			m.Extra = append(m.Extra, s.optRR(e))
		}
		m.Truncate(udpLimit(q))
		m.Compress = true
		b, err = m.PackBuffer(out)
	}
	if err != nil {
		s.log.Warn("pack answer", "err", err)
		return nil
	}
	s.counters.count(m, false, q.subnet)
	return b
}
