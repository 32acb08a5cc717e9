package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/netlab"
)

// cluster is one target running on a fresh network: a daemon on each node,
// a probe responder on each node, and the client.
type cluster struct {
	b      *bench
	t      target
	net    *netlab.Net
	dir    string
	conf   string // haven.yaml
	daemon map[string]*netlab.Proc
	starts map[string]int // how many times each node's daemon was started
	http   *http.Client
	cancel context.CancelFunc
}

// startCluster builds the network and starts every node's daemon and
// responder. On error it closes what it made.
func (b *bench) startCluster(ctx context.Context, t target, label string) (_ *cluster, err error) {
	if t.kind == "haven" && b.havenErr != nil {
		return nil, b.havenErr
	}
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n, err := netlab.New(ctx, netlab.Options{Hosts: hosts})
	if err != nil {
		return nil, err
	}
	b.setNet(n)
	rctx, cancel := context.WithCancel(context.Background())
	c := &cluster{b: b, t: t, net: n, dir: dir, daemon: map[string]*netlab.Proc{}, starts: map[string]int{}, cancel: cancel}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	client := n.Host("client")
	c.http = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	if t.kind == "haven" {
		c.conf = filepath.Join(dir, "haven.yaml")
		if err := writeHavenConf(c.conf, dir, t.lease); err != nil {
			return nil, err
		}
	}
	for _, name := range nodes {
		h := n.Host(name)
		if t.kind == "haven" {
			if _, err := h.Start(rctx, b.havenBin, "backend", "--listen", fmt.Sprintf("127.0.0.1:%d", backendPort), "--name", name); err != nil {
				return nil, err
			}
		} else if err := writeKeepalivedConf(filepath.Join(dir, name+".conf"), t, name); err != nil {
			return nil, err
		}
		if err := c.startDaemon(name); err != nil {
			return nil, err
		}
		var conn *net.UDPConn
		if err := h.Do(func() (err error) {
			conn, err = drill.ListenResponder(netip.AddrPortFrom(vipAddr, probePort))
			return err
		}); err != nil {
			return nil, err
		}
		go drill.Respond(rctx, conn, name, c.epochFunc(name))
	}
	return c, nil
}

// epochFunc is what a node's responder answers as the epoch: the fencing
// epoch haven's notify hook recorded, or "-" for keepalived.
func (c *cluster) epochFunc(node string) func() string {
	if c.t.kind != "haven" {
		return func() string { return "-" }
	}
	path := filepath.Join(c.dir, node+".epoch")
	return func() string {
		b, _ := os.ReadFile(path)
		if s := strings.TrimSpace(string(b)); s != "" {
			return s
		}
		return "?"
	}
}

// startDaemon starts node's daemon in the foreground, in a process group of
// its own.
func (c *cluster) startDaemon(node string) error {
	h := c.net.Host(node)
	var p *netlab.Proc
	var err error
	switch c.t.kind {
	case "haven":
		p, err = h.Start(context.Background(), c.b.havenBin, "agent", "-c", c.conf, "-n", node)
	default:
		// Pid files of an earlier, killed instance would stop it.
		pid, vpid := filepath.Join(c.dir, node+".pid"), filepath.Join(c.dir, node+"-vrrp.pid")
		os.Remove(pid)
		os.Remove(vpid)
		p, err = h.Start(context.Background(), "keepalived", "-n", "-l", "-D", "-G", "-P",
			"-f", filepath.Join(c.dir, node+".conf"), "-p", pid, "-r", vpid)
	}
	if err != nil {
		return err
	}
	c.daemon[node] = p
	c.starts[node]++
	return nil
}

// close stops everything the cluster started and removes its network.
func (c *cluster) close() {
	c.saveLogs()
	c.cancel()
	if err := c.net.Close(); err != nil {
		harness.Logf("warning: %v", err)
	}
	c.b.setNet(nil)
}

// saveLogs writes the output of each node's current daemon to the raw
// directory, as SCENARIO-TARGET-NODE-START.log.
func (c *cluster) saveLogs() {
	for _, n := range nodes {
		if p := c.daemon[n]; p != nil {
			path := filepath.Join(c.b.rawDir, fmt.Sprintf("%s-%s-%d.log", filepath.Base(c.dir), n, c.starts[n]))
			_ = os.WriteFile(path, []byte(p.Output()), 0o644)
		}
	}
}

// logTail is the last lines of every daemon's output, for an error message.
func (c *cluster) logTail(lines int) string {
	var parts []string
	for _, n := range nodes {
		if p := c.daemon[n]; p != nil {
			parts = append(parts, n+": "+harness.LastLines(p.Output(), lines))
		}
	}
	return strings.Join(parts, " ‖ ")
}

// kill is kill -9 of node's daemon: its whole process group (keepalived's
// parent and its VRRP child).
func (c *cluster) kill(node string) error { return c.daemon[node].Kill() }

func (c *cluster) freeze(node string) error { return c.daemon[node].Freeze() }
func (c *cluster) thaw(node string) error   { return c.daemon[node].Thaw() }

// restart waits for node's daemon to be gone (it was killed or told to
// stop) and starts it again.
func (c *cluster) restart(node string) error {
	p := c.daemon[node]
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		_ = p.Kill()
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			return fmt.Errorf("%s did not exit", p)
		}
	}
	c.saveLogs()
	return c.startDaemon(node)
}

