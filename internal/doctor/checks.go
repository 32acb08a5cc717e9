package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/deadman"
	"github.com/haven-ha/haven/internal/pg"
)

func realProbes() *Probes {
	return &Probes{Capabilities: effectiveCapabilities, Nftables: func() error { return deadman.Probe(0) }, ClockSynced: clockSynced}
}

// effectiveCapabilities reads CapEff from /proc/self/status.
func effectiveCapabilities() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// clockSynced asks the kernel (adjtimex) whether an NTP daemon keeps the
// clock synchronised.
func clockSynced() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, nil
}

func checkCapabilities(nd needs, p *Probes) []Finding {
	if len(nd.caps) == 0 {
		return nil
	}
	have, err := p.Capabilities()
	if err != nil {
		return []Finding{{Check: "capabilities", Severity: Warn, What: "cannot read this process's capabilities: " + err.Error()}}
	}
	missing := map[int][]string{}
	for _, n := range nd.caps {
		if have&(1<<n.cap) == 0 && !slices.Contains(missing[n.cap], n.why) {
			missing[n.cap] = append(missing[n.cap], n.why)
		}
	}
	if len(missing) == 0 {
		return []Finding{{Check: "capabilities", Severity: OK, What: "every capability the node's roles use"}}
	}
	var out []Finding
	for _, c := range slices.Sorted(maps.Keys(missing)) {
		out = append(out, Finding{Check: "capabilities", Severity: Fail,
			What: fmt.Sprintf("%s missing, for %s", capNames[c], strings.Join(missing[c], "; ")),
			Fix:  "run the agent as root, or with " + capNames[c] + " in the unit's CapabilityBoundingSet (deploy/systemd/haven@.service has every one it needs)"})
	}
	return out
}

func checkNftables(nd needs, p *Probes) []Finding {
	if len(nd.fences) == 0 {
		return nil
	}
	if err := p.Nftables(); err != nil {
		return []Finding{{Check: "nftables", Severity: Fail,
			What: fmt.Sprintf("%s: %v", strings.Join(nd.fences, ", "), err),
			Fix:  "a Linux 5.6 or later kernel with nf_tables (modprobe nf_tables; a floating address's fence also needs 5.16's netdev egress hook), and CAP_NET_ADMIN"}}
	}
	return []Finding{{Check: "nftables", Severity: OK, What: "timed sets, interval sets of time and meta time, for " + strings.Join(nd.fences, ", ")}}
}

func checkPostgres(ctx context.Context, cfg *config.Config, node string) []Finding {
	db := cfg.Database
	if db == nil || !cfg.IsDatabaseNode(node) {
		return nil
	}
	b, err := pg.FindBinaries(ctx, db.Bindir)
	if err != nil {
		fix := "install PostgreSQL (apt install postgresql-15), or set database.bindir to its binary directory"
		if db.Bindir != "" {
			fix = "database.bindir must hold postgres, initdb, pg_controldata, pg_basebackup and pg_rewind of PostgreSQL 15 or later"
		}
		return []Finding{{Check: "postgres", Severity: Fail, What: err.Error(), Fix: fix}}
	}
	return []Finding{{Check: "postgres", Severity: OK, What: fmt.Sprintf("PostgreSQL %s in %s", b.Version, b.Dir)}}
}

