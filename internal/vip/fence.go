package vip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/deadman"
)

// TableName is the name of haven's nftables tables, one in each of the
// families arp, inet and netdev. The fence creates, changes and deletes only
// these.
const TableName = "haven_vip"

// TimeoutGranularity is the unit in which the kernel takes element
// timeouts (deadman.TimeoutGranularity).
const TimeoutGranularity = deadman.TimeoutGranularity

// Set and chain names inside the haven_vip tables.
const (
	setManaged4 = "managed4"
	setLive4    = "live4"
	setManaged6 = "managed6"
	setLive6    = "live6"
	setWindow4  = "window4"
	setWindow6  = "window6"

	chainOutput = "output"
	chainInput  = "input"

	// nfARPOut is NF_ARP_OUT, the output hook of the arp family
	// (golang.org/x/sys/unix does not define it).
	nfARPOut = 1
)

// FenceConfig configures a Fence.
type FenceConfig struct {
	// NetNS is a file descriptor of the network namespace whose nftables
	// ruleset the fence manages. Zero means the namespace of the calling
	// thread, at each call.
	NetNS int
}

// Fence is the kernel-side dead-man's switch for floating addresses: nftables
// rules that silence every managed address that is not live, and timed set
// elements that make an address live for a bounded time. Once the batch that
// opens an address is committed, its expiry needs nothing from the process.
// A Fence is safe for concurrent use.
type Fence struct {
	netns int
	sw    *deadman.Switch // opens and closes the addresses' gates

	mu      sync.Mutex
	managed []netip.Addr // as last installed; nil before Install
	// ifaces are the interfaces Guard was called for; Install recreates
	// their chains when it has to replace the tables.
	ifaces []string
}

// NewFence returns a Fence for the namespace in cfg. It does not touch the
// kernel; call Install first.
func NewFence(cfg FenceConfig) *Fence {
	gates := func(key []byte) []deadman.Gate {
		addr, _ := netip.AddrFromSlice(key)
		return newFenceTables().gates(addr)
	}
	return &Fence{netns: cfg.NetNS, sw: deadman.NewSwitch(cfg.NetNS, gates)}
}

// fenceTables describes haven's tables, sets and chains. The set IDs are
// assigned by AddSet within one batch, so every batch builds its own.
type fenceTables struct {
	arp, inet, netdev *nftables.Table

	arpManaged4, arpLive4, arpWindow4                                          *nftables.Set
	inetManaged4, inetLive4, inetWindow4, inetManaged6, inetLive6, inetWindow6 *nftables.Set
	netdevManaged4, netdevLive4, netdevWindow4                                 *nftables.Set

	arpOutput, inetInput, inetOutput *nftables.Chain
}

func newFenceTables() *fenceTables {
	arp := &nftables.Table{Name: TableName, Family: nftables.TableFamilyARP}
	inet := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	netdev := &nftables.Table{Name: TableName, Family: nftables.TableFamilyNetdev}
	managed := func(t *nftables.Table, name string, typ nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: typ}
	}
	live, window := deadman.LiveSet, deadman.WindowSet
	accept := nftables.ChainPolicyAccept
	return &fenceTables{
		arp:            arp,
		inet:           inet,
		netdev:         netdev,
		arpManaged4:    managed(arp, setManaged4, nftables.TypeIPAddr),
		arpLive4:       live(arp, setLive4, nftables.TypeIPAddr),
		arpWindow4:     window(arp, setWindow4, nftables.TypeIPAddr),
		inetManaged4:   managed(inet, setManaged4, nftables.TypeIPAddr),
		inetLive4:      live(inet, setLive4, nftables.TypeIPAddr),
		inetWindow4:    window(inet, setWindow4, nftables.TypeIPAddr),
		inetManaged6:   managed(inet, setManaged6, nftables.TypeIP6Addr),
		inetLive6:      live(inet, setLive6, nftables.TypeIP6Addr),
		inetWindow6:    window(inet, setWindow6, nftables.TypeIP6Addr),
		netdevManaged4: managed(netdev, setManaged4, nftables.TypeIPAddr),
		netdevLive4:    live(netdev, setLive4, nftables.TypeIPAddr),
		netdevWindow4:  window(netdev, setWindow4, nftables.TypeIPAddr),
		arpOutput: &nftables.Chain{
			Name: chainOutput, Table: arp, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookRef(nfARPOut), Priority: nftables.ChainPriorityFilter,
			Policy: &accept,
		},
		// Raw priority: before conntrack, so a fenced packet leaves no state.
		inetInput: &nftables.Chain{
			Name: chainInput, Table: inet, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRaw,
			Policy: &accept,
		},
		inetOutput: &nftables.Chain{
			Name: chainOutput, Table: inet, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw,
			Policy: &accept,
		},
	}
}

