package netlab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// CutLink sets down the switch end of h's cable (every one of the router's
// cables), like pulling it out of the switch: h keeps its address and
// routes, its interface loses carrier, and nothing passes until
// RestoreLink. Cutting the router separates the segments.
func (n *Net) CutLink(h *Host) error {
	if err := n.setLink(h, true); err != nil {
		return fmt.Errorf("netlab: cut link of %s: %w", h, err)
	}
	return nil
}

// RestoreLink sets the switch end of h's cable up again, except on a
// segment that CutSegment cut (or, for the router, whose WAN CutWAN cut).
func (n *Net) RestoreLink(h *Host) error {
	if err := n.setLink(h, false); err != nil {
		return fmt.Errorf("netlab: restore link of %s: %w", h, err)
	}
	return nil
}

func (n *Net) setLink(h *Host, cut bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.usable(h); err != nil {
		return err
	}
	setFlag(n.cut, h, cut)
	return n.applyPorts(func(p port) bool { return true }, h)
}

// CutSegment sets down, at once, the switch port of every host on segment
// seg, the router's port on it included: the loss of a region, or of a
// site, whose machines and processes go on running. The segment's hosts
// reach nothing, not even each other, until RestoreSegment; the other
// segments still reach each other through the router.
func (n *Net) CutSegment(seg int) error {
	if err := n.setSegment(seg, true); err != nil {
		return fmt.Errorf("netlab: cut segment %d: %w", seg, err)
	}
	return nil
}

// RestoreSegment sets the ports of segment seg up again, except those of
// hosts that CutLink cut.
func (n *Net) RestoreSegment(seg int) error {
	if err := n.setSegment(seg, false); err != nil {
		return fmt.Errorf("netlab: restore segment %d: %w", seg, err)
	}
	return nil
}

// CutWAN sets down the router's switch port on segment seg alone: the
// segment's hosts still reach each other, and nothing beyond it, until
// RestoreWAN; the other segments still reach each other. It is a region
// cut off from the others and from a witness, whose own network works.
func (n *Net) CutWAN(seg int) error {
	if err := n.setWAN(seg, true); err != nil {
		return fmt.Errorf("netlab: cut wan of segment %d: %w", seg, err)
	}
	return nil
}

// RestoreWAN sets the router's port on segment seg up again, unless the
// router or the segment is cut otherwise.
func (n *Net) RestoreWAN(seg int) error {
	if err := n.setWAN(seg, false); err != nil {
		return fmt.Errorf("netlab: restore wan of segment %d: %w", seg, err)
	}
	return nil
}

func (n *Net) setSegment(seg int, cut bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.segment(seg); err != nil {
		return err
	}
	setFlag(n.cutSeg, seg, cut)
	return n.applyPorts(func(p port) bool { return p.segment == seg }, n.hosts...)
}

func (n *Net) setWAN(seg int, cut bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.segment(seg); err != nil {
		return err
	}
	if n.router == nil {
		return errors.New("the net has one segment: there is no router")
	}
	setFlag(n.cutWAN, seg, cut)
	return n.applyPorts(func(p port) bool { return p.segment == seg }, n.router)
}

// segment says why the Net cannot take a fault on segment seg now.
func (n *Net) segment(seg int) error {
	if err := n.usable(); err != nil {
		return err
	}
	if !slices.Contains(n.segs, seg) {
		return fmt.Errorf("the net has segments %v", n.segs)
	}
	return nil
}

func setFlag[K comparable](m map[K]bool, k K, on bool) {
	if on {
		m[k] = true
	} else {
		delete(m, k)
	}
}

// applyPorts sets each port of hosts that sel selects down if its host or
// its segment is cut, or it is the router's on a segment whose WAN is cut,
// else up. It stops at the first failure.
func (n *Net) applyPorts(sel func(port) bool, hosts ...*Host) error {
	for _, h := range hosts {
		for _, p := range h.ports {
			if !sel(p) {
				continue
			}
			state := "up"
			if n.cut[h] || n.cutSeg[p.segment] || h == n.router && n.cutWAN[p.segment] {
				state = "down"
			}
			if err := ip(context.Background(), "-n", n.sw, "link", "set", p.name, state); err != nil {
				return err
			}
		}
	}
	return nil
}

// Partition drops every frame between a and b, in both directions, while
// both still reach every other host. Between hosts of the same segment the
// switch drops what enters from one's port bound for the other's, ARP and
// IPv6 included; between segments it drops the IPv4 packets from one's port
// addressed to the other's Addr. Partition replaces any Loss between them.
func (n *Net) Partition(a, b *Host) error {
	if err := n.setFault(a, b, 100); err != nil {
		return fmt.Errorf("netlab: partition %s from %s: %w", a, b, err)
	}
	return nil
}

