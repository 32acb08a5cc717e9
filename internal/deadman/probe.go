package deadman

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// ProbeTable is the scratch table Probe creates and deletes.
const ProbeTable = "haven_probe"

// Probe checks that the kernel of netns takes what a Switch needs: a
// table with a live set (elements with timeouts), a window set (a
// concatenation of a key and the wall-clock time, as intervals) and the
// two rules that look them up, one reading `meta time`. It builds them in
// a scratch inet table, in a base-less chain that no packet traverses, and
// deletes the table again. A kernel older than 5.4 (meta time), or one
// without nf_tables, fails here instead of at the first fence.
func Probe(netns int) error {
	t := &nftables.Table{Name: ProbeTable, Family: nftables.TableFamilyINet}
	err := Flush(netns, func(cc *nftables.Conn) error {
		cc.AddTable(t)
		managed := &nftables.Set{Table: t, Name: "managed", KeyType: nftables.TypeIPAddr}
		live := LiveSet(t, "live", nftables.TypeIPAddr)
		window := WindowSet(t, "window", nftables.TypeIPAddr)
		for _, s := range []*nftables.Set{managed, live, window} {
			if err := cc.AddSet(s, nil); err != nil {
				return err
			}
		}
		c := cc.AddChain(&nftables.Chain{Name: "probe", Table: t})
		load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
		relative, absolute := Rules(load, 4, managed, live, window)
		cc.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: relative})
		cc.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: absolute})
		return nil
	})
	// Delete whatever part of it a failed batch may have left (none: a
	// batch is all or nothing) or the whole of it.
	derr := Flush(netns, func(cc *nftables.Conn) error {
		tables, lerr := cc.ListTablesOfFamily(nftables.TableFamilyINet)
		if lerr != nil {
			return lerr
		}
		for _, have := range tables {
			if have.Name == ProbeTable {
				cc.DelTable(t)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nftables: a table with timed sets, a concatenated interval set and a rule reading meta time: %w", err)
	}
	if derr != nil {
		return fmt.Errorf("nftables: delete the probe table %s: %w", ProbeTable, derr)
	}
	return nil
}