// gates returns the gates of addr: arp, inet and netdev for IPv4, inet for
// IPv6.
func (ft *fenceTables) gates(addr netip.Addr) []deadman.Gate {
	if addr.Is4() {
		return []deadman.Gate{{Live: ft.arpLive4, Window: ft.arpWindow4}, {Live: ft.inetLive4, Window: ft.inetWindow4}, {Live: ft.netdevLive4, Window: ft.netdevWindow4}}
	}
	return []deadman.Gate{{Live: ft.inetLive6, Window: ft.inetWindow6}}
}

// gate is the three sets that decide whether a packet for one address
// family may pass: it may if its address is not managed, or if it is live
// and inside its window.
type gate struct{ managed, live, window *nftables.Set }

func (ft *fenceTables) gate4(family nftables.TableFamily) gate {
	switch family {
	case nftables.TableFamilyARP:
		return gate{ft.arpManaged4, ft.arpLive4, ft.arpWindow4}
	case nftables.TableFamilyNetdev:
		return gate{ft.netdevManaged4, ft.netdevLive4, ft.netdevWindow4}
	}
	return gate{ft.inetManaged4, ft.inetLive4, ft.inetWindow4}
}

func (ft *fenceTables) gate6() gate { return gate{ft.inetManaged6, ft.inetLive6, ft.inetWindow6} }

// egress returns the netdev chain that guards iface.
func (ft *fenceTables) egress(iface string) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name: "egress_" + iface, Table: ft.netdev, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookEgress, Priority: nftables.ChainPriorityFilter,
		Policy: &accept, Device: iface,
	}
}

// Install creates haven's tables, sets and rules if they are missing and
// makes managed the set of fenced addresses, in one atomic batch. It is
// idempotent; it keeps the live elements of an existing installation, so a
// VIP held during a reload stays open; it never touches other tables.
// Addresses not in managed are never silenced by the fence.
func (f *Fence) Install(managed []netip.Addr) error {
	addrs, err := normalize(managed)
	if err != nil {
		return fmt.Errorf("vip: install fence: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()

	// First try in place: existing objects are kept, the managed sets and
	// the chains' rules are replaced.
	err = f.flush(func(cc *nftables.Conn) error { return buildFence(cc, addrs, f.ifaces, false) })
	if err != nil {
		// An installation from another version whose objects differ (a set
		// or chain with other flags or hook) makes the in-place batch fail:
		// replace the tables whole, again atomically. Live elements are lost.
		err2 := f.flush(func(cc *nftables.Conn) error { return buildFence(cc, addrs, f.ifaces, true) })
		if err2 != nil {
			return fmt.Errorf("vip: install fence in table %s: %w", TableName, errors.Join(err, err2))
		}
	}
	f.managed = addrs
	f.sw.Forget() // a replaced table lost the windows: read them again
	return nil
}

// buildFence queues the batch that installs the fence. With replace, the
// tables are deleted and created again (add then delete, so the delete never
// fails on a missing table).
func buildFence(cc *nftables.Conn, managed []netip.Addr, ifaces []string, replace bool) error {
	ft := newFenceTables()
	for _, t := range []*nftables.Table{ft.arp, ft.inet, ft.netdev} {
		cc.AddTable(t)
		if replace {
			cc.DelTable(t)
			cc.AddTable(t)
		}
	}

	var v4, v6 []nftables.SetElement
	for _, a := range managed {
		e := nftables.SetElement{Key: a.AsSlice()}
		if a.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{ft.arpManaged4, v4}, {ft.inetManaged4, v4}, {ft.inetManaged6, v6}, {ft.netdevManaged4, v4},
	} {
		if err := cc.AddSet(s.set, nil); err != nil {
			return err
		}
		cc.FlushSet(s.set)
		if len(s.elems) > 0 {
			if err := cc.SetAddElements(s.set, s.elems); err != nil {
				return err
			}
		}
	}
	// Live and window sets keep their elements: a VIP held across a
	// reload stays open.
	for _, s := range []*nftables.Set{
		ft.arpLive4, ft.inetLive4, ft.inetLive6, ft.netdevLive4,
		ft.arpWindow4, ft.inetWindow4, ft.inetWindow6, ft.netdevWindow4,
	} {
		if err := cc.AddSet(s, nil); err != nil {
			return err
		}
	}

	for _, c := range []*nftables.Chain{ft.arpOutput, ft.inetInput, ft.inetOutput} {
		cc.AddChain(c)
		cc.FlushChain(c)
	}

	// arp output: the sender protocol address of an Ethernet/IPv4 ARP packet
	// (replies, requests and gratuitous ARP sent by the kernel).
	//   arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @managed4 arp saddr ip != @live4 drop
	//   arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @managed4 arp saddr ip . meta time != @window4 drop
	addFenced(cc, ft.arpOutput, ft.gate4(nftables.TableFamilyARP), addrAt(expr.PayloadBaseNetworkHeader, 14, 4),
		arpIPv4()...)

	// inet input: traffic to a fenced address.
	addFenced(cc, ft.inetInput, ft.gate4(nftables.TableFamilyINet), addrAt(expr.PayloadBaseNetworkHeader, 16, 4), // ip daddr
		nfproto(unix.NFPROTO_IPV4))
	addFenced(cc, ft.inetInput, ft.gate6(), addrAt(expr.PayloadBaseNetworkHeader, 24, 16), // ip6 daddr
		nfproto(unix.NFPROTO_IPV6))

	// inet output: neighbour advertisements for a fenced address, whatever
	// their source (first, so its counters show them), then traffic from
	// it: replies on established connections, neighbour solicitations.
	addFenced(cc, ft.inetOutput, ft.gate6(), addrAt(expr.PayloadBaseTransportHeader, 8, 16), // target address
		nfproto(unix.NFPROTO_IPV6),
		[]expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		},
		cmpPayload(expr.PayloadBaseTransportHeader, 0, []byte{136})) // icmpv6 type nd-neighbor-advert
	addFenced(cc, ft.inetOutput, ft.gate4(nftables.TableFamilyINet), addrAt(expr.PayloadBaseNetworkHeader, 12, 4), // ip saddr
		nfproto(unix.NFPROTO_IPV4))
	addFenced(cc, ft.inetOutput, ft.gate6(), addrAt(expr.PayloadBaseNetworkHeader, 8, 16), // ip6 saddr
		nfproto(unix.NFPROTO_IPV6))

	for _, iface := range ifaces {
		addEgressGuard(cc, ft, iface)
	}
	return nil
}

// arpIPv4 matches an Ethernet/IPv4 ARP packet.
func arpIPv4() [][]expr.Any {
	return [][]expr.Any{
		cmpPayload(expr.PayloadBaseNetworkHeader, 2, []byte{0x08, 0x00}), // ptype IPv4
		cmpPayload(expr.PayloadBaseNetworkHeader, 4, []byte{6}),          // hlen
		cmpPayload(expr.PayloadBaseNetworkHeader, 5, []byte{4}),          // plen
	}
}

// addEgressGuard queues the netdev egress chain of iface. It sees what
// packet sockets send, which the arp family's hooks do not: the gratuitous
// ARP of Announce.
//
//	meta protocol arp arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @managed4 arp saddr ip != @live4 drop
//	(and the same with arp saddr ip . meta time != @window4)
func addEgressGuard(cc *nftables.Conn, ft *fenceTables, iface string) {
	c := ft.egress(iface)
	cc.AddChain(c)
	cc.FlushChain(c)
	match := append([][]expr.Any{{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x08, 0x06}}, // ETH_P_ARP
	}}, arpIPv4()...)
	addFenced(cc, c, ft.gate4(nftables.TableFamilyNetdev), addrAt(expr.PayloadBaseNetworkHeader, 14, 4), match...)
}

