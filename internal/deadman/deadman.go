// Package deadman is a dead-man's switch in the kernel: nftables gates that
// let the traffic of a key (a floating address, a database's port) through
// only until a deadline, with nothing needed from the process once the
// batch that opened them is committed. A process that freezes, crashes or
// is killed goes silent at its deadline.
//
// Each key passes two gates, opened together in one batch, and a packet
// needs both:
//
//   - the relative gate, an element with a timeout in a "live" set, which
//     the kernel counts from its commit: OpenUntil reads the clock, sends
//     the time left minus a commit margin, and checks after the commit that
//     it took no longer than the margin;
//   - the absolute gate, a window key . [from, deadline] in wall-clock time
//     in an interval set (`meta time`, Linux 5.6+), which a commit delayed
//     past the clock reading (the process was frozen in between) cannot
//     extend.
//
// A wall-clock step cannot extend the relative gate, and a late commit
// cannot extend the absolute one: only both together could keep a key open
// past its deadline. The caller owns the tables, sets and rules (Rules
// builds the two drop rules of a key); a Switch opens and closes keys in
// them.
package deadman

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TimeoutGranularity is the unit in which the kernel takes element timeouts.
// OpenUntil rounds the time it sends down to a multiple of it. The kernel
// then converts the milliseconds to jiffies rounding down again, so an
// element never outlives the time sent, measured from the kernel's commit.
const TimeoutGranularity = time.Millisecond

// CommitMargin is the least by which OpenUntil ends a key's relative gate
// before the deadline asked, so that a batch which takes up to that long
// between reading the clock and the kernel's commit still ends it by the
// deadline. OpenUntil raises the margin when commits are slower.
const CommitMargin = 5 * time.Millisecond

// maxMargin bounds the adaptive commit margin.
const maxMargin = 100 * time.Millisecond

// LiveDefaultTimeout is the timeout of an element added to a live set
// without one (by hand, say): such an element must not open a key forever.
const LiveDefaultTimeout = time.Second

// nftMetaTimeNS is NFT_META_TIME_NS (Linux 5.4), the packet's arrival in
// wall-clock nanoseconds since the epoch, in host byte order
// (golang.org/x/sys/unix does not define it).
const nftMetaTimeNS = 30

// ErrExpired reports that less than TimeoutGranularity (after the commit
// margin) was left of a key's time when the switch was to open it: the key
// has been closed instead.
var ErrExpired = errors.New("window ended before the kernel could commit it")

// Gate is where one key is gated in one table: its live set (relative
// gate) and its window set (absolute gate).
type Gate struct{ Live, Window *nftables.Set }

// LiveSet returns a live set of keys of type key in t.
func LiveSet(t *nftables.Table, name string, key nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: key, HasTimeout: true, Timeout: LiveDefaultTimeout}
}

// WindowSet returns a window set of keys of type key in t: intervals of
// key . wall-clock time (a pipapo set: concatenated ranges).
func WindowSet(t *nftables.Table, name string, key nftables.SetDatatype) *nftables.Set {
	typ, err := nftables.ConcatSetType(key, nftables.TypeTime)
	if err != nil {
		panic(err) // two types: within the library's limit of seven
	}
	return &nftables.Set{Table: t, Name: name, KeyType: typ, Concatenation: true, Interval: true, HasTimeout: true}
}

