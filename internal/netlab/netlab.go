// Package netlab builds small networks of Linux network namespaces, injects
// faults into them and watches their ARP traffic: the hosts of the demo's
// acts, of the benchmarks and of the multi-host tests. Tests use it through
// internal/testnet, which adds what only tests need.
//
// A Net is made of:
//
//   - a switch namespace holding one Linux bridge per segment; the switch end
//     of every host's veth cable is a port of its segment's bridge;
//   - one namespace per host, with loopback up and its cable's other end as
//     eth0;
//   - with a second or third segment, a host named "router" with eth0 on
//     segment 1 (198.18.1.1), eth1 on segment 2 (198.18.2.1) and eth2 on
//     segment 3 (198.18.3.1), those of them that exist, forwarding between
//     them; every other host routes 198.18.0.0/15 through it;
//   - with a WAN delay, a relay in the router that holds every packet
//     forwarded from one segment to another for that long (see wan.go).
//
// The i-th host (from 1) of segment s has address 198.18.s.(10+i)/24 and MAC
// 02:68:76:00:s:(10+i). Nothing is linked to the machine's own namespace and
// only 198.18.0.0/15 is used, so no traffic leaves the Net.
//
// Faults are made in the switch: CutLink sets a host's switch port down, like
// pulling its cable; CutSegment sets down every port of a segment (a region
// lost) and CutWAN the router's port on a segment (a region cut off, its
// own network working); Partition and Loss are nftables rules in the switch
// namespace (table bridge netlab). The hosts' namespaces hold no testnet
// rules, so the code under test may install its own.
//
// Namespaces are named hv<pid>-<n>-<host> after the process that made them;
// Sweep, which New calls, deletes those whose process is gone. Everything
// needs root, iproute2 and nftables.
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options describes the hosts of a Net.
type Options struct {
	// Hosts names the hosts on segment 1, 198.18.1.0/24, in address order:
	// the i-th, from 1, gets 198.18.1.(10+i). A name is 1 to 12 characters
	// of a-z, 0-9 and '-', starting with a letter; "router" and "switch"
	// are reserved.
	Hosts []string
	// Segment2 names the hosts on a second segment, 198.18.2.0/24, numbered
	// the same way. When it or Segment3 is not empty, New adds the host
	// "router" that joins the segments.
	Segment2 []string
	// Segment3 names the hosts on a third segment, 198.18.3.0/24, numbered
	// the same way: a third place, such as a witness's.
	Segment3 []string
	// MTU is the MTU of every link; 0 means 1500.
	MTU int
	// WANDelay is how long the router holds every packet it forwards from
	// one segment to another, in each direction: a round trip between
	// segments takes at least twice as long. Packets between hosts of one
	// segment, and to or from the router itself, are not delayed. 0 is
	// plain kernel forwarding. It needs a second or third segment.
	// Net.SetWANDelay changes it.
	WANDelay time.Duration
	// WANJitter spreads the delay: each forwarded packet is held for a
	// time drawn uniformly from WANDelay-WANJitter to WANDelay+WANJitter,
	// but never leaves before the packet ahead of it, so packets stay in
	// order. It is at most WANDelay.
	WANJitter time.Duration
}

// RouterName is the name of the host that joins the segments.
const RouterName = "router"

const (
	switchName = "switch"
	netnsDir   = "/var/run/netns" // where ip netns keeps its names
	maxPerSeg  = 240              // 198.18.s.11 .. 198.18.s.250
)