// Guard extends the fence to what packet sockets send on iface: a netdev
// egress chain (Linux 5.16 and later) drops ARP packets that claim a managed
// IPv4 address that is not live, so a gratuitous ARP that Announce sends
// after the window closed (the agent was suspended mid-burst, say) never
// leaves the node. The arp family's output hook, which fences the kernel's
// own ARP, does not see packet sockets. Call it after Install, once per
// interface that carries a VIP; it is idempotent.
func (f *Fence) Guard(iface string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.managed == nil {
		return fmt.Errorf("vip: guard %s: fence not installed", iface)
	}
	err := f.flush(func(cc *nftables.Conn) error {
		addEgressGuard(cc, newFenceTables(), iface)
		return nil
	})
	if err != nil {
		return fmt.Errorf("vip: guard %s: netdev egress chain in table %s: %w", iface, TableName, err)
	}
	if !slices.Contains(f.ifaces, iface) {
		f.ifaces = append(f.ifaces, iface)
	}
	return nil
}

// Repair installs the fence again as it was last installed and guarded,
// after something outside haven removed its tables (`nft flush ruleset`, a
// firewall reload). Live elements are lost: every address is closed.
func (f *Fence) Repair() error {
	f.mu.Lock()
	managed, ifaces := slices.Clone(f.managed), slices.Clone(f.ifaces)
	f.mu.Unlock()
	if managed == nil {
		return fmt.Errorf("vip: repair fence: it was never installed")
	}
	if err := f.Install(managed); err != nil {
		return err
	}
	for _, iface := range ifaces {
		if err := f.Guard(iface); err != nil {
			return err
		}
	}
	return nil
}

