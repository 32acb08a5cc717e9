package fault

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/deadman"
)

// DropTable is the nftables table (family inet) of the drop and loss
// faults:
//
//	ip saddr @drop4 drop; ip6 saddr @drop6 drop    (input, raw priority)
//	ip daddr @drop4 drop; ip6 daddr @drop6 drop    (output)
//	ip saddr @loss30_4 numgen random mod 100 < 30 drop; ...
//
// The sets' elements are the peers' addresses, each with the fault's
// duration as its timeout: the kernel ends a drop or a loss by itself. A
// loss of L percent has its own pair of sets, lossL_4 and lossL_6, and its
// own rules, made the first time that level is asked for; they stay,
// empty, until the table is removed (Recover).
const DropTable = "haven_drill"

// dropLinger is how long the kernel keeps a dropped peer after its fault's
// end, if the agent has not undone it by then.
const dropLinger = time.Second

// dropTable installs the table on first use, in its network namespace,
// and each loss level's sets and rules on that level's first use.
type dropTable struct {
	netns     int
	installed bool
	levels    map[int]bool
}

// peerSets are the sets of one kind of cut: the drop's, or one loss
// level's (level 0: the drop).
type peerSets struct {
	v4, v6 *nftables.Set
	level  int
}

type dropObjects struct {
	table         *nftables.Table
	drop          peerSets
	input, output *nftables.Chain
}

func newDropObjects() *dropObjects {
	t := &nftables.Table{Name: DropTable, Family: nftables.TableFamilyINet}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: nftables.ChainPriorityRaw, Policy: &accept}
	}
	return &dropObjects{
		table:  t,
		drop:   newPeerSets(t, "drop4", "drop6", 0),
		input:  chain("input", nftables.ChainHookInput),
		output: chain("output", nftables.ChainHookOutput),
	}
}

func newPeerSets(t *nftables.Table, v4, v6 string, level int) peerSets {
	return peerSets{
		v4:    &nftables.Set{Table: t, Name: v4, KeyType: nftables.TypeIPAddr, HasTimeout: true},
		v6:    &nftables.Set{Table: t, Name: v6, KeyType: nftables.TypeIP6Addr, HasTimeout: true},
		level: level,
	}
}

// sets returns the sets of a drop (level 0) or of a loss of level percent.
func (o *dropObjects) sets(level int) peerSets {
	if level == 0 {
		return o.drop
	}
	return newPeerSets(o.table, fmt.Sprintf("loss%d_4", level), fmt.Sprintf("loss%d_6", level), level)
}

// install creates the table, the drop's sets and rules, keeping the
// elements of an existing installation.
func (d *dropTable) install(cc *nftables.Conn, o *dropObjects) error {
	cc.AddTable(o.table)
	cc.AddChain(o.input)
	cc.AddChain(o.output)
	cc.FlushChain(o.input)
	cc.FlushChain(o.output)
	return d.addRules(cc, o, o.drop)
}

// addRules adds ps's sets and, in both chains and for both families, the
// rule that drops what matches them: every packet, or level percent.
func (d *dropTable) addRules(cc *nftables.Conn, o *dropObjects, ps peerSets) error {
	for _, s := range []*nftables.Set{ps.v4, ps.v6} {
		if err := cc.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		chain  *nftables.Chain
		v4, v6 uint32 // offsets of the source (input) or destination (output) address
	}{{o.input, 12, 8}, {o.output, 16, 24}} {
		for _, f := range []struct {
			proto byte
			off   uint32
			n     uint32
			set   *nftables.Set
		}{{unix.NFPROTO_IPV4, c.v4, 4, ps.v4}, {unix.NFPROTO_IPV6, c.v6, 16, ps.v6}} {
			exprs := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.off, Len: f.n},
				&expr.Lookup{SourceRegister: 1, SetName: f.set.Name, SetID: f.set.ID},
			}
			if ps.level > 0 {
				exprs = append(exprs, chance(ps.level)...)
			}
			exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
			cc.AddRule(&nftables.Rule{Table: o.table, Chain: c.chain, Exprs: exprs})
		}
	}
	return nil
}

// chance matches level percent of the packets, at random: numgen random
// mod 100 < level, as nft writes it. numgen leaves a number in host byte
// order and cmp compares bytes, so the number is turned big-endian first.
func chance(level int) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(uint32(level))},
	}
}

