package fault

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/deadman"
)

// DropTable is the nftables table (family inet) of the drop faults:
//
//	ip saddr @drop4 drop; ip6 saddr @drop6 drop    (input, raw priority)
//	ip daddr @drop4 drop; ip6 daddr @drop6 drop    (output)
//
// The sets' elements are the dropped peers' addresses, each with the
// fault's duration as its timeout: the kernel ends a drop by itself.
const DropTable = "haven_drill"

// dropLinger is how long the kernel keeps a dropped peer after its fault's
// end, if the agent has not undone it by then.
const dropLinger = time.Second

// dropTable installs the table on first use, in its network namespace.
type dropTable struct {
	netns     int
	installed bool
}

type dropObjects struct {
	table         *nftables.Table
	v4, v6        *nftables.Set
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
		v4:     &nftables.Set{Table: t, Name: "drop4", KeyType: nftables.TypeIPAddr, HasTimeout: true},
		v6:     &nftables.Set{Table: t, Name: "drop6", KeyType: nftables.TypeIP6Addr, HasTimeout: true},
		input:  chain("input", nftables.ChainHookInput),
		output: chain("output", nftables.ChainHookOutput),
	}
}

// install creates the table, sets and rules, keeping the elements of an
// existing installation.
func (d *dropTable) install(cc *nftables.Conn, o *dropObjects) error {
	cc.AddTable(o.table)
	for _, s := range []*nftables.Set{o.v4, o.v6} {
		if err := cc.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		chain  *nftables.Chain
		v4, v6 uint32 // offsets of the source (input) or destination (output) address
	}{{o.input, 12, 8}, {o.output, 16, 24}} {
		cc.AddChain(c.chain)
		cc.FlushChain(c.chain)
		for _, f := range []struct {
			proto byte
			off   uint32
			n     uint32
			set   *nftables.Set
		}{{unix.NFPROTO_IPV4, c.v4, 4, o.v4}, {unix.NFPROTO_IPV6, c.v6, 16, o.v6}} {
			cc.AddRule(&nftables.Rule{Table: o.table, Chain: c.chain, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.off, Len: f.n},
				&expr.Lookup{SourceRegister: 1, SetName: f.set.Name, SetID: f.set.ID},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
	}
	return nil
}

// add drops addrs for d; the kernel removes them after it.
func (d *dropTable) add(addrs []netip.Addr, dur time.Duration) error {
	return deadman.Flush(d.netns, func(cc *nftables.Conn) error {
		o := newDropObjects()
		if !d.installed {
			if err := d.install(cc, o); err != nil {
				return err
			}
		}
		v4, v6 := elements(addrs, dur)
		if len(v4) > 0 {
			if err := cc.SetAddElements(o.v4, v4); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			return cc.SetAddElements(o.v6, v6)
		}
		return nil
	})
}

// del stops dropping addrs.
func (d *dropTable) del(addrs []netip.Addr) error {
	return deadman.Flush(d.netns, func(cc *nftables.Conn) error {
		o := newDropObjects()
		v4, v6 := elements(addrs, 0)
		if len(v4) > 0 {
			if err := cc.SetDeleteElements(o.v4, v4); err != nil {
				return err
			}
		}
		if len(v6) > 0 {
			return cc.SetDeleteElements(o.v6, v6)
		}
		return nil
	})
}

// remove deletes the table, if there is one.
func (d *dropTable) remove() error {
	d.installed = false
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

// dropPeers drops every packet to and from spec.Peers' addresses.
func (m *Manager) dropPeers(spec Spec) (string, undoer, error) {
	if m.env.Address == nil {
		return "", nil, errors.New("this node knows no peers")
	}
	var addrs []netip.Addr
	var names []string
	for _, p := range spec.Peers {
		as, err := m.env.Address(p)
		if err != nil {
			return "", nil, err
		}
		addrs = append(addrs, as...)
		for _, a := range as {
			names = append(names, p+" "+a.String())
		}
	}
	// The kernel's timeout outlasts the Manager's timer by dropLinger, so
	// that the timer's undo finds its elements; it ends the drop only when
	// the timer did not come (a killed agent).
	if err := m.drop.add(addrs, spec.Duration+dropLinger); err != nil {
		return "", nil, fmt.Errorf("nftables table inet %s: %w", DropTable, err)
	}
	m.drop.installed = true
	undo := func() error {
		if err := m.drop.del(addrs); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables table inet %s: %w", DropTable, err)
		}
		return nil
	}
	return "dropping traffic to and from " + strings.Join(names, ", "), undo, nil
}