// checkPorts binds every port the node will listen on and closes it. A
// host that is not this machine's (a floating address it does not hold
// now) is tried on every address instead: the port must be free there
// for the agent to bind it once it holds the address.
func checkPorts(ctx context.Context, nd needs) []Finding {
	if agentRuns(ctx, nd.node.Admin, nd.adminTLS) {
		return []Finding{{Check: "ports", Severity: Warn, What: "the agent runs here (its admin API at " + nd.node.Admin + " answers /healthz): the ports are its own, not checked",
			Fix: "stop it (systemctl stop haven@" + nd.node.Name + ") to check its ports"}}
	}
	var out []Finding
	for _, l := range nd.listens {
		err := bindOnce(l.proto, l.addr)
		var host string
		if h, _, serr := net.SplitHostPort(l.addr); serr == nil {
			host = h
		}
		if errors.Is(err, syscall.EADDRNOTAVAIL) && host != "" {
			_, port, _ := net.SplitHostPort(l.addr)
			err = bindOnce(l.proto, net.JoinHostPort("", port))
		}
		f := Finding{Check: "ports", Severity: OK, What: fmt.Sprintf("%s %s free for %s", l.proto, l.addr, l.why)}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EADDRINUSE):
			_, port, _ := net.SplitHostPort(l.addr)
			f = Finding{Check: "ports", Severity: Fail, What: fmt.Sprintf("%s %s, for %s, is taken", l.proto, l.addr, l.why),
				Fix: fmt.Sprintf("stop what listens there (ss -%slpn 'sport = :%s' names it), or change %s", l.proto[:1], port, l.key)}
		case errors.Is(err, syscall.EACCES):
			f = Finding{Check: "ports", Severity: Fail, What: fmt.Sprintf("%s %s, for %s: %v", l.proto, l.addr, l.why, err),
				Fix: "ports below 1024 need CAP_NET_BIND_SERVICE (run as root, or the unit's capabilities)"}
		default:
			f = Finding{Check: "ports", Severity: Fail, What: fmt.Sprintf("%s %s, for %s: %v", l.proto, l.addr, l.why, err),
				Fix: "give " + l.key + " an address of this machine"}
		}
		out = append(out, f)
	}
	return out
}

func bindOnce(proto, addr string) error {
	if proto == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err == nil {
		l.Close()
	}
	return err
}

func checkClock(p *Probes) []Finding {
	ok, err := p.ClockSynced()
	switch {
	case err != nil:
		return []Finding{{Check: "clock", Severity: Warn, What: err.Error()}}
	case !ok:
		return []Finding{{Check: "clock", Severity: Warn, What: "the kernel says the clock is not synchronised (adjtimex: STA_UNSYNC)",
			Fix: "run an NTP daemon (apt install chrony, or systemctl enable --now systemd-timesyncd): the fences' windows and the backups' times are wall-clock times"}}
	}
	return []Finding{{Check: "clock", Severity: OK, What: "synchronised (adjtimex)"}}
}

// checkPeers dials every peer at once. Refused is a warning (the peer's
// machine answers, its agent is not up: expected before a first start);
// no answer at all is a failure (a firewall, a route, a wrong address).
func checkPeers(ctx context.Context, nd needs, timeout time.Duration) []Finding {
	out := make([]Finding, len(nd.peers))
	var wg sync.WaitGroup
	for i, p := range nd.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = dialPeer(ctx, p, timeout)
		}()
	}
	wg.Wait()
	return out
}

func dialPeer(ctx context.Context, p peer, timeout time.Duration) Finding {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", p.addr)
	switch {
	case err == nil:
		c.Close()
		return Finding{Check: "peers", Severity: OK, What: fmt.Sprintf("%s at %s answers", p.what, p.addr)}
	case errors.Is(err, syscall.ECONNREFUSED):
		fix := "start the etcd cluster at that endpoint, or correct coordination.endpoints"
		if p.node != "" {
			fix = "start " + p.node + "'s agent (systemctl start haven@" + p.node + "); if it runs, its address in haven.yaml is wrong"
		}
		return Finding{Check: "peers", Severity: Warn, What: fmt.Sprintf("%s at %s refused the connection: its machine answers, nothing listens there", p.what, p.addr), Fix: fix}
	default:
		return Finding{Check: "peers", Severity: Fail, What: fmt.Sprintf("%s at %s: %v", p.what, p.addr, err),
			Fix: "nothing answered: let this machine reach that port (firewall, route), or correct the address in haven.yaml"}
	}
}

