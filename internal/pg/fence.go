package pg

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/deadman"
)

// FenceTable is the name of the write fence's nftables table (family
// inet). The fence creates, changes and deletes only it.
const FenceTable = "haven_pg"

// WriteFence is the primary's kernel dead-man's switch: nftables rules that
// drop TCP traffic to and from postgres's port while the port is fenced
// and not open, and a deadman.Switch that opens it until the primary's
// lease deadline after each renewal. A primary whose agent froze (SIGSTOP,
// a stuck disk) goes silent at its deadline, with nothing needed from the
// agent: no client gets a commit acknowledged over TCP, and no standby
// receives WAL from it or acknowledges a commit to it. Connections over
// the unix socket are not fenced (haven's own, and local tools).
//
// Only a primary is fenced: the keeper fences the port before it promotes
// and unfences it once the node is a replica again, so that replicas serve
// reads.
type WriteFence struct {
	netns int
	key   []byte // the port, big-endian
	sw    *deadman.Switch

	mu     sync.Mutex
	fenced bool
}

// NewWriteFence returns the write fence of postgres's port in the network
// namespace netns (a file descriptor; zero: the calling thread's). It does
// not touch the kernel; call Install.
func NewWriteFence(netns, port int) *WriteFence {
	key := binary.BigEndian.AppendUint16(nil, uint16(port))
	return &WriteFence{netns: netns, key: key, sw: deadman.NewSwitch(netns, func([]byte) []deadman.Gate {
		return newFenceObjects().gates()
	})}
}

// fenceObjects are the write fence's table, sets and chains. Set IDs are
// assigned per batch, so every batch builds its own.
type fenceObjects struct {
	table              *nftables.Table
	managed, live, win *nftables.Set
	input, output      *nftables.Chain
}

func newFenceObjects() *fenceObjects {
	t := &nftables.Table{Name: FenceTable, Family: nftables.TableFamilyINet}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		// Raw priority: before conntrack, so a fenced packet leaves no state.
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRaw, Policy: &accept}
	}
	return &fenceObjects{
		table:   t,
		managed: &nftables.Set{Table: t, Name: "fenced", KeyType: nftables.TypeInetService},
		live:    deadman.LiveSet(t, "open", nftables.TypeInetService),
		win:     deadman.WindowSet(t, "window", nftables.TypeInetService),
		input:   chain("input", nftables.ChainHookInput),
		output:  chain("output", nftables.ChainHookOutput),
	}
}

func (o *fenceObjects) gates() []deadman.Gate { return []deadman.Gate{{Live: o.live, Window: o.win}} }

// Install creates the table, its sets and rules (idempotent; it keeps the
// open elements of an existing installation) and unfences the port.
//
//	meta l4proto tcp th dport @fenced th dport != @open drop   (input)
//	meta l4proto tcp th dport @fenced th dport . meta time != @window drop
//	meta l4proto tcp th sport @fenced ... (output, the same two)
func (f *WriteFence) Install() error {
	err := f.flush(func(cc *nftables.Conn) error {
		o := newFenceObjects()
		cc.AddTable(o.table)
		for _, s := range []*nftables.Set{o.managed, o.live, o.win} {
			if err := cc.AddSet(s, nil); err != nil {
				return err
			}
		}
		cc.FlushSet(o.managed)
		tcp := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
		for _, c := range []struct {
			chain *nftables.Chain
			off   uint32 // th dport on input, th sport on output
		}{{o.input, 2}, {o.output, 0}} {
			cc.AddChain(c.chain)
			cc.FlushChain(c.chain)
			load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: c.off, Len: 2}
			relative, absolute := deadman.Rules(load, 2, o.managed, o.live, o.win)
			for _, r := range [][]expr.Any{relative, absolute} {
				cc.AddRule(&nftables.Rule{Table: o.table, Chain: c.chain, Exprs: append(append([]expr.Any{}, tcp...), r...)})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pg: install the write fence (nftables table inet %s): %w", FenceTable, err)
	}
	f.sw.Forget()
	f.mu.Lock()
	f.fenced = false
	f.mu.Unlock()
	return nil
}

// Fence puts the port under the fence: from now on its traffic passes only
// while it is open. It does not open it.
func (f *WriteFence) Fence() error { return f.setFenced(true) }

// Unfence takes the port out of the fence: a replica's traffic passes
// freely.
func (f *WriteFence) Unfence() error { return f.setFenced(false) }

func (f *WriteFence) setFenced(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced == on {
		return nil
	}
	err := f.flush(func(cc *nftables.Conn) error {
		o := newFenceObjects()
		if on {
			return cc.SetAddElements(o.managed, []nftables.SetElement{{Key: f.key}})
		}
		cc.FlushSet(o.managed)
		return nil
	})
	if err != nil {
		return fmt.Errorf("pg: write fence: fence=%v: %w", on, err)
	}
	f.fenced = on
	return nil
}

// OpenUntil lets the port's traffic through until deadline (from
// time.Now); see deadman.Switch.OpenUntil. An error that wraps
// deadman.ErrExpired means too little time was left: the port is closed.
func (f *WriteFence) OpenUntil(deadline time.Time) error {
	if err := f.sw.OpenUntil(f.key, deadline); err != nil {
		return fmt.Errorf("pg: open the write fence: %w", err)
	}
	return nil
}

// Close stops the port's traffic now.
func (f *WriteFence) Close() error {
	if err := f.sw.Close(f.key); err != nil {
		return fmt.Errorf("pg: close the write fence: %w", err)
	}
	return nil
}

// Remove deletes the table, for a graceful shutdown.
func (f *WriteFence) Remove() error {
	err := f.flush(func(cc *nftables.Conn) error {
		t := newFenceObjects().table
		cc.AddTable(t) // so the delete never fails on a missing table
		cc.DelTable(t)
		return nil
	})
	if err != nil {
		return fmt.Errorf("pg: remove the write fence: %w", err)
	}
	return nil
}

func (f *WriteFence) flush(build func(cc *nftables.Conn) error) error {
	return deadman.Flush(f.netns, build)
}
