package vip

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
)

// window is an absolute window of the fence: wall-clock Unix nanoseconds,
// both ends included. The zero window is no window.
//
// A window starts when OpenUntil reads the clock, not at the epoch, so
// that an address's successive windows need not overlap: a set of intervals
// refuses overlapping elements, and deleting one costs the batch an RCU
// grace period (~16 ms), which a takeover should not wait for. A window that
// has ended is left in place and collected by its element's timeout; only
// one that has not ended is replaced, in the same batch. The price is that a
// wall clock stepped back before a window's start silences the address
// until the next renewal opens a window from the stepped clock.
type window struct{ from, to int64 }

// windowLinger is how long a window's element outlives its end before the
// kernel collects it. Any positive time does: the window's end, not the
// element's timeout, is what closes the address.
const windowLinger = time.Second

// element is w as an element of addr's window sets: addr . from to
// addr . to, as the rules build the key (the time in network byte order
// right after the address, 4 or 16 bytes, whole registers).
func (w window) element(addr netip.Addr) nftables.SetElement {
	return nftables.SetElement{
		Key:     binary.BigEndian.AppendUint64(addr.AsSlice(), uint64(w.from)),
		KeyEnd:  binary.BigEndian.AppendUint64(addr.AsSlice(), uint64(w.to)),
		Timeout: (time.Duration(w.to-w.from) + windowLinger).Truncate(TimeoutGranularity),
	}
}

// openWindow queues, in each of addr's window sets, the window w and the
// removal of every stale window that has not ended by w's start. A stale
// window is added before it is deleted, so that the delete cannot fail if
// the kernel collected it meanwhile; the batch swaps old and new
// atomically, and lookups see one or the other.
func openWindow(cc *nftables.Conn, ft *fenceTables, addr netip.Addr, w window, stale [][]window) error {
	for i, s := range ft.window(addr) {
		for _, old := range stale[i] {
			if old.to < w.from {
				continue // ended: no overlap, left to its timeout
			}
			e := []nftables.SetElement{old.element(addr)}
			if err := cc.SetAddElements(s, e); err != nil {
				return err
			}
			if err := cc.SetDeleteElements(s, e); err != nil {
				return err
			}
		}
		if err := cc.SetAddElements(s, []nftables.SetElement{w.element(addr)}); err != nil {
			return err
		}
	}
	return nil
}

// knownWindows returns, per window set of addr, the window this Fence last
// opened for it.
func (f *Fence) knownWindows(addr netip.Addr) [][]window {
	stale := make([][]window, len(newFenceTables().window(addr)))
	if w := f.windows[addr]; w != (window{}) {
		for i := range stale {
			stale[i] = []window{w}
		}
	}
	return stale
}

// staleWindows returns, per window set of addr, the windows an open may
// have to replace: the one this Fence last opened, or when it does not know
// (after Install, after an error), every window the kernel holds for addr.
func (f *Fence) staleWindows(addr netip.Addr) ([][]window, error) {
	if _, ok := f.windows[addr]; ok {
		return f.knownWindows(addr), nil
	}
	cc, err := nftables.New(nftables.WithNetNSFd(f.netns))
	if err != nil {
		return nil, err
	}
	var stale [][]window
	for _, s := range newFenceTables().window(addr) {
		ws, err := addrWindows(cc, s, addr)
		if err != nil {
			return nil, err
		}
		stale = append(stale, ws)
	}
	return stale, nil
}

// addrWindows lists addr's windows in the window set s.
func addrWindows(cc *nftables.Conn, s *nftables.Set, addr netip.Addr) ([]window, error) {
	elems, err := cc.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("set %s %s: %w", tableFamily(s.Table), s.Name, err)
	}
	key := addr.AsSlice()
	var ws []window
	for _, e := range elems {
		if len(e.Key) != len(key)+8 || len(e.KeyEnd) != len(key)+8 || string(e.Key[:len(key)]) != string(key) {
			continue
		}
		ws = append(ws, window{
			from: int64(binary.BigEndian.Uint64(e.Key[len(key):])),
			to:   int64(binary.BigEndian.Uint64(e.KeyEnd[len(key):])),
		})
	}
	return ws, nil
}
