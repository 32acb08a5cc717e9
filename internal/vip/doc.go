// Package vip holds a floating address (VIP) on Linux: it adds and removes the
// address through netlink, announces it to the segment with a gratuitous ARP
// or an unsolicited neighbour advertisement, and fences it in the kernel.
//
// The fence is a dead-man's switch. A node that holds a VIP must stop
// answering for it before its lease deadline unless a renewal succeeds, even
// when the agent is frozen (SIGSTOP) or killed and leaves the address on its
// interface. Removing the address is a userspace action and cannot be
// guaranteed; so haven installs its own nftables tables (families arp, inet
// and netdev, all named haven_vip) that drop, for every managed address that
// is not "live", outgoing ARP that claims the address (the kernel's, and the
// gratuitous ARP haven itself writes to a packet socket), outgoing IPv6
// neighbour advertisements for it, packets addressed to it and packets sent
// from it.
// An address is live while it is an element of a kernel set with a timeout.
// The holder refreshes that element, with the time left on its lease, only
// after each successful renewal; when the process stops refreshing, the
// kernel expires the element by itself and the address goes silent.
//
// The caller (the manager) orders its steps so that the fence is never the
// only thing missing: Install and Guard(iface) at start, Open before
// AddAddress and Announce when taking a VIP, Close before RemoveAddress when
// giving it up, Remove only after the addresses are gone.
package vip