// Heal ends a Partition or Loss between a and b.
func (n *Net) Heal(a, b *Host) error {
	if err := n.setFault(a, b, 0); err != nil {
		return fmt.Errorf("netlab: heal %s and %s: %w", a, b, err)
	}
	return nil
}

// Loss drops, at random, percent of the frames between a and b in each
// direction, matched as by Partition. Loss 0 is Heal and Loss 100 is
// Partition.
func (n *Net) Loss(a, b *Host, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netlab: loss between %s and %s: %d%% is not between 0 and 100", a, b, percent)
	}
	if err := n.setFault(a, b, percent); err != nil {
		return fmt.Errorf("netlab: loss %d%% between %s and %s: %w", percent, a, b, err)
	}
	return nil
}

// HealAll ends every Partition and Loss and restores every cut link,
// segment and WAN.
func (n *Net) HealAll() error {
	n.mu.Lock()
	if err := n.usable(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("netlab: heal all: %w", err)
	}
	var errs []error
	if err := n.nft(context.Background(), ruleset(nil)); err != nil {
		errs = append(errs, err)
	} else {
		clear(n.faults)
	}
	var cut []*Host // the hosts with a port down
	for _, h := range n.hosts {
		if n.cut[h] || h == n.router && len(n.cutWAN) > 0 || slices.ContainsFunc(h.ports, func(p port) bool { return n.cutSeg[p.segment] }) {
			cut = append(cut, h)
		}
	}
	clear(n.cut)
	clear(n.cutSeg)
	clear(n.cutWAN)
	if err := n.applyPorts(func(port) bool { return true }, cut...); err != nil {
		errs = append(errs, fmt.Errorf("restore links: %w", err))
	}
	n.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab: heal all: %w", err)
	}
	return nil
}

// usable says why the Net cannot take faults now, or between hosts.
func (n *Net) usable(hosts ...*Host) error {
	if n.closed {
		return errors.New("net is closed")
	}
	for _, h := range hosts {
		if h == nil || h.owner != n {
			return fmt.Errorf("host %v is not in %s", h, n.name)
		}
	}
	return nil
}

// setFault sets the loss between a and b and rewrites the switch's rules.
func (n *Net) setFault(a, b *Host, percent int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.usable(a, b); err != nil {
		return err
	}
	if a == b {
		return errors.New("a host cannot be cut from itself")
	}
	if a.Name > b.Name {
		a, b = b, a
	}
	key := [2]*Host{a, b}
	faults := make(map[[2]*Host]int, len(n.faults)+1)
	for k, v := range n.faults {
		faults[k] = v
	}
	if percent == 0 {
		delete(faults, key)
	} else {
		faults[key] = percent
	}
	if err := n.nft(context.Background(), ruleset(faults)); err != nil {
		return err
	}
	n.faults = faults
	return nil
}

// ruleset returns the nft script that replaces the switch's forward rules
// with the given faults, as one transaction.
func ruleset(faults map[[2]*Host]int) string {
	keys := make([][2]*Host, 0, len(faults))
	for k := range faults {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y [2]*Host) int {
		return strings.Compare(x[0].Name+"/"+x[1].Name, y[0].Name+"/"+y[1].Name)
	})
	var b strings.Builder
	b.WriteString("flush chain bridge netlab forward\n")
	for _, k := range keys {
		verdict := "drop"
		if p := faults[k]; p < 100 {
			verdict = fmt.Sprintf("numgen random mod 100 < %d drop", p)
		}
		for _, match := range append(matches(k[0], k[1]), matches(k[1], k[0])...) {
			fmt.Fprintf(&b, "add rule bridge netlab forward %s %s\n", match, verdict)
		}
	}
	return b.String()
}

// matches returns nft matches for the traffic from x to y, each frame
// matching at most once on its way, so that a random drop happens once.
// On a shared segment: frames from x's port out of y's port. Otherwise:
// IPv4 packets entering from x's port, addressed to y.
func matches(x, y *Host) []string {
	var out []string
	for _, px := range x.ports {
		for _, py := range y.ports {
			if px.segment == py.segment {
				out = append(out, fmt.Sprintf("iifname %q oifname %q", px.name, py.name))
			}
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, px := range x.ports {
		out = append(out, fmt.Sprintf("iifname %q ip daddr %s", px.name, y.Addr))
	}
	return out
}
