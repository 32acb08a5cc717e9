package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Valid values of a balancer's enumerated keys.
var (
	modes          = []string{"http", "tcp"}
	algorithms     = []string{"roundrobin", "leastconn", "source", "random2"}
	proxyProtocols = []string{"", "v1", "v2"}
)

func (v *validator) balancer(b *Balancer, path string) {
	if !isName(b.Name) {
		v.keyErrorf(path, "%q %s", b.Name, badName)
	}
	v.nodeRefs(path+".nodes", b.Nodes, "the nodes that run this balancer, such as nodes: [lb1, lb2]")
	v.zones(path+".nodes", b.Nodes)
	if b.Listen == "" {
		v.errorf(path+".listen", `required: the address to listen on, such as listen: ":80"`)
	} else if _, _, err := splitListen(b.Listen); err != nil {
		v.errorf(path+".listen", "%q is not a listen address: %v", b.Listen, err)
	}
	modeOK := slices.Contains(modes, b.Mode)
	if !modeOK {
		v.errorf(path+".mode", "%s", notOneOf(b.Mode, modes...))
	}
	if !slices.Contains(algorithms, b.Algorithm) {
		v.errorf(path+".algorithm", "%s", notOneOf(b.Algorithm, algorithms...))
	}
	if b.Check != "" {
		v.checkRef(path+".check", b.Check)
	}
	v.backends(b, path+".backends")
	if modeOK {
		v.modeOptions(b, path)
	}
	v.trafficOptions(b, path)
	if b.VIP != nil {
		v.vip(b.VIP, b.Nodes, path+".vip")
	}
}

func (v *validator) backends(b *Balancer, path string) {
	if len(b.Backends) == 0 {
		v.errorf(path, "required: at least one backend, such as backends: [{address: 198.18.1.31:8080}]")
		return
	}
	byAddr, byName := map[string]int{}, map[string]int{}
	anyWeight := false
	for i, be := range b.Backends {
		bpath := index(path, i)
		j, addrDup := byAddr[be.Address]
		switch {
		case be.Address == "":
			v.errorf(bpath+".address", "required: the backend's HOST:PORT, such as address: 198.18.1.31:8080")
		case checkHostPort(be.Address) != nil:
			v.errorf(bpath+".address", "%q is not HOST:PORT: %v", be.Address, checkHostPort(be.Address))
		case addrDup:
			v.errorf(bpath+".address", "%q is already the address of %s: addresses are unique within a balancer", be.Address, index(path, j))
		default:
			byAddr[be.Address] = i
		}
		// A name defaulted from a repeated address repeats too; that was
		// just reported.
		if j, dup := byName[be.Name]; dup && !addrDup && be.Name != "" {
			v.errorf(bpath+".name", "%q is already the name of %s: names are unique within a balancer", be.Name, index(path, j))
		} else if !dup {
			byName[be.Name] = i
		}
		if w := *be.Weight; w < 0 || w > 256 {
			v.errorf(bpath+".weight", "%d is not between 0 and 256", w)
		} else if w > 0 {
			anyWeight = true
		}
		if be.MaxConn < 0 {
			v.errorf(bpath+".max_conn", "%d is negative: want 0 (no cap of its own) or more", be.MaxConn)
		}
	}
	if !anyWeight {
		v.warnf(path, "every backend has weight 0: the balancer has nowhere to send new traffic")
	}
}

// modeOptions checks the keys that only apply in one mode.
func (v *validator) modeOptions(b *Balancer, path string) {
	if b.TLS != nil {
		if b.Mode != "http" {
			v.errorf(path+".tls", "only applies in mode http (this balancer is mode %s)", b.Mode)
		}
		v.tlsFile(path+".tls.cert", b.TLS.Cert, "the certificate chain, PEM")
		v.tlsFile(path+".tls.key", b.TLS.Key, "the private key, PEM")
	}
	if s := b.Sticky; s != nil {
		if b.Mode != "http" {
			v.errorf(path+".sticky", "only applies in mode http (this balancer is mode %s)", b.Mode)
		}
		if s.Cookie == "" {
			v.errorf(path+".sticky.cookie", "required: the name of the cookie that pins a client, such as cookie: srv")
		} else if !isToken(s.Cookie) {
			v.errorf(path+".sticky.cookie", "%q is not a valid cookie name: use letters, digits and !#$%%&'*+-.^_`|~", s.Cookie)
		}
	}
	switch {
	case !slices.Contains(proxyProtocols, b.ProxyProtocol):
		v.errorf(path+".proxy_protocol", "%s", notOneOf(b.ProxyProtocol, "v1", "v2"))
	case b.ProxyProtocol != "" && b.Mode != "tcp":
		v.errorf(path+".proxy_protocol", "only applies in mode tcp (this balancer is mode %s)", b.Mode)
	}
	v.acceptProxyFrom(b.AcceptProxyFrom, path+".accept_proxy_from")
	if b.ShutdownSessions && b.Mode != "tcp" {
		v.errorf(path+".shutdown_sessions", "only applies in mode tcp (this balancer is mode %s)", b.Mode)
	}
	if l := b.AccessLog; l != nil {
		switch {
		case l.Path == "":
			v.errorf(path+".access_log.path", "required: the file to append to, such as /var/log/haven/%s.log, or - for the agent's standard output", b.Name)
		case l.Path != "-" && !filepath.IsAbs(l.Path):
			v.errorf(path+".access_log.path", "%q is not an absolute path (or - for the agent's standard output)", l.Path)
		}
		if !slices.Contains([]string{"haproxy", "json"}, l.Format) {
			v.errorf(path+".access_log.format", "%s", notOneOf(l.Format, "haproxy", "json"))
		}
	}
}

