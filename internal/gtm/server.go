package gtm

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// udpSize is the EDNS0 buffer size the server advertises and the largest
// UDP answer it sends (the DNS Flag Day 2020 value: no fragmentation).
const udpSize = 1232

// Server answers for one zone over UDP and TCP.
type Server struct {
	zone    Zone
	log     *slog.Logger
	nsid    string // hex, for EDNS0 NSID as miekg packs it
	nsidRaw []byte // the same, as the UDP path writes it

	tsig map[string]string

	mu     sync.Mutex                 // serializes rebuilds
	health map[string]map[string]bool // by managed name (Names' key), target
	table  atomic.Pointer[table]

	counters counters
	viewMode atomic.Value // a ViewMode's string, for metrics
	qlog     atomic.Pointer[queryLog]
}

// Options are what a Server needs besides its zone.
type Options struct {
	Logger *slog.Logger
	// ID is returned in EDNS0 NSID (RFC 5001) when a query asks for it,
	// such as the node name.
	ID string
	// TSIG are the keys allowed to transfer the zone (AXFR), by key name
	// (canonical: lower case, final dot), each a base64 secret. None: no
	// transfers.
	TSIG map[string]string
}

// New checks the zone and builds its first table, with every target up
// until SetHealth says otherwise.
func New(z Zone, opt Options) (*Server, error) {
	z, err := z.normalize()
	if err != nil {
		return nil, err
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{zone: z, log: opt.Logger.With("component", "gtm", "zone", z.Origin), nsid: hex.EncodeToString([]byte(opt.ID)), nsidRaw: []byte(opt.ID), health: map[string]map[string]bool{}, tsig: opt.TSIG}
	s.table.Store(build(z, s.up))
	return s, nil
}

// Zone is the zone the server answers for now.
func (s *Server) Zone() Zone {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.zone
}

// setZone answers for z (normalized) from now on, keeping the health of
// the targets it still has.
func (s *Server) setZone(z Zone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Secondaries transfer the static part when the serial grows.
	z.Serial = max(z.Serial, s.zone.Serial+1)
	for rel, targets := range s.health {
		n, ok := z.Names[rel]
		if !ok {
			delete(s.health, rel)
			continue
		}
		for target := range targets {
			if !slices.ContainsFunc(n.Targets, func(tg Target) bool { return tg.Name == target }) {
				delete(targets, target)
			}
		}
	}
	s.zone = z
	s.table.Store(build(z, s.up))
}

// up reports a target's health as last set; a target never set is up.
// It is called with s.mu held (or before the server is shared).
func (s *Server) up(rel, target string) bool {
	v, ok := s.health[rel][target]
	return !ok || v
}

// answered reports what the answers say of target of the managed name
// rel, and whether SetHealth ever said it.
func (s *Server) answered(rel, target string) (up, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	up, known = s.health[rel][target]
	return up, known
}

// SetHealth records whether target of the managed name rel ("www") is up
// and, if that changes the answers, swaps in a new table.
func (s *Server) SetHealth(rel, target string, up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.health[rel] == nil {
		s.health[rel] = map[string]bool{}
	}
	if old, ok := s.health[rel][target]; ok && old == up {
		return
	}
	s.health[rel][target] = up
	s.table.Store(build(s.zone, s.up))
	s.counters.rebuilds.Add(1)
	s.log.Info("answers changed", "event", "dns", "name", fqdn(rel, s.zone.Origin), "target", target, "up", up)
}

// transfer answers AXFR (and IXFR, with a whole transfer) over TCP to a
// client that signs with one of the TSIG keys: the zone's static part
// (SOA, NS and their addresses), never the managed names, whose answers
// depend on health and on the client. Anything else is refused.
func (s *Server) transfer(w dns.ResponseWriter, r *dns.Msg, tcp bool) {
	refuse := func(rcode int, why string) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		if t := r.IsTsig(); t != nil && rcode == dns.RcodeNotAuth {
			m.SetTsig(t.Hdr.Name, t.Algorithm, t.Fudge, time.Now().Unix())
		}
		s.log.Info("zone transfer refused", "client", w.RemoteAddr().String(), "why", why)
		s.counters.count(m, tcp, false)
		w.WriteMsg(m)
	}
	q := r.Question[0]
	t := s.table.Load()
	switch {
	case !tcp:
		refuse(dns.RcodeRefused, "over UDP")
		return
	case dns.CanonicalName(q.Name) != t.origin:
		refuse(dns.RcodeRefused, "not this zone")
		return
	case r.IsTsig() == nil:
		refuse(dns.RcodeRefused, "not signed with TSIG")
		return
	case w.TsigStatus() != nil:
		refuse(dns.RcodeNotAuth, "TSIG: "+w.TsigStatus().Error())
		return
	}
	rrs := append(append(append([]dns.RR{}, t.soa...), t.ns...), t.glue...)
	rrs = append(rrs, t.soa...)
	ch := make(chan *dns.Envelope, 1)
	ch <- &dns.Envelope{RR: rrs}
	close(ch)
	if err := (&dns.Transfer{}).Out(w, r, ch); err != nil {
		s.log.Warn("zone transfer", "client", w.RemoteAddr().String(), "err", err)
	}
	s.log.Info("zone transferred", "client", w.RemoteAddr().String(), "key", r.IsTsig().Hdr.Name)
}