var hostName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,11}$`)

func (o Options) validate() error {
	if len(o.Hosts) == 0 {
		return errors.New("netlab: options: no hosts")
	}
	if o.MTU != 0 && (o.MTU < 68 || o.MTU > 65535) {
		return fmt.Errorf("netlab: options: mtu %d is not between 68 and 65535", o.MTU)
	}
	switch {
	case o.WANDelay < 0:
		return fmt.Errorf("netlab: options: wan delay %v is negative", o.WANDelay)
	case o.WANJitter < 0 || o.WANJitter > o.WANDelay:
		return fmt.Errorf("netlab: options: wan jitter %v is not between 0 and the wan delay %v", o.WANJitter, o.WANDelay)
	case o.WANDelay > 0 && len(o.Segment2) == 0 && len(o.Segment3) == 0:
		return errors.New("netlab: options: a wan delay needs a second or third segment: there is no router to delay")
	}
	seen := map[string]bool{}
	for s, names := range o.segments() {
		if len(names) > maxPerSeg {
			return fmt.Errorf("netlab: options: segment %d has %d hosts, at most %d fit", s+1, len(names), maxPerSeg)
		}
		for _, name := range names {
			switch {
			case !hostName.MatchString(name):
				return fmt.Errorf("netlab: options: host name %q is not 1 to 12 characters of a-z, 0-9 and '-' starting with a letter", name)
			case name == RouterName || name == switchName:
				return fmt.Errorf("netlab: options: host name %q is reserved", name)
			case seen[name]:
				return fmt.Errorf("netlab: options: host name %q appears twice", name)
			}
			seen[name] = true
		}
	}
	return nil
}

// segments returns the host names of segment 1, 2 and 3.
func (o Options) segments() [][]string {
	return [][]string{o.Hosts, o.Segment2, o.Segment3}
}

// Net is a network of hosts in namespaces. Its methods are safe for
// concurrent use.
type Net struct {
	name   string // hv<pid>-<n>, the prefix of every namespace
	sw     string // the switch namespace
	mtu    int
	hosts  []*Host
	byName map[string]*Host
	segs   []int // the numbers of the segments that have hosts
	router *Host // nil with one segment
	jitter time.Duration

	mu         sync.Mutex
	namespaces []string // created or being created, in order
	procs      []*Proc
	watches    []func()
	faults     map[[2]*Host]int // loss percent between two hosts; 100 is a partition
	cut        map[*Host]bool   // by CutLink
	cutSeg     map[int]bool     // by CutSegment
	cutWAN     map[int]bool     // by CutWAN
	wan        *relay           // made by the first SetWANDelay above 0
	closed     bool
}

var netSeq atomic.Int64

// New builds the network that opts describes. It first calls Sweep. When it
// fails it removes what it had made. ctx bounds the building only.
func New(ctx context.Context, opts Options) (_ *Net, err error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := Sweep(); err != nil {
		return nil, err
	}
	n := &Net{
		name:   fmt.Sprintf("hv%d-%d", os.Getpid(), netSeq.Add(1)),
		mtu:    opts.MTU,
		byName: map[string]*Host{},
		faults: map[[2]*Host]int{},
		cut:    map[*Host]bool{},
		cutSeg: map[int]bool{},
		cutWAN: map[int]bool{},
	}
	if n.mtu == 0 {
		n.mtu = 1500
	}
	n.sw = n.name + "-" + switchName
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()

	for s, names := range opts.segments() {
		if len(names) > 0 {
			n.segs = append(n.segs, s+1)
		}
	}
	if err := n.buildSwitch(ctx); err != nil {
		return nil, err
	}
	for s, names := range opts.segments() {
		seg := s + 1
		for i, name := range names {
			h := n.newHost(name, seg, byte(10+i+1))
			if err := n.addNamespace(ctx, h.Namespace); err != nil {
				return nil, fmt.Errorf("netlab: host %s: %w", name, err)
			}
			if err := n.cable(ctx, h, seg, h.Iface, h.Addr, h.MAC); err != nil {
				return nil, fmt.Errorf("netlab: host %s: %w", name, err)
			}
		}
	}
	if len(n.segs) > 1 {
		if err := n.buildRouter(ctx); err != nil {
			return nil, fmt.Errorf("netlab: host %s: %w", RouterName, err)
		}
		n.jitter = opts.WANJitter
		if opts.WANDelay > 0 {
			if err := n.SetWANDelay(opts.WANDelay); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// Procs returns every process started with Host.Start, in the order they
// were started, running or not.
func (n *Net) Procs() []*Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Proc(nil), n.procs...)
}

func (n *Net) newHost(name string, seg int, last byte) *Host {
	addr := netip.AddrFrom4([4]byte{198, 18, byte(seg), last})
	h := &Host{
		Name:      name,
		Namespace: n.name + "-" + name,
		Segment:   seg,
		Addr:      addr,
		Prefix:    netip.PrefixFrom(addr, 24),
		MAC:       mac(seg, last),
		Iface:     "eth0",
		owner:     n,
	}
	n.hosts = append(n.hosts, h)
	n.byName[name] = h
	return h
}

func mac(seg int, last byte) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x68, 0x76, 0x00, byte(seg), last}
}

func bridgeName(seg int) string { return "br" + strconv.Itoa(seg) }

// buildSwitch makes the switch namespace: a silent bridge per segment and an
// empty nftables table for the faults.
func (n *Net) buildSwitch(ctx context.Context) error {
	if err := n.addNamespace(ctx, n.sw); err != nil {
		return fmt.Errorf("netlab: switch: %w", err)
	}
	// The switch has no addresses: keep its ports and bridges from sending
	// IPv6 router solicitations and neighbour discovery into the segments.
	err := doIn(n.sw, func() error {
		for _, conf := range []string{"all", "default"} {
			err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("netlab: switch: disable ipv6: %w", err)
	}
	for _, seg := range n.segs {
		br := bridgeName(seg)
		if err := ip(ctx, "-n", n.sw, "link", "add", br, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"); err != nil {
			return fmt.Errorf("netlab: switch: %w", err)
		}
		if err := ip(ctx, "-n", n.sw, "link", "set", br, "up"); err != nil {
			return fmt.Errorf("netlab: switch: %w", err)
		}
	}
	table := "table bridge netlab {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n"
	if err := n.nft(ctx, table); err != nil {
		return fmt.Errorf("netlab: switch: %w", err)
	}
	return nil
}

// addNamespace creates a namespace with loopback up. It records the name
// first so that Close removes whatever part of it exists.
func (n *Net) addNamespace(ctx context.Context, ns string) error {
	n.mu.Lock()
	n.namespaces = append(n.namespaces, ns)
	n.mu.Unlock()
	// The first ip netns add on a machine makes /var/run/netns a mount
	// point; two at once could both do it.
	addMu.Lock()
	err := ip(ctx, "netns", "add", ns)
	addMu.Unlock()
	if err != nil {
		return err
	}
	return ip(ctx, "-n", ns, "link", "set", "lo", "up")
}

var addMu sync.Mutex

// cable joins h to the bridge of segment seg with a veth pair whose host end
// is iface, with the given addresses.
func (n *Net) cable(ctx context.Context, h *Host, seg int, iface string, addr netip.Addr, hw net.HardwareAddr) error {
	p := port{segment: seg, name: "sw-" + h.Name}
	if len(h.ports) > 0 {
		p.name += "." + strconv.Itoa(seg)
	}
	h.ports = append(h.ports, p)
	mtu := strconv.Itoa(n.mtu)
	steps := [][]string{
		{"-n", n.sw, "link", "add", p.name, "type", "veth", "peer", "name", iface, "netns", h.Namespace},
		{"-n", n.sw, "link", "set", p.name, "mtu", mtu, "master", bridgeName(seg), "up"},
		{"-n", h.Namespace, "link", "set", iface, "address", hw.String(), "mtu", mtu, "up"},
		{"-n", h.Namespace, "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", iface},
	}
	for _, args := range steps {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// buildRouter adds the router on every segment, eth(s-1) on segment s, and
// routes 198.18.0.0/15 through it from every other host.
func (n *Net) buildRouter(ctx context.Context) error {
	r := n.newHost(RouterName, 1, 1)
	n.router = r
	if err := n.addNamespace(ctx, r.Namespace); err != nil {
		return err
	}
	for _, seg := range n.segs {
		addr := netip.AddrFrom4([4]byte{198, 18, byte(seg), 1})
		if err := n.cable(ctx, r, seg, routerIface(seg), addr, mac(seg, 1)); err != nil {
			return err
		}
	}
	err := r.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	})
	if err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	for _, h := range n.hosts {
		if h == r {
			continue
		}
		via := netip.AddrFrom4([4]byte{198, 18, byte(h.Segment), 1})
		if err := ip(ctx, "-n", h.Namespace, "route", "add", "198.18.0.0/15", "via", via.String(), "dev", h.Iface); err != nil {
			return fmt.Errorf("route of %s: %w", h.Name, err)
		}
	}
	return nil
}

// routerIface is the name of the router's interface on segment seg.
func routerIface(seg int) string { return "eth" + strconv.Itoa(seg-1) }

// Name returns the prefix of the Net's namespaces, like hv4242-1: every
// namespace of the Net is named Name()+"-"+something.
func (n *Net) Name() string { return n.name }

// Host returns the host with the given name. It panics when there is none,
// since the names are fixed by Options.
func (n *Net) Host(name string) *Host {
	h, ok := n.byName[name]
	if !ok {
		panic(fmt.Sprintf("netlab: no host %q in %s", name, n.name))
	}
	return h
}

// Hosts returns every host: segment 1, then segment 2, then segment 3, then
// the router.
func (n *Net) Hosts() []*Host { return append([]*Host(nil), n.hosts...) }

// Close stops every ARP watch and the WAN relay, kills every process started with Host.Start
// (SIGCONT, then SIGKILL to its process group) and waits for it, kills any
// other process left in the Net's namespaces, and deletes the namespaces,
// which removes their links. It goes on after a failure and returns every
// error. Close is idempotent: later calls return nil.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	procs, watches, namespaces, wan := n.procs, n.watches, n.namespaces, n.wan
	n.mu.Unlock()

	for _, stop := range watches {
		stop()
	}
	var errs []error
	if wan != nil {
		wan.stop()
	}
	for _, p := range procs {
		if err := p.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(namespaces) - 1; i >= 0; i-- {
		if err := removeNamespace(namespaces[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab: close %s: %w", n.name, err)
	}
	return nil
}

var sweepName = regexp.MustCompile(`^hv([0-9]+)-[0-9]+-`)

// Sweep deletes the namespaces left by Nets of processes that are gone (a
// test binary that crashed or timed out before its cleanup ran), after
// killing any process still inside them. It never touches the namespaces
// of a running process.
func Sweep() error {
	out, err := output(context.Background(), "", "ip", "netns", "list")
	if err != nil {
		return fmt.Errorf("netlab: sweep: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		m := sweepName.FindStringSubmatch(fields[0])
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		if err := removeNamespace(fields[0]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab: sweep: %w", err)
	}
	return nil
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeNamespace kills the processes in ns and deletes it. A namespace that
// does not exist is not an error.
func removeNamespace(ns string) error {
	ctx := context.Background()
	out, err := output(ctx, "", "ip", "netns", "pids", ns)
	if err != nil {
		if namespaceGone(ns) {
			return nil
		}
		return err
	}
	for _, pid := range parsePIDs(out) {
		_ = syscall.Kill(pid, syscall.SIGKILL) // it may have exited already
	}
	if err := ip(ctx, "netns", "del", ns); err != nil && !namespaceGone(ns) {
		return err
	}
	return nil
}

func namespaceGone(ns string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns))
	return errors.Is(err, fs.ErrNotExist)
}

// ip runs the ip command.
func ip(ctx context.Context, args ...string) error {
	_, err := output(ctx, "", "ip", args...)
	return err
}

// nft runs an nft script in the switch namespace, as one transaction.
func (n *Net) nft(ctx context.Context, script string) error {
	_, err := output(ctx, script, "ip", "netns", "exec", n.sw, "nft", "-f", "-")
	if err != nil {
		return fmt.Errorf("%w\nscript:\n%s", err, script)
	}
	return nil
}

// output runs a command with stdin and returns its standard output; an error
// includes the command line and its standard error.
func output(ctx context.Context, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		line := strings.Join(append([]string{name}, args...), " ")
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("%s: %w: %s", line, err, msg)
		}
		return "", fmt.Errorf("%s: %w", line, err)
	}
	return stdout.String(), nil
}