// acceptProxyFrom checks the trusted sources of PROXY protocol headers.
func (v *validator) acceptProxyFrom(from []string, path string) {
	if from != nil && len(from) == 0 {
		v.errorf(path, "empty: list the addresses or networks of the proxies in front, such as [198.18.0.0/15], or leave the key out to take no PROXY header")
	}
	for i, f := range from {
		if _, err := ParseSource(f); err != nil {
			v.errorf(index(path, i), "%v", err)
		}
	}
}

// ParseSource parses a trusted source: an IP address (a network of one) or
// a network in CIDR notation. A network's host bits must be zero, so that
// 198.18.1.7/16 is not read as either of the two things it might mean.
func ParseSource(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither an IP address nor a network such as 198.18.0.0/15", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network: want ADDRESS/BITS, such as 198.18.0.0/15 or 2001:2::/48", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
	}
	return p, nil
}

func (v *validator) tlsFile(path, file, what string) {
	if file == "" {
		v.errorf(path, "required when tls is set: %s", what)
		return
	}
	v.readable(path, file)
}

// trafficOptions checks timeouts, limits, retries and passive health. The
// zero timeouts were refused when defaults were applied.
func (v *validator) trafficOptions(b *Balancer, path string) {
	if l := b.Limits; l.MaxConn < 0 {
		v.errorf(path+".limits.max_conn", "%d is negative: want 0 (unlimited) or more", l.MaxConn)
	}
	if n := b.Limits.MaxHeaders; n < 0 {
		v.errorf(path+".limits.max_headers", "%d is negative: want 1 or more", n)
	}
	if d := b.Timeouts.RequestBody; d != 0 && d.D() < minRequestBody {
		v.errorf(path+".timeouts.request_body", "%s is too short for a whole request body: want %s or more, or leave the key out for no bound", d, Duration(minRequestBody))
	}
	if q := b.Limits.QueueSize; q < 0 {
		v.errorf(path+".limits.queue_size", "%d is negative: want 1 or more", q)
	}
	if n := *b.Retries.Count; n < 0 {
		v.errorf(path+".retries.count", "%d is negative: want 0 (no retries) or more", n)
	}
	for i, m := range b.Retries.Methods {
		if !isToken(m) {
			v.errorf(index(path+".retries.methods", i), "%q is not an HTTP method", m)
		}
	}
	if n := *b.Passive.ConsecutiveFailures; n < 0 {
		v.errorf(path+".passive.consecutive_failures", "%d is negative: want 0 (off) or more", n)
	}
	if p := *b.Passive.MaxEjectedPercent; p < 0 || p > 100 {
		v.errorf(path+".passive.max_ejected_percent", "%d is not between 0 and 100", p)
	}
}

// minRequestBody is the shortest timeouts.request_body: less would refuse
// nearly every upload.
const minRequestBody = time.Second

// Bounds on a floating address's lease: shorter cannot be renewed reliably
// through etcd; longer makes failover slower than keepalived's defaults.
const (
	minVIPLease = 100 * time.Millisecond
	maxVIPLease = time.Minute
)

func (v *validator) vip(x *VIP, nodes []string, path string) {
	if x.Address == "" {
		v.errorf(path+".address", "required: the floating address with its prefix length, such as 198.18.1.100/24")
	} else if p, err := netip.ParsePrefix(x.Address); err != nil {
		v.errorf(path+".address", "%q is not an address with a prefix length, such as 198.18.1.100/24", x.Address)
	} else {
		for _, n := range nodes {
			if node, ok := v.nodes[n]; ok && node.Address == p.Addr().String() {
				v.errorf(path+".address", "%s is node %s's own address: a floating address must be one no node has", p.Addr(), n)
			}
		}
	}
	for _, n := range sortedKeys(x.Priority) {
		if !slices.Contains(nodes, n) {
			v.errorf(path+".priority."+n, "%s is not one of this balancer's nodes (%s)", n, strings.Join(nodes, ", "))
		}
		if p := x.Priority[n]; p < 1 || p > 255 {
			v.errorf(path+".priority."+n, "%d is not a priority between 1 and 255", p)
		}
	}
	if d := x.Lease.D(); d < minVIPLease || d > maxVIPLease {
		v.errorf(path+".lease", "%s is not between %s and %s", x.Lease, Duration(minVIPLease), Duration(maxVIPLease))
	}
	for key, cmd := range map[string][]string{"holder": x.Notify.Holder, "backup": x.Notify.Backup, "fault": x.Notify.Fault} {
		if v.given(path+".notify."+key) && (len(cmd) == 0 || cmd[0] == "") {
			v.errorf(path+".notify."+key, "want a command and its arguments, such as [/usr/local/bin/vip-moved, --quiet]")
		}
	}
	if v.cfg.Coordination == nil {
		v.errorf(path, "a floating address needs coordination: add a coordination section with members (embedded etcd) or endpoints")
	}
}

// checkHostPort checks a backend address, HOST:PORT where HOST is an IP
// address or a DNS name.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want HOST:PORT, such as 198.18.1.31:8080 or app1.internal:8080")
	}
	if _, err := parsePort(port); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil && !isDomain(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}
