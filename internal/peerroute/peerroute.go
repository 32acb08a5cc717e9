// Package peerroute shortens TCP's retransmission timer on the paths to the
// coordination peers.
//
// etcd's members and their clients talk over TCP, and a lost packet holds up
// everything behind it on its connection until TCP retransmits it. Linux
// waits at least its minimum retransmission timeout for that: 200 ms, and
// 400 ms more when the retransmission is lost too. On a LAN, where a round
// trip takes a fraction of a millisecond, that floor is what decides how
// long etcd's writes stall on a lossy link, and a stall of both of the
// leader's follower connections at once holds every commit up past a
// floating address's lease: with 5% loss between three nodes this happened
// about once in every two and a half minutes.
//
// The kernel lets a route carry its own floor (the rto_min metric, locked so
// that it overrides the default). Routes installs, for each peer that is on
// a directly connected network, a host route (/32 or /128) through the same
// interface and source address that the kernel uses for it now, with rto_min
// set, tagged with its own routing protocol number (Protocol, shown as
// "proto 226" by ip route) so that it can be told apart and removed: on
// stop, and at start after a crash. The floor applies to every TCP
// connection to the peer in both directions once each side has its route,
// etcd's included: the connections it accepts cannot be given a socket
// option from outside, a route reaches them.
//
// Peers behind a gateway are left alone: a pinned host route would not
// follow a change of gateway. Their round trips are longer anyway, so that
// TCP's own estimate, not the floor, sets their timer. Every recheck period
// Routes puts back a route that was removed from outside and removes one
// whose interface no longer reaches the peer directly.
//
// It needs CAP_NET_ADMIN. The functions work in the network namespace of
// the calling thread unless Config.Handle says otherwise.
package peerroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol is the routing protocol number that marks haven's peer routes
// (unassigned in iproute2's rt_protos).
const Protocol = 226

// DefaultRecheck is how often installed routes are checked.
const DefaultRecheck = 10 * time.Second

// Config configures Routes.
type Config struct {
	// Peers are the addresses to shorten the timer to.
	Peers []netip.Addr
	// RTOMin is the floor for TCP's retransmission timer on those paths,
	// in whole milliseconds.
	RTOMin time.Duration
	// Recheck is the period of the checks (default DefaultRecheck).
	Recheck time.Duration
	// Handle is the netlink handle to work through; nil: the calling
	// thread's namespace.
	Handle *netlink.Handle
	Logger *slog.Logger
}

// Routes keeps the peer routes while it runs.
type Routes struct {
	cfg Config
	nl  *netlink.Handle
	log *slog.Logger
	// skipped are the peers already reported as not directly connected,
	// so that a recheck does not report them again.
	skipped map[netip.Addr]string
}