// Rules returns the expressions of the two rules that drop a packet whose
// key, which load puts in register 1 (keyLen bytes), is in managed and
// either not live (relative) or outside its window (absolute). Put whatever
// matches the packet before them.
func Rules(load expr.Any, keyLen uint32, managed, live, window *nftables.Set) (relative, absolute []expr.Any) {
	inManaged := &expr.Lookup{SourceRegister: 1, SetName: managed.Name, SetID: managed.ID}
	relative = []expr.Any{
		load, inManaged,
		&expr.Lookup{SourceRegister: 1, SetName: live.Name, SetID: live.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	// The time goes in the 32-bit register right after the key, as a
	// concatenation wants it, in network byte order like the set's keys.
	// A key shorter than a whole register (a port) is padded with the
	// zeros the kernel's payload load leaves there.
	timeReg := uint32(unix.NFT_REG32_00) + (keyLen+3)/4
	absolute = []expr.Any{
		load, inManaged,
		&expr.Meta{Key: nftMetaTimeNS, Register: timeReg},
		&expr.Byteorder{SourceRegister: timeReg, DestRegister: timeReg, Op: expr.ByteorderHton, Len: 8, Size: 8},
		&expr.Lookup{SourceRegister: 1, SetName: window.Name, SetID: window.ID, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	return relative, absolute
}

// Switch opens and closes keys in their gates. It is safe for concurrent
// use.
type Switch struct {
	netns int
	gates func(key []byte) []Gate

	mu sync.Mutex
	// margin is CommitMargin, or twice the slowest commit seen when that
	// is longer, so that a slow kernel shortens windows instead of making
	// OpenUntil retry until the window is gone.
	margin time.Duration
	// closed lists the keys this Switch has closed and not opened since:
	// they have no live element, so opening one takes a plain add,
	// without the delete that waits for an RCU grace period (~16 ms).
	closed map[string]bool
	// windows holds, per key, the last window opened in every window set,
	// or the zero window for none. A key missing from the map has unknown
	// windows, read from the kernel before the next open.
	windows map[string]window

	beforeCommit, afterCommit func()
}

// NewSwitch returns a Switch for the ruleset of the network namespace netns
// (a file descriptor; zero: the calling thread's, at each call). gates
// returns the gates of a key, as new Set values each time (set IDs are
// assigned per batch).
func NewSwitch(netns int, gates func(key []byte) []Gate) *Switch {
	return &Switch{netns: netns, gates: gates, closed: map[string]bool{}, windows: map[string]window{}}
}

// SetCommitHooks makes OpenUntil call before between its clock reading and
// its batch, and after once the kernel has acknowledged it: for tests that
// stand for a process frozen in between. Nil removes them.
func (s *Switch) SetCommitHooks(before, after func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeCommit, s.afterCommit = before, after
}

// Forget drops what the Switch knows of the keys' windows, after the sets
// were replaced: they are read from the kernel before the next open.
func (s *Switch) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.windows)
}

// OpenUntil opens key until deadline (a time from time.Now, so that it
// carries the monotonic clock), replacing whatever time it had left, longer
// or shorter. The kernel closes it by itself; nothing more is needed from
// the process.
//
// The relative gate gets deadline minus now minus a commit margin
// (CommitMargin, or twice the slowest commit seen, at most 100ms), rounded
// down to TimeoutGranularity. If the commit took longer than the margin
// (the process was descheduled or suspended before it), the element may
// outlive the deadline, and OpenUntil sets it again at once from a fresh
// reading, with the larger margin, up to four times. When less than one
// unit is left, or commits stay slower than the margin, it closes key and
// returns ErrExpired. The absolute gate ends at the deadline in wall-clock
// time, so that even while a late commit's element is live the key is
// closed after the deadline.
func (s *Switch) OpenUntil(key []byte, deadline time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	stale, err := s.staleWindows(key)
	if err != nil {
		return err
	}
	s.margin = max(s.margin, CommitMargin)
	for attempt := 0; ; attempt++ {
		start := time.Now()
		ttl := (deadline.Sub(start) - s.margin).Truncate(TimeoutGranularity)
		if attempt == 4 {
			ttl = 0 // commits keep taking longer than the margin: give up
		}
		if ttl < TimeoutGranularity {
			if err := s.closeLocked(key); err != nil {
				return fmt.Errorf("%w; close: %w", ErrExpired, err)
			}
			return ErrExpired
		}
		// The wall-clock reading that goes with the monotonic one.
		w := window{from: start.UnixNano(), to: start.UnixNano() + int64(deadline.Sub(start))}
		fresh := s.closed[string(key)]
		delete(s.windows, string(key)) // unknown until the batch is known to have worked
		err := s.flush(func(cc *nftables.Conn) error {
			if s.beforeCommit != nil {
				s.beforeCommit()
			}
			gates := s.gates(key)
			if err := openLive(cc, gates, key, ttl, fresh); err != nil {
				return err
			}
			return openWindow(cc, gates, key, w, stale)
		})
		if err != nil {
			return fmt.Errorf("open for %s: %w", ttl, err)
		}
		delete(s.closed, string(key))
		s.windows[string(key)] = w
		stale = s.knownWindows(key)
		if s.afterCommit != nil {
			s.afterCommit()
		}
		took := time.Since(start)
		if took <= s.margin {
			if took < s.margin/4 {
				// Commits are fast again: let the margin come back down.
				s.margin = max(CommitMargin, s.margin/2)
			}
			return nil
		}
		s.margin = min(2*took, maxMargin)
	}
}

// openLive queues the element that makes key live for ttl in each live
// set. A fresh key (closed by this Switch) has no element: a plain add.
func openLive(cc *nftables.Conn, gates []Gate, key []byte, ttl time.Duration, fresh bool) error {
	elem := []nftables.SetElement{{Key: key, Timeout: ttl}}
	for _, g := range gates {
		if err := cc.SetAddElements(g.Live, elem); err != nil {
			return err
		}
		if fresh {
			continue
		}
		// add, delete, add: the second add creates a fresh element with
		// the new timeout whether or not one existed, and the batch swaps
		// them atomically. A plain add updates the timeout on Linux 6.10+
		// in 0.2 ms instead of 16 ms (the delete waits for an RCU grace
		// period), but lookups miss the element around the update:
		// measured on 6.18, 14% of packets to a VIP refreshed every 125 ms
		// were dropped.
		if err := cc.SetDeleteElements(g.Live, []nftables.SetElement{{Key: key}}); err != nil {
			return err
		}
		if err := cc.SetAddElements(g.Live, elem); err != nil {
			return err
		}
	}
	return nil
}

// Close closes key now. Closing a key that is not open is not an error.
func (s *Switch) Close(key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeLocked(key)
}

func (s *Switch) closeLocked(key []byte) error {
	delete(s.closed, string(key)) // until the close is known to have worked
	err := s.flush(func(cc *nftables.Conn) error {
		for _, g := range s.gates(key) {
			// add, then delete: the delete never fails on a missing element.
			if err := cc.SetAddElements(g.Live, []nftables.SetElement{{Key: key, Timeout: TimeoutGranularity}}); err != nil {
				return err
			}
			if err := cc.SetDeleteElements(g.Live, []nftables.SetElement{{Key: key}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.closed[string(key)] = true
	}
	return err
}

// Live reports whether key is open: an unexpired element in every live set
// that gates it, and a window that has not ended in every window set.
func (s *Switch) Live(key []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc, err := nftables.New(nftables.WithNetNSFd(s.netns))
	if err != nil {
		return false, err
	}
	now := time.Now().UnixNano()
	for _, g := range s.gates(key) {
		elems, err := cc.GetSetElements(g.Live)
		if err != nil {
			return false, fmt.Errorf("set %s: %w", g.Live.Name, err)
		}
		if !slices.ContainsFunc(elems, func(e nftables.SetElement) bool {
			return slices.Equal(e.Key, key) && (e.Timeout == 0 || e.Expires > 0)
		}) {
			return false, nil
		}
		ws, err := keyWindows(cc, g.Window, key)
		if err != nil {
			return false, err
		}
		if !slices.ContainsFunc(ws, func(w window) bool { return w.from <= now && now <= w.to }) {
			return false, nil
		}
	}
	return true, nil
}

func (s *Switch) flush(build func(cc *nftables.Conn) error) error { return Flush(s.netns, build) }

// Flush runs build on a fresh connection to the ruleset of netns (a file
// descriptor; zero: the calling thread's) and sends what it queued as one
// batch: the kernel applies all of it or none of it. A fresh connection per
// batch leaves no unread replies behind after an error.
func Flush(netns int, build func(cc *nftables.Conn) error) error {
	cc, err := nftables.New(nftables.WithNetNSFd(netns))
	if err != nil {
		return err
	}
	if err := build(cc); err != nil {
		return err
	}
	return cc.Flush()
}

// window is an absolute window: wall-clock Unix nanoseconds, both ends
// included. The zero window is no window.
//
// A window starts when OpenUntil reads the clock, not at the epoch, so
// that a key's successive windows need not overlap: a set of intervals
// refuses overlapping elements, and deleting one costs the batch an RCU
// grace period (~16 ms), which a takeover should not wait for. A window that
// has ended is left in place and collected by its element's timeout; only
// one that has not ended is replaced, in the same batch. The price is that a
// wall clock stepped back before a window's start closes the key until the
// next open.
type window struct{ from, to int64 }

// windowLinger is how long a window's element outlives its end before the
// kernel collects it. Any positive time does: the window's end, not the
// element's timeout, is what closes the key.
const windowLinger = time.Second

// element is w as an element of key's window sets: key . from to
// key . to (the time in network byte order after the key, which is padded
// with zeros to whole 32-bit registers).
func (w window) element(key []byte) nftables.SetElement {
	return nftables.SetElement{
		Key:     binary.BigEndian.AppendUint64(padded(key), uint64(w.from)),
		KeyEnd:  binary.BigEndian.AppendUint64(padded(key), uint64(w.to)),
		Timeout: (time.Duration(w.to-w.from) + windowLinger).Truncate(TimeoutGranularity),
	}
}

// padded returns a copy of key padded with zeros to a multiple of 4 bytes,
// as a concatenation lays it out.
func padded(key []byte) []byte {
	return append(slices.Clone(key), make([]byte, (4-len(key)%4)%4)...)
}

// openWindow queues, in each of key's window sets, the window w and the
// removal of every stale window that has not ended by w's start. A stale
// window is added before it is deleted, so that the delete cannot fail if
// the kernel collected it meanwhile; the batch swaps old and new
// atomically, and lookups see one or the other.
func openWindow(cc *nftables.Conn, gates []Gate, key []byte, w window, stale [][]window) error {
	for i, g := range gates {
		for _, old := range stale[i] {
			if old.to < w.from {
				continue // ended: no overlap, left to its timeout
			}
			e := []nftables.SetElement{old.element(key)}
			if err := cc.SetAddElements(g.Window, e); err != nil {
				return err
			}
			if err := cc.SetDeleteElements(g.Window, e); err != nil {
				return err
			}
		}
		if err := cc.SetAddElements(g.Window, []nftables.SetElement{w.element(key)}); err != nil {
			return err
		}
	}
	return nil
}

// knownWindows returns, per gate of key, the window this Switch last opened
// for it.
func (s *Switch) knownWindows(key []byte) [][]window {
	stale := make([][]window, len(s.gates(key)))
	if w := s.windows[string(key)]; w != (window{}) {
		for i := range stale {
			stale[i] = []window{w}
		}
	}
	return stale
}

// staleWindows returns, per gate of key, the windows an open may have to
// replace: the one this Switch last opened, or when it does not know (after
// Forget, after an error), every window the kernel holds for key.
func (s *Switch) staleWindows(key []byte) ([][]window, error) {
	if _, ok := s.windows[string(key)]; ok {
		return s.knownWindows(key), nil
	}
	cc, err := nftables.New(nftables.WithNetNSFd(s.netns))
	if err != nil {
		return nil, err
	}
	var stale [][]window
	for _, g := range s.gates(key) {
		ws, err := keyWindows(cc, g.Window, key)
		if err != nil {
			return nil, err
		}
		stale = append(stale, ws)
	}
	return stale, nil
}

// keyWindows lists key's windows in the window set ws.
func keyWindows(cc *nftables.Conn, ws *nftables.Set, key []byte) ([]window, error) {
	elems, err := cc.GetSetElements(ws)
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", ws.Name, err)
	}
	pk := padded(key)
	n := len(pk)
	var out []window
	for _, e := range elems {
		if len(e.Key) != n+8 || len(e.KeyEnd) != n+8 || string(e.Key[:n]) != string(pk) {
			continue
		}
		out = append(out, window{
			from: int64(binary.BigEndian.Uint64(e.Key[n:])),
			to:   int64(binary.BigEndian.Uint64(e.KeyEnd[n:])),
		})
	}
	return out, nil
}

// Windows returns the ends of key's windows that have not ended, per gate
// (for tests and diagnostics).
func (s *Switch) Windows(key []byte) ([][]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc, err := nftables.New(nftables.WithNetNSFd(s.netns))
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	var out [][]time.Time
	for _, g := range s.gates(key) {
		ws, err := keyWindows(cc, g.Window, key)
		if err != nil {
			return nil, err
		}
		var ends []time.Time
		for _, w := range ws {
			if w.to >= now {
				ends = append(ends, time.Unix(0, w.to))
			}
		}
		out = append(out, ends)
	}
	return out, nil
}