// planned hands the address over from the holder: keepalived has no
// command for it, so its daemon gets SIGTERM (it sends a priority 0 advert
// and removes the address); haven runs `haven vip move --to NEXT` in the
// client's namespace. It returns how long the command took (0 for
// keepalived) and what it printed.
func (c *cluster) planned(ctx context.Context, holder, next string) (time.Duration, string, error) {
	if c.t.kind != "haven" {
		return 0, "", c.daemon[holder].Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	out, err := c.net.Host("client").Command(ctx, c.b.havenBin, "vip", "move", "--to", next, "-c", c.conf).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, "", fmt.Errorf("haven vip move --to %s: %w: %s", next, err, harness.LastLines(string(out), 3))
	}
	return took, strings.TrimSpace(string(out)), nil
}

// afterPlanned undoes planned at the heal: keepalived's stopped daemon
// starts again (and takes the address back: preempt); haven moves the
// address back with another `haven vip move`, since a moved address stays
// where it was moved, preempt or not.
func (c *cluster) afterPlanned(ctx context.Context, holder string) error {
	if c.t.kind != "haven" {
		return c.restart(holder)
	}
	_, _, err := c.planned(ctx, "", holder)
	return err
}

// best is the node of highest priority among those not excluded.
func best(exclude string) string {
	b := ""
	for _, n := range nodes {
		if n != exclude && (b == "" || priority[n] > priority[b]) {
			b = n
		}
	}
	return b
}

// settle waits until the cluster is back to its steady state: every daemon
// running, the node of highest priority holding the address (as its own
// status says), every other node a backup, and the probes answered by the
// holder alone. It returns the holder.
func (c *cluster) settle(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := best("")
	last := "nothing yet"
	for {
		holder, why := c.states()
		if why == "" && holder != want {
			why = fmt.Sprintf("%s holds the address, waiting for %s (highest priority)", holder, want)
		}
		if why == "" {
			pr, err := c.probe(ctx, 40)
			switch {
			case err != nil:
				why = err.Error()
			case !pr.steady(holder, 40):
				why = fmt.Sprintf("%s holds the address by its state, but the probes saw %q", holder, strings.Join(slices.Compact(slices.Sorted(slices.Values(pr.cells()))), ","))
			default:
				return holder, nil
			}
		}
		last = why
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded && c.b.ctx.Err() == nil {
				return "", fmt.Errorf("not settled after %s: %s; logs: %s", timeout, last, c.logTail(3))
			}
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// states asks every node what it is: the holder, or why the cluster is not
// in a steady state.
func (c *cluster) states() (holder, why string) {
	var holders, backups []string
	var seen []string
	for _, n := range nodes {
		p := c.daemon[n]
		select {
		case <-p.Done():
			return "", fmt.Sprintf("%s exited: %s", p, harness.LastLines(p.Output(), 3))
		default:
		}
		st, err := c.state(n)
		if err != nil {
			seen = append(seen, n+": "+err.Error())
			continue
		}
		seen = append(seen, n+": "+st)
		switch st {
		case "holder":
			holders = append(holders, n)
		case "backup":
			backups = append(backups, n)
		}
	}
	if len(holders) != 1 || len(backups) != len(nodes)-1 {
		return "", strings.Join(seen, "; ")
	}
	return holders[0], ""
}

var keepalivedState = regexp.MustCompile(`\(VI_1\) Entering (MASTER|BACKUP|FAULT) STATE`)

// state is node's own view: holder, backup, fault, or something else.
// keepalived's is the last state its log entered; haven's is from the
// admin API's status.
func (c *cluster) state(node string) (string, error) {
	if c.t.kind != "haven" {
		m := keepalivedState.FindAllStringSubmatch(c.daemon[node].Output(), -1)
		if len(m) == 0 {
			return "starting", nil
		}
		switch s := m[len(m)-1][1]; s {
		case "MASTER":
			return "holder", nil
		case "BACKUP":
			return "backup", nil
		default:
			return strings.ToLower(s), nil
		}
	}
	var st struct {
		Coordination *struct {
			Connected bool `json:"connected"`
			VIPs      []struct {
				State  string `json:"state"`
				Holder string `json:"holder"`
			} `json:"vips"`
		} `json:"coordination"`
	}
	i := slices.Index(nodes, node)
	resp, err := c.http.Get(fmt.Sprintf("http://%s:%d/api/v1/status", nodeAddr(i), adminPort))
	if err != nil {
		return "", errors.New("no status yet")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(body, &st); err != nil {
		return "", fmt.Errorf("status: %w", err)
	}
	if st.Coordination == nil || len(st.Coordination.VIPs) != 1 {
		return "", errors.New("no floating address in its status")
	}
	if !st.Coordination.Connected {
		return "not connected", nil
	}
	return st.Coordination.VIPs[0].State, nil
}

// probe sends count probes from the client, probeEvery apart, and returns
// what they saw.
func (c *cluster) probe(ctx context.Context, count int) (probeRun, error) {
	sent, answers, err := c.probeRaw(ctx, count)
	if err != nil {
		return probeRun{}, err
	}
	return newProbeRun(c.b.opt.probeEvery, sent, answers), nil
}

// probeRaw is probe with drill's own results.
func (c *cluster) probeRaw(ctx context.Context, count int) ([]time.Time, []drill.Answer, error) {
	client := c.net.Host("client")
	var p *drill.Prober
	if err := client.Do(func() (err error) {
		p, err = drill.NewProber(client.Iface, netip.AddrPortFrom(client.Addr, 0), netip.AddrPortFrom(vipAddr, probePort))
		return err
	}); err != nil {
		return nil, nil, err
	}
	defer p.Close()
	return p.Run(ctx, c.b.opt.probeEvery, count)
}