// New checks cfg; it touches nothing.
func New(cfg Config) (*Routes, error) {
	if cfg.RTOMin < time.Millisecond || cfg.RTOMin%time.Millisecond != 0 {
		return nil, fmt.Errorf("peerroute: rto_min %v is not a whole number of milliseconds", cfg.RTOMin)
	}
	for _, p := range cfg.Peers {
		if !p.IsValid() {
			return nil, errors.New("peerroute: an invalid peer address")
		}
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	nl := cfg.Handle
	if nl == nil {
		nl = &netlink.Handle{} // the zero Handle works in the caller's namespace
	}
	return &Routes{cfg: cfg, nl: nl, log: cfg.Logger.With("component", "peerroute"), skipped: map[netip.Addr]string{}}, nil
}

// Run removes routes a crashed agent left, installs the peer routes and
// keeps them until ctx ends; then it removes them. A missing privilege is
// returned at once, after the cleanup: the caller decides whether that is
// fatal (haven logs it and goes on with the kernel's default).
func (r *Routes) Run(ctx context.Context) error {
	if err := r.removeAll(); err != nil {
		return err
	}
	defer func() {
		if err := r.removeAll(); err != nil {
			r.log.Warn("remove the peer routes", "err", err)
		}
	}()
	if err := r.sync(); err != nil {
		return err
	}
	t := time.NewTicker(r.cfg.Recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.sync(); err != nil {
			r.log.Warn("peer routes", "err", err)
		}
	}
}

// sync brings the installed routes in line with how each peer is reached
// now.
func (r *Routes) sync() error {
	ours, err := r.installed()
	if err != nil {
		return err
	}
	var errs []error
	for _, peer := range r.cfg.Peers {
		if err := r.syncPeer(peer, ours[peer]); err != nil {
			if errors.Is(err, unix.EPERM) {
				return fmt.Errorf("peerroute: set rto_min on the route to %s: %w (needs CAP_NET_ADMIN)", peer, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Routes) syncPeer(peer netip.Addr, ours *netlink.Route) error {
	if ours != nil {
		if r.onLink(ours.LinkIndex, peer) {
			return nil // in place and still right
		}
		r.log.Info("the peer is no longer on this route's network; removing the route", "peer", peer, "link", ours.LinkIndex)
		if err := r.nl.RouteDel(ours); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("peerroute: remove the route to %s: %w", peer, err)
		}
	}
	got, err := r.nl.RouteGet(net.IP(peer.AsSlice()))
	if err != nil || len(got) == 0 {
		return fmt.Errorf("peerroute: look up the route to %s: %w", peer, err)
	}
	via := got[0]
	if why := r.direct(via, peer); why != "" {
		if r.skipped[peer] != why {
			r.skipped[peer] = why
			r.log.Info("leaving the route to a peer alone", "peer", peer, "why", why)
		}
		return nil
	}
	delete(r.skipped, peer)
	route := &netlink.Route{
		Dst:        netipPrefix(peer),
		LinkIndex:  via.LinkIndex,
		Scope:      netlink.SCOPE_LINK,
		Src:        via.Src,
		Protocol:   Protocol,
		Table:      unix.RT_TABLE_MAIN,
		RtoMin:     int(r.cfg.RTOMin / time.Millisecond),
		RtoMinLock: true,
	}
	if err := r.nl.RouteReplace(route); err != nil {
		return fmt.Errorf("peerroute: add the route to %s: %w", peer, err)
	}
	r.log.Info("shortened TCP's retransmission floor to a peer", "peer", peer, "rto_min", r.cfg.RTOMin, "link", via.LinkIndex)
	return nil
}

// direct says why the kernel's route to peer is not one to copy ("" when it
// is): it goes through a gateway, or it is local.
func (r *Routes) direct(via netlink.Route, peer netip.Addr) string {
	switch {
	case via.Gw != nil && !via.Gw.IsUnspecified():
		return fmt.Sprintf("reached through gateway %s", via.Gw)
	case via.Type == unix.RTN_LOCAL || via.LinkIndex == 0:
		return "an address of this host"
	case !r.onLink(via.LinkIndex, peer):
		return "not on a network of its interface"
	}
	return ""
}

// onLink reports whether one of the link's addresses has a prefix that
// contains peer.
func (r *Routes) onLink(index int, peer netip.Addr) bool {
	link, err := r.nl.LinkByIndex(index)
	if err != nil {
		return false
	}
	addrs, err := r.nl.AddrList(link, family(peer))
	if err != nil {
		return false
	}
	return slices.ContainsFunc(addrs, func(a netlink.Addr) bool {
		p, ok := netipFromNet(a.IPNet)
		return ok && p.Contains(peer) && p.Addr() != peer
	})
}

// installed returns haven's peer routes by destination.
func (r *Routes) installed() (map[netip.Addr]*netlink.Route, error) {
	out := map[netip.Addr]*netlink.Route{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := r.nl.RouteListFiltered(fam, &netlink.Route{Protocol: Protocol, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("peerroute: list routes: %w", err)
		}
		for i := range routes {
			if p, ok := netipFromNet(routes[i].Dst); ok && p.IsSingleIP() {
				out[p.Addr()] = &routes[i]
			}
		}
	}
	return out, nil
}

// removeAll removes every route tagged with Protocol.
func (r *Routes) removeAll() error {
	ours, err := r.installed()
	if err != nil {
		return err
	}
	var errs []error
	for peer, route := range ours {
		if err := r.nl.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("peerroute: remove the route to %s: %w", peer, err))
		}
	}
	return errors.Join(errs...)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func netipPrefix(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func netipFromNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}