func addRule(cc *nftables.Conn, c *nftables.Chain, parts ...[]expr.Any) {
	var exprs []expr.Any
	for _, p := range parts {
		exprs = append(exprs, p...)
	}
	cc.AddRule(&nftables.Rule{Table: c.Table, Chain: c, Exprs: exprs})
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func cmpPayload(base expr.PayloadBase, off uint32, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

// addrField is where a rule finds the fenced address in the packet.
type addrField struct {
	base   expr.PayloadBase
	off, n uint32
}

func addrAt(base expr.PayloadBase, off, n uint32) addrField { return addrField{base, off, n} }

// addFenced queues the two rules that drop a packet matching match whose
// address at a is managed and either not live (the relative gate: an
// element timeout counted from the commit) or outside its window (the
// absolute gate: wall-clock time). A packet passes only through both gates,
// so a commit delayed after the clock was read (the process was frozen)
// cannot extend the window past the deadline, and a wall-clock step cannot
// either.
func addFenced(cc *nftables.Conn, c *nftables.Chain, g gate, a addrField, match ...[]expr.Any) {
	load := &expr.Payload{DestRegister: 1, Base: a.base, Offset: a.off, Len: a.n}
	relative, absolute := deadman.Rules(load, a.n, g.managed, g.live, g.window)
	addRule(cc, c, append(slices.Clip(match), relative)...)
	addRule(cc, c, append(slices.Clip(match), absolute)...)
}

// CommitMargin is the least by which OpenUntil ends a window before the
// deadline asked (deadman.CommitMargin); it grows when commits are slower.
const CommitMargin = deadman.CommitMargin

// ErrExpired reports that less than TimeoutGranularity (after the commit
// margin) was left of a window when the fence was to open it: the address
// has been closed instead.
var ErrExpired = deadman.ErrExpired

// Open is OpenUntil(addr, time.Now().Add(ttl)).
func (f *Fence) Open(addr netip.Addr, ttl time.Duration) error {
	return f.OpenUntil(addr, time.Now().Add(ttl))
}

// OpenUntil makes addr live until deadline (a time from time.Now, so that
// it carries the monotonic clock), replacing whatever time it had left,
// longer or shorter. The kernel ends the window by itself; nothing more is
// needed from the process. Both gates open in one batch (see package
// deadman): the relative gate ends a commit margin before the deadline and
// is set again if the commit was late; the absolute gate ends at the
// deadline in wall-clock time, so that even while a late commit's element
// is live the address is silent after the deadline. When too little time
// is left, it closes addr and returns an error that wraps ErrExpired.
func (f *Fence) OpenUntil(addr netip.Addr, deadline time.Time) error {
	addr = addr.Unmap()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.managed == nil {
		return fmt.Errorf("vip: open fence for %s: fence not installed", addr)
	}
	if !slices.Contains(f.managed, addr) {
		return fmt.Errorf("vip: open fence for %s: not a managed address (managed: %v)", addr, f.managed)
	}
	if err := f.sw.OpenUntil(addr.AsSlice(), deadline); err != nil {
		return fmt.Errorf("vip: open fence for %s: %w", addr, err)
	}
	return nil
}

// Close silences addr now: it is no longer live. Closing an address that is
// not live is not an error; a missing fence is, since then nothing silences
// the address.
func (f *Fence) Close(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("vip: close fence: invalid address")
	}
	if err := f.sw.Close(addr.AsSlice()); err != nil {
		return fmt.Errorf("vip: close fence for %s: %w", addr, err)
	}
	return nil
}

// Live reports whether addr is live: an unexpired element in every live set
// that gates it, and a window that has not ended in every window set.
func (f *Fence) Live(addr netip.Addr) (bool, error) {
	addr = addr.Unmap()
	live, err := f.sw.Live(addr.AsSlice())
	if err != nil {
		return false, fmt.Errorf("vip: read fence for %s: %w", addr, err)
	}
	return live, nil
}

// Remove deletes haven's tables, with every rule and element in them. It is
// for a graceful shutdown after the addresses have been removed: without the
// tables nothing fences an address left on an interface. Removing tables
// that do not exist is not an error.
func (f *Fence) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.flush(func(cc *nftables.Conn) error {
		ft := newFenceTables()
		for _, t := range []*nftables.Table{ft.arp, ft.inet, ft.netdev} {
			cc.AddTable(t) // so the delete never fails on a missing table
			cc.DelTable(t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("vip: remove fence tables %s: %w", TableName, err)
	}
	f.managed = nil
	f.ifaces = nil
	return nil
}

func (f *Fence) flush(build func(cc *nftables.Conn) error) error {
	return deadman.Flush(f.netns, build)
}

// normalize unmaps, validates, sorts and deduplicates addrs.
func normalize(addrs []netip.Addr) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" {
			return nil, fmt.Errorf("invalid managed address %q", a)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}