// relStatus is a NameStatus and the name as haven.yaml writes it.
type relStatus struct {
	NameStatus
	rel string
}

// names reports what each managed name answers now, by name.
func (s *Server) names() []relStatus {
	t := s.table.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	rels := make([]string, 0, len(s.zone.Names))
	for rel := range s.zone.Names {
		rels = append(rels, rel)
	}
	slices.Sort(rels)
	var out []relStatus
	for _, rel := range rels {
		n, name := s.zone.Names[rel], fqdn(rel, s.zone.Origin)
		ns := relStatus{rel: rel, NameStatus: NameStatus{Name: name, Policy: n.Policy}}
		for _, tg := range n.Targets {
			ns.Targets = append(ns.Targets, TargetStatus{Name: tg.Name, Address: tg.answer(), Up: s.up(rel, tg.Name)})
		}
		if o := t.owners[name]; o != nil {
			ns.Servfail = o.servfail
			for _, typ := range []uint16{dns.TypeA, dns.TypeAAAA} {
				rrs := o.rrs[typ]
				if o.pick != nil {
					rrs = nil
					for _, c := range o.pick.byType[typ] {
						rrs = append(rrs, c.answer...)
					}
				}
				for _, rr := range rrs {
					switch rr := rr.(type) {
					case *dns.A:
						ns.Answers = append(ns.Answers, rr.A.String())
					case *dns.AAAA:
						ns.Answers = append(ns.Answers, rr.AAAA.String())
					case *dns.CNAME:
						if !slices.Contains(ns.Answers, rr.Target) {
							ns.Answers = append(ns.Answers, rr.Target)
						}
					}
				}
			}
		}
		out = append(out, ns)
	}
	return out
}

// ServeDNS answers one query from the current table.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	tcp := isTCP(w)
	if len(r.Question) == 1 && (r.Question[0].Qtype == dns.TypeAXFR || r.Question[0].Qtype == dns.TypeIXFR) {
		s.transfer(w, r, tcp)
		return
	}
	q := ednsOf(r)
	from := remoteAddr(w)
	m := s.answer(r, q, tcp, from)
	s.counters.count(m, tcp, q.subnet)
	transport := "udp"
	if tcp {
		transport = "tcp"
	}
	s.logQuery(m, from, transport)
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("write answer", "client", w.RemoteAddr().String(), "err", err)
	}
}