// add cuts addrs off for d, all their packets (level 0) or level percent;
// the kernel removes them after it.
func (d *dropTable) add(addrs []netip.Addr, level int, dur time.Duration) error {
	err := deadman.Flush(d.netns, func(cc *nftables.Conn) error {
		o := newDropObjects()
		if !d.installed {
			if err := d.install(cc, o); err != nil {
				return err
			}
		}
		ps := o.sets(level)
		if level > 0 && !d.levels[level] {
			if err := d.addRules(cc, o, ps); err != nil {
				return err
			}
		}
		v4, v6 := elements(addrs, dur)
		if len(v4) > 0 {
			if err := cc.SetAddElements(ps.v4, v4); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			return cc.SetAddElements(ps.v6, v6)
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.installed = true
	if level > 0 {
		if d.levels == nil {
			d.levels = map[int]bool{}
		}
		d.levels[level] = true
	}
	return nil
}

// del stops cutting addrs off (level 0: a drop; else that loss level's).
func (d *dropTable) del(addrs []netip.Addr, level int) error {
	return deadman.Flush(d.netns, func(cc *nftables.Conn) error {
		ps := newDropObjects().sets(level)
		v4, v6 := elements(addrs, 0)
		if len(v4) > 0 {
			if err := cc.SetDeleteElements(ps.v4, v4); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			return cc.SetDeleteElements(ps.v6, v6)
		}
		return nil
	})
}

// remove deletes the table, if there is one.
func (d *dropTable) remove() error {
	d.installed = false
	d.levels = nil
	err := deadman.Flush(d.netns, func(cc *nftables.Conn) error {
		cc.DelTable(&nftables.Table{Name: DropTable, Family: nftables.TableFamilyINet})
		return nil
	})
	if err != nil && errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func elements(addrs []netip.Addr, dur time.Duration) (v4, v6 []nftables.SetElement) {
	for _, a := range addrs {
		a = a.Unmap()
		e := nftables.SetElement{Key: a.AsSlice(), Timeout: dur}
		if a.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	return v4, v6
}

// peer is a peer a drop or loss names and the addresses it stands for.
type peer struct {
	name  string
	addrs []netip.Addr
}

// resolve finds the addresses of each of names, through Env.Address.
func (m *Manager) resolve(names []string) ([]peer, error) {
	if m.env.Address == nil {
		return nil, errors.New("this node knows no peers")
	}
	var out []peer
	for _, n := range names {
		as, err := m.env.Address(n)
		if err != nil {
			return nil, err
		}
		if len(as) == 0 {
			return nil, fmt.Errorf("peer %q: no address", n)
		}
		out = append(out, peer{n, as})
	}
	return out, nil
}

// cut drops every packet (a drop) or spec.Level percent of the packets (a
// loss) to and from peers' addresses.
func (m *Manager) cut(spec Spec, peers []peer) (string, undoer, error) {
	level := 0
	if spec.Kind == Loss {
		level = spec.Level
	}
	addrs, names := addresses(peers)
	// The table and the level's rule now, so that a node whose kernel
	// cannot cut says so in its answer; the peers' elements cutDelay
	// later (m.mu held by Inject).
	if err := m.drop.add(nil, level, 0); err != nil {
		return "", nil, fmt.Errorf("nftables table inet %s: %w", DropTable, err)
	}
	var (
		mu     sync.Mutex
		undone bool
	)
	// The kernel's timeout outlasts the Manager's timer by dropLinger, so
	// that the timer's undo finds its elements; it ends the cut only when
	// the timer did not come (a killed agent).
	begin := time.AfterFunc(cutDelay, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		if undone {
			return
		}
		if err := m.drop.add(addrs, level, spec.Duration+dropLinger); err != nil {
			m.log.Error("drill: the cut could not begin", "kind", spec.Kind, "peers", names, "err", err)
		}
	})
	undo := func() error {
		mu.Lock()
		undone = true
		mu.Unlock()
		begin.Stop()
		if err := m.drop.del(addrs, level); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables table inet %s: %w", DropTable, err)
		}
		return nil
	}
	what := "dropping traffic to and from "
	if level > 0 {
		what = fmt.Sprintf("dropping %d%% of the packets to and from ", level)
	}
	return what + names, undo, nil
}

// cutDelay is how long after its answer a drop or a loss begins: the
// drill's client may be among the peers it cuts off (it asks from a node
// the partition or the region's loss leaves on the other side), and must
// have the answer first.
const cutDelay = 300 * time.Millisecond

// addresses returns the peers' addresses, and the peers as a detail names
// them ("db2 198.18.1.12, 198.18.1.31").
func addresses(peers []peer) ([]netip.Addr, string) {
	var addrs []netip.Addr
	var names []string
	for _, p := range peers {
		addrs = append(addrs, p.addrs...)
		for _, a := range p.addrs {
			if p.name == a.String() {
				names = append(names, p.name)
			} else {
				names = append(names, p.name+" "+a.String())
			}
		}
	}
	return addrs, strings.Join(names, ", ")
}