func checkDisks(nd needs) []Finding {
	var out []Finding
	for _, d := range nd.disks {
		p, err := statPath(d.path)
		if err != nil {
			out = append(out, Finding{Check: "disk", Severity: Fail, What: fmt.Sprintf("%s (%s): %v", d.path, d.key, err),
				Fix: "correct " + d.key + " in haven.yaml, or mount the file system it is on"})
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			out = append(out, Finding{Check: "disk", Severity: Fail, What: fmt.Sprintf("statfs %s (%s): %v", p, d.key, err),
				Fix: "check the file system under " + p + " (mount, permissions), or move " + d.key})
			continue
		}
		free := st.Bavail * uint64(st.Bsize)
		total := (st.Blocks - st.Bfree + st.Bavail) * uint64(st.Bsize)
		pct := uint64(0)
		if total > 0 {
			pct = free * 100 / total
		}
		what := fmt.Sprintf("%s (%s): %s free of %s (%d%%)", d.path, d.key, size(free), size(total), pct)
		if free < minFreeBytes || pct < minFreePercent {
			out = append(out, Finding{Check: "disk", Severity: Fail, What: what,
				Fix: fmt.Sprintf("make room on %s's file system (at least %s and %d%% free), or move %s to a bigger one", p, size(minFreeBytes), minFreePercent, d.key)})
			continue
		}
		out = append(out, Finding{Check: "disk", Severity: OK, What: what})
	}
	return out
}

func size(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%d MiB", b>>20)
	}
}

// agentRuns says whether a haven agent answers on admin: then the ports
// are taken by the agent itself. Over HTTPS the certificate is not
// checked: /healthz's "ok" is all doctor asks, and it sends nothing.
func agentRuns(ctx context.Context, admin string, useTLS bool) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	scheme, client := "http://", http.DefaultClient
	if useTLS {
		scheme = "https://"
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", scheme+admin+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "ok"
}

// checkVolumes checks what a volume's storage and mount nodes need:
// GlusterFS's programs, extended attributes on each brick's file system
// (GlusterFS keeps its metadata in trusted.* attributes), FUSE.
func checkVolumes(nd needs) []Finding {
	var out []Finding
	need := func(bin, pkg, why string) {
		if path, err := exec.LookPath(bin); err != nil {
			out = append(out, Finding{Check: "volume", Severity: Fail, What: fmt.Sprintf("%s is not installed (%s)", bin, why), Fix: "apt-get install " + pkg})
		} else {
			out = append(out, Finding{Check: "volume", Severity: OK, What: fmt.Sprintf("%s in %s (%s)", bin, filepath.Dir(path), why)})
		}
	}
	if len(nd.bricks) > 0 {
		need("glusterd", "glusterfs-server", "a storage node")
		need("gluster", "glusterfs-server", "a storage node")
	}
	for _, b := range nd.bricks {
		p, err := statPath(b.path)
		if err == nil {
			err = trustedXattrs(p)
		}
		if err != nil {
			out = append(out, Finding{Check: "volume", Severity: Fail, What: fmt.Sprintf("%s (%s): no trusted extended attributes: %v", b.path, b.key, err),
				Fix: "put " + b.key + " on ext4 or XFS, and run the agent as root"})
			continue
		}
		out = append(out, Finding{Check: "volume", Severity: OK, What: fmt.Sprintf("%s (%s): extended attributes work", b.path, b.key)})
	}
	if len(nd.mounts) > 0 {
		need("glusterfs", "glusterfs-client", "mounts "+strings.Join(nd.mounts, ", "))
		if _, err := os.Stat("/dev/fuse"); err != nil {
			out = append(out, Finding{Check: "volume", Severity: Fail, What: "no /dev/fuse: " + err.Error(), Fix: "modprobe fuse (and, in a container, pass /dev/fuse through)"})
		}
	}
	return out
}

// trustedXattrs sets and removes a trusted.* attribute on a file made in
// dir.
func trustedXattrs(dir string) error {
	f, err := os.CreateTemp(dir, ".haven-doctor-")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	if err := unix.Setxattr(name, "trusted.haven-doctor", []byte("1"), 0); err != nil {
		return err
	}
	return unix.Removexattr(name, "trusted.haven-doctor")
}