func isTCP(w dns.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

func remoteAddr(w dns.ResponseWriter) netip.Addr {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr()
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}

// answer builds the reply to r, whose EDNS is q, from a client at remote
// (the resolver), with its OPT record, truncated to fit UDP.
func (s *Server) answer(r *dns.Msg, q queryEDNS, tcp bool, remote netip.Addr) *dns.Msg {
	m := new(dns.Msg)
	e := s.answerInto(m, r, q, remote)
	if e.opt {
		m.Extra = append(m.Extra, s.optRR(e))
	}
	if !tcp {
		// Truncate keeps what fits and the OPT record, and sets TC when
		// it left records out: the client asks again over TCP. It turns
		// compression off when the message fits without.
		m.Truncate(udpLimit(q))
		m.Compress = true
	}
	return m
}

// udpLimit is the largest UDP answer to a query: its buffer, at most ours.
func udpLimit(q queryEDNS) int {
	if !q.present {
		return dns.MinMsgSize
	}
	return max(dns.MinMsgSize, min(int(q.size), udpSize))
}

// answerInto builds the reply to r in m, whose slices it reuses (the UDP
// loops keep one per loop), all but its OPT record, which it returns for
// the caller to add: the UDP path writes it without miekg.
func (s *Server) answerInto(m *dns.Msg, r *dns.Msg, q queryEDNS, remote netip.Addr) ednsReply {
	question, extra := m.Question[:0], m.Extra[:0]
	*m = dns.Msg{}
	m.Id, m.Response, m.Opcode = r.Id, true, r.Opcode
	// Names compress against the question (RFC 1035 4.1.4): an answer's
	// owner, written as the client wrote the question, is two bytes.
	m.Compress = true
	if m.Opcode == dns.OpcodeQuery {
		m.RecursionDesired, m.CheckingDisabled = r.RecursionDesired, r.CheckingDisabled
	}
	if len(r.Question) > 0 {
		m.Question = append(question, r.Question[0])
	}
	m.Extra = extra
	e := ednsReply{opt: q.present, query: q}
	if r.Opcode != dns.OpcodeQuery {
		m.SetRcode(r, dns.RcodeNotImplemented)
		return e
	}
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		return e
	}
	if r.Question[0].Qclass == 0 {
		// A question cut after its name (miekg reads it as type 0, class
		// 0) or of the reserved class 0: no question to echo.
		m.SetRcode(r, dns.RcodeFormatError)
		m.Question = m.Question[:0]
		return e
	}
	if q.present && q.version != 0 {
		// BADVERS is an extended rcode: miekg packs it into the OPT.
		m.SetRcode(r, dns.RcodeBadVers)
		m.SetEdns0(udpSize, q.do)
		return ednsReply{}
	}
	if q.malformed {
		m.SetRcode(r, dns.RcodeFormatError)
		e.query.subnet = false
		return e
	}
	cl := newClient(remote, 128)
	if q.subnet {
		cl = newClient(q.addr, int(q.source))
	}
	question0 := r.Question[0]
	name := canonicalName(question0.Name)
	t := s.table.Load()
	if question0.Qclass != dns.ClassINET || !inZone(name, t.origin) {
		m.SetRcode(r, dns.RcodeRefused)
		return e
	}
	m.Authoritative = true
	e.scope = uint8(s.fill(m, t, name, question0.Qtype, cl))
	if question0.Name != name {
		m.Answer = withOwner(m.Answer, name, question0.Name)
	}
	return e
}

// withOwner returns rrs with owner in place of the table's canonical name:
// the answer echoes the case the client asked in (a resolver that mixes
// the case of its questions, "0x20", checks the answer's), and compresses
// to a pointer to the question. The table's records are shared: it copies.
func withOwner(rrs []dns.RR, name, owner string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		if rr.Header().Name != name {
			out[i] = rr
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			c := *rr
			out[i] = &c
		case *dns.AAAA:
			c := *rr
			out[i] = &c
		case *dns.CNAME:
			c := *rr
			out[i] = &c
		default:
			out[i] = dns.Copy(rr)
		}
		out[i].Header().Name = owner
	}
	return out
}

// canonicalName is dns.CanonicalName without its copy for the names most
// queries carry, already lower case and absolute.
func canonicalName(name string) string {
	if !strings.HasSuffix(name, ".") {
		return dns.CanonicalName(name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return dns.CanonicalName(name)
		}
	}
	return name
}

// inZone reports whether the canonical name is origin or below it:
// dns.IsSubDomain without its label splitting, which allocates.
func inZone(name, origin string) bool {
	if strings.Contains(name, `\`) { // escaped dots: let miekg count labels
		return dns.IsSubDomain(origin, name)
	}
	return name == origin ||
		(strings.HasSuffix(name, origin) && name[len(name)-len(origin)-1] == '.')
}

// fill answers name/qtype from t: the records, or NODATA or NXDOMAIN with
// the SOA in the authority section. It returns the ECS scope the answer is
// valid for: 0 unless it depends on the client (a hashed or cidr name's).
func (s *Server) fill(m *dns.Msg, t *table, name string, qtype uint16, c client) (scope int) {
	o := t.owners[name]
	if o == nil {
		if !t.nonTerminals[name] {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = t.negative()
		return 0
	}
	if o.cname && qtype != dns.TypeA && qtype != dns.TypeAAAA {
		qtype = dns.TypeCNAME
	}
	switch {
	case o.servfail && qtype != dns.TypeANY:
		m.Rcode, m.Authoritative = dns.RcodeServerFailure, false
		return 0
	case qtype == dns.TypeANY:
		m.Answer = o.hinfo
	case o.pick != nil:
		m.Answer, scope = o.pick.choose(qtype, c)
	default:
		m.Answer = o.rrs[qtype]
	}
	if len(m.Answer) == 0 {
		m.Ns = t.negative()
		return 0
	}
	if name == t.origin && qtype == dns.TypeNS {
		m.Extra = append(m.Extra, t.glue...)
	}
	return scope
}

// negative is the authority section of a negative answer: the SOA, whose
// TTL is capped at its minimum field (RFC 2308).
func (t *table) negative() []dns.RR {
	soa := t.soa[0].(*dns.SOA)
	if soa.Hdr.Ttl <= soa.Minttl {
		return t.soa
	}
	c := *soa
	c.Hdr.Ttl = soa.Minttl
	return []dns.RR{&c}
}

// Serve answers on the UDP and TCP listeners until ctx ends, then shuts
// them down within a few seconds.
func (s *Server) Serve(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	tcpServer := &dns.Server{Listener: tcp, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		IdleTimeout: func() time.Duration { return 10 * time.Second }, TsigSecret: s.tsig,
		DecorateReader: func(r dns.Reader) dns.Reader { return tcpReader{Reader: r, s: s} }}
	errc := make(chan error, 1)
	go func() { errc <- tcpServer.ActivateAndServe() }()
	udpDone := make(chan struct{})
	go func() { s.serveUDP(udp); close(udpDone) }()
	s.log.Info("answering", "udp", udp.LocalAddr().String(), "tcp", tcp.Addr().String())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("gtm: serve tcp: %w", err)
	}
	udp.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if serr := tcpServer.ShutdownContext(sctx); serr != nil && !errors.Is(serr, context.Canceled) {
		s.log.Debug("shutdown", "err", serr)
	}
	<-udpDone
	return err
}

// tcpReader reads the messages of a TCP connection for miekg's server and
// settles two kinds itself. A message shorter than a header (a zero
// length) ends the connection at once, as PowerDNS does: miekg would drop
// it and wait out the idle timeout for the next. A query whose client
// subnet carries more or fewer address bytes than its prefix needs gets
// FORMERR (RFC 7871 §6), which miekg's parsed option cannot show: the
// reader answers it and reads on.
type tcpReader struct {
	dns.Reader
	s *Server
}

var errShortMessage = errors.New("gtm: tcp message shorter than a header")

func (rd tcpReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	for {
		b, err := rd.Reader.ReadTCP(conn, timeout)
		if err == nil && len(b) < headerSize {
			err = errShortMessage
		}
		if err != nil || subnetSizesOK(b) {
			return b, err
		}
		r := new(dns.Msg)
		if r.Unpack(b) != nil || r.Response {
			return b, nil // miekg's server answers or drops it
		}
		q := ednsOf(r)
		q.reject()
		m := rd.s.answer(r, q, true, netip.Addr{})
		rd.s.counters.count(m, true, false)
		out, err := m.Pack()
		if err != nil {
			return nil, err
		}
		conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)); err != nil {
			return nil, err
		}
	}
}
