package vip_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testenv/slowdisk"
	"github.com/haven-ha/haven/internal/testnet"
)

// The end-to-end test runs three real haven agents (embedded etcd, a
// balancer with a floating address) in network namespaces and a client on
// the same bridge, and breaks the holder in every way issue 3 lists. A
// prober in the client asks, every few milliseconds and in an Ethernet
// broadcast so every node hears it, who answers for the address; a
// responder on each node answers with its name and fencing epoch. Two
// answers to one probe would be two holders. HAVEN_E2E_DEBUG=1 prints every
// ARP packet and the agents' logs.

var (
	vipAddr   = netip.MustParseAddr("198.18.1.100")
	probePort = uint16(7777)
)

const (
	probeEvery = 5 * time.Millisecond
	lease      = 500 * time.Millisecond
)

type cluster struct {
	t      *testing.T
	net    *testnet.Net
	bin    string
	dir    string
	nodes  []string
	agents map[string]*testnet.Proc
	mu     sync.Mutex
	arps   []testnet.ARPPacket
	http   *http.Client
	etcd   map[string]*clientv3.Client // etcdClient's, by node
}

func startCluster(t *testing.T) *cluster { return startClusterWith(t, "", 0) }

// startClusterWith starts the cluster with node slow's etcd data on a disk
// whose fsync takes slowFsync longer ("" for none).
func startClusterWith(t *testing.T, slow string, slowFsync time.Duration) *cluster {
	testnet.Require(t)
	etcdData := testenv.MemoryDir(t)
	if slow != "" {
		if err := os.Symlink(slowdisk.Mount(t, slowFsync), filepath.Join(etcdData, slow)); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{t: t, bin: testenv.Haven(t), dir: t.TempDir(), nodes: []string{"n1", "n2", "n3"}, agents: map[string]*testnet.Proc{}}
	c.net = testnet.Start(t, testnet.Options{Hosts: []string{"n1", "n2", "n3", "client"}})
	client := c.net.Host("client")
	c.http = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}

	cfg := fmt.Sprintf(`cluster: vt
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      n1: {address: 198.18.1.11, zone: a}
      n2: {address: 198.18.1.12, zone: b}
      n3: {address: 198.18.1.13, zone: c}
coordination:
  members: [n1, n2, n3]
  data_dir: %[3]s/{node}/etcd
  join_timeout: 20s
  tls: {ca: "%[1]s/certs/ca.pem", cert: "%[1]s/certs/{node}.pem", key: "%[1]s/certs/{node}-key.pem"}
checks:
  local: {http: {port: 9000, path: /healthz}, interval: 200ms, timeout: 100ms, rise: 1, fall: 2}
balancers:
  web:
    nodes: [n1, n2, n3]
    listen: "198.18.1.100:8080"
    check: local
    vip:
      address: 198.18.1.100/24
      lease: %[2]s
      notify:
        holder: [sh, -c, 'echo "$HAVEN_EPOCH" > %[1]s/$HAVEN_NODE.epoch.tmp && mv %[1]s/$HAVEN_NODE.epoch.tmp %[1]s/$HAVEN_NODE.epoch']
    backends: [{address: "127.0.0.1:9000"}]
`, c.dir, lease, etcdData)
	if err := os.WriteFile(filepath.Join(c.dir, "token"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "haven.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// etcd runs with mutual TLS, from certificates haven certs makes.
	if out, err := exec.Command(c.bin, "certs", "-c", filepath.Join(c.dir, "haven.yaml"), "-o", filepath.Join(c.dir, "certs")).CombinedOutput(); err != nil {
		t.Fatalf("haven certs: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	arps, err := c.net.WatchARP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for p := range arps {
			if os.Getenv("HAVEN_E2E_DEBUG") != "" {
				fmt.Println("ARP", p.Time.Format("15:04:05.000"), p)
			}
			if p.SenderIP == vipAddr {
				c.mu.Lock()
				c.arps = append(c.arps, p)
				c.mu.Unlock()
			}
		}
	}()
	for _, name := range c.nodes {
		h := c.net.Host(name)
		if _, err := h.Start(ctx, c.bin, "backend", "--listen", "127.0.0.1:9000", "--name", name); err != nil {
			t.Fatal(err)
		}
		c.startAgent(name)
		var conn *net.UDPConn
		if err := h.Do(func() (err error) {
			conn, err = drill.ListenResponder(netip.AddrPortFrom(vipAddr, probePort))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go drill.Respond(ctx, conn, name, func() string {
			b, _ := os.ReadFile(filepath.Join(c.dir, name+".epoch"))
			return strings.TrimSpace(string(b))
		})
	}
	c.waitSettled()
	return c
}

func (c *cluster) startAgent(name string) {
	c.t.Helper()
	p, err := c.net.Host(name).Start(context.Background(), c.bin, "agent", "-c", filepath.Join(c.dir, "haven.yaml"), "-n", name)
	if err != nil {
		c.t.Fatal(err)
	}
	c.agents[name] = p
}

type nodeStatus struct {
	Ready        bool `json:"ready"`
	Coordination *struct {
		Connected bool `json:"connected"`
		Etcd      []struct {
			Endpoint string `json:"endpoint"`
			Healthy  bool   `json:"healthy"`
			Leader   bool   `json:"leader"`
		} `json:"etcd"`
		VIPs []struct {
			State     string `json:"state"`
			Holder    string `json:"holder"`
			HeldEpoch int64  `json:"held_epoch"`
		} `json:"vips"`
	} `json:"coordination"`
}

func (c *cluster) status(name string) (nodeStatus, error) {
	var st nodeStatus
	resp, err := c.http.Get("http://" + c.net.Host(name).Addr.String() + ":9900/api/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%w: %s", err, body)
	}
	if st.Coordination == nil || len(st.Coordination.VIPs) != 1 {
		return st, fmt.Errorf("no floating address in status: %s", body)
	}
	return st, nil
}

// waitSettled waits until every node is connected, one holds the address
// and the others are backups. If they do not, it fails with the agents'
// logs.
func (c *cluster) waitSettled() {
	c.t.Helper()
	settled := false
	defer func() {
		if !settled {
			c.t.Logf("agents' logs:\n%s", c.agentLogs())
		}
	}()
	testenv.Poll(c.t, 60*time.Second, "the cluster settling: one holder, the others backups", func() (bool, string) {
		holders, backups := 0, 0
		var seen []string
		for _, n := range c.nodes {
			st, err := c.status(n)
			if err != nil {
				seen = append(seen, n+": "+err.Error())
				continue
			}
			v := st.Coordination.VIPs[0]
			seen = append(seen, fmt.Sprintf("%s: connected=%v state=%s holder=%s", n, st.Coordination.Connected, v.State, v.Holder))
			switch {
			case !st.Coordination.Connected:
			case v.State == "holder":
				holders++
			case v.State == "backup":
				backups++
			}
		}
		return holders == 1 && backups == len(c.nodes)-1, strings.Join(seen, "; ")
	})
	settled = true
}

func (c *cluster) agentLogs() string {
	var procs []*testnet.Proc
	for _, n := range c.nodes {
		procs = append(procs, c.agents[n])
	}
	return testnet.Outputs(300000, procs...)
}

// holder is the node the probe answers name now.
func (c *cluster) holder() string {
	c.t.Helper()
	r := c.probe(40)
	if len(r.Holdings) == 0 {
		c.t.Fatalf("nobody answers for %s: %s", vipAddr, r)
	}
	return r.Holdings[len(r.Holdings)-1].Node
}

func (c *cluster) probe(count int) drill.Report {
	c.t.Helper()
	sent, answers := c.runProber(context.Background(), count)
	return drill.Analyze(sent, answers)
}

func (c *cluster) runProber(ctx context.Context, count int) ([]time.Time, []drill.Answer) {
	c.t.Helper()
	client := c.net.Host("client")
	var p *drill.Prober
	if err := client.Do(func() (err error) {
		p, err = drill.NewProber(client.Iface, netip.AddrPortFrom(client.Addr, 0), netip.AddrPortFrom(vipAddr, probePort))
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	defer p.Close()
	sent, answers, err := p.Run(ctx, probeEvery, count)
	if err != nil {
		c.t.Fatal(err)
	}
	return sent, answers
}

// fault runs the prober for the whole of a fault: it applies the fault
// after a second, heals it after hold, and probes on until the address is
// answered steadily again. It checks that no probe had two answers and
// that no node sent ARP for the address while another held it, and
// returns the client-observed gap after the fault.
func (c *cluster) fault(name string, hold time.Duration, apply, heal func()) time.Duration {
	c.t.Helper()
	r, at, _ := c.faultReport(name, hold, apply, heal)
	gap := r.OutageAfter(at)
	if gap < 0 {
		c.t.Fatalf("%s: nobody answered for %s after the fault\n%s", name, vipAddr, c.agentLogs())
	}
	return gap
}

// faultReport is fault's run: it returns the probes' report, when the
// fault was applied and when it was healed.
func (c *cluster) faultReport(name string, hold time.Duration, apply, heal func()) (r drill.Report, at, healed time.Time) {
	c.t.Helper()
	c.mu.Lock()
	c.arps = nil
	c.mu.Unlock()
	total := time.Second + hold + 4*time.Second
	count := int(total / probeEvery)
	type out struct {
		sent    []time.Time
		answers []drill.Answer
	}
	done := make(chan out, 1)
	go func() {
		s, a := c.runProber(context.Background(), count)
		done <- out{s, a}
	}()
	time.Sleep(time.Second)
	at = time.Now()
	apply()
	time.Sleep(hold)
	healed = time.Now()
	heal()
	o := <-done
	r = drill.Analyze(o.sent, o.answers)
	c.t.Logf("%s: %s", name, r)
	if r.Overlaps > 0 {
		c.t.Errorf("%s: two nodes answered for %s at once: %s (%d probes)", name, vipAddr, r.Overlapping, r.Overlaps)
	}
	c.checkARP(name, r)
	return r, at, healed
}

// checkARP fails when a node sent ARP for the address in the middle of
// another node's holding, as the probes saw it.
func (c *cluster) checkARP(name string, r drill.Report) {
	c.t.Helper()
	c.mu.Lock()
	arps := append([]testnet.ARPPacket(nil), c.arps...)
	c.mu.Unlock()
	const margin = 10 * time.Millisecond
	for _, p := range arps {
		for _, h := range r.Holdings {
			if p.From != nil && p.From.Name != h.Node && p.Time.After(h.From.Add(margin)) && p.Time.Before(h.To.Add(-margin)) {
				c.t.Errorf("%s: %s at %s while %s held the address (%s to %s)", name, p, p.Time.Format("15:04:05.000"),
					h.Node, h.From.Format("15:04:05.000"), h.To.Format("15:04:05.000"))
			}
		}
	}
	c.t.Logf("%s: %d ARP packets for %s seen on the bridge", name, len(arps), vipAddr)
	// A node that took the address over announced it.
	if n := len(r.Holdings); n > 1 && r.Holdings[n-1].Node != r.Holdings[0].Node {
		taker := r.Holdings[n-1].Node
		if !slices.ContainsFunc(arps, func(p testnet.ARPPacket) bool { return p.From != nil && p.From.Name == taker && p.Gratuitous() }) {
			c.t.Errorf("%s: %s took %s over without a gratuitous ARP seen on the bridge", name, taker, vipAddr)
		}
	}
}

func TestFloatingAddressUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agents in namespaces; skipped with -short")
	}
	c := startCluster(t)
	// How long the address takes to come back is measured, and compared
	// with keepalived, in bench/vip; here the test asserts what must hold
	// on any machine: never two holders, and the address comes back.

	t.Run("steady state", func(t *testing.T) {
		// Nothing is broken: every probe is answered, by one holder.
		r := c.probe(int(10 * time.Second / probeEvery))
		t.Logf("steady state: %s", r)
		if r.Answered != r.Probes || len(r.Holdings) != 1 {
			t.Errorf("with nothing broken, %d of %d probes went unanswered and the address had %d holdings: %s", r.Probes-r.Answered, r.Probes, len(r.Holdings), r)
		}
	})
	t.Run("5% packet loss between the nodes", func(t *testing.T) {
		// Lossy but working links are not a failure: etcd's TCP streams
		// stall for 200-600 ms on a lost packet, and the holder must ride
		// that out (renewals in flight together, over several members).
		for i, a := range c.nodes {
			for _, b := range c.nodes[i+1:] {
				if err := c.net.Loss(c.net.Host(a), c.net.Host(b), 5); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Cleanup(func() { _ = c.net.HealAll() })
		r := c.probe(int(15 * time.Second / probeEvery))
		t.Logf("5%% loss: %s", r)
		if r.Answered != r.Probes || len(r.Holdings) != 1 {
			t.Errorf("with 5%% loss between the nodes, %d of %d probes went unanswered and the address had %d holdings (want none and 1): %s\n%s",
				r.Probes-r.Answered, r.Probes, len(r.Holdings), r, c.agentLogs())
		}
		if err := c.net.HealAll(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("kill -9 the holder's agent", func(t *testing.T) {
		h := c.holder()
		gap := c.fault("kill -9", 2*time.Second, func() { _ = c.agents[h].Kill() }, func() {})
		if next := c.holder(); next == h {
			t.Errorf("%s still answers after its agent was killed: the fence did not silence it", h)
		}
		t.Logf("kill -9 of %s: the address was unanswered for %v", h, gap)
		// The restarted agent removes the stale address and rejoins as a
		// backup.
		c.startAgent(h)
		c.waitSettled()
	})
	t.Run("SIGSTOP the holder's agent", func(t *testing.T) {
		h := c.holder()
		// The holder gives etcd's leadership away, so that freezing it
		// costs no etcd election on top of the lease.
		testenv.Poll(t, 30*time.Second, "etcd's leadership moved off the holder "+h, func() (bool, string) {
			l := c.etcdLeader()
			return l != h, "etcd leader " + l
		})
		p := c.agents[h]
		gap := c.fault("SIGSTOP", 3*time.Second, func() { _ = p.Freeze() }, func() { _ = p.Thaw() })
		t.Logf("SIGSTOP of %s: the address was unanswered for %v", h, gap)
		c.waitSettled()
	})
	t.Run("cut the holder's link", func(t *testing.T) {
		h := c.net.Host(c.holder())
		gap := c.fault("link cut", 3*time.Second, func() { _ = c.net.CutLink(h) }, func() { _ = c.net.RestoreLink(h) })
		t.Logf("link cut of %s: the address was unanswered for %v", h, gap)
		c.waitSettled()
	})
	t.Run("partition the holder from the other nodes", func(t *testing.T) {
		h := c.net.Host(c.holder())
		var others []*testnet.Host
		for _, n := range c.nodes {
			if n != h.Name {
				others = append(others, c.net.Host(n))
			}
		}
		gap := c.fault("partition", 3*time.Second, func() {
			for _, o := range others {
				_ = c.net.Partition(h, o)
			}
		}, func() {
			for _, o := range others {
				_ = c.net.Heal(h, o)
			}
		})
		t.Logf("partition of %s: the address was unanswered for %v", h, gap)
		c.waitSettled()
	})
	t.Run("partition etcd's leader", func(t *testing.T) {
		leader := c.etcdLeader()
		h := c.net.Host(leader)
		var others []*testnet.Host
		for _, n := range c.nodes {
			if n != leader {
				others = append(others, c.net.Host(n))
			}
		}
		c.fault("etcd leader partition", 3*time.Second, func() {
			for _, o := range others {
				_ = c.net.Partition(h, o)
			}
		}, func() {
			for _, o := range others {
				_ = c.net.Heal(h, o)
			}
		})
		c.waitSettled()
	})
	t.Run("nftables ruleset flushed on the holder", func(t *testing.T) {
		// A firewall reload removes the fence's tables: the holder must
		// put them back (or stop answering), never run unfenced.
		h := c.net.Host(c.holder())
		gap := c.fault("ruleset flush", 500*time.Millisecond, func() {
			if out, err := h.Command(context.Background(), "nft", "flush", "ruleset").CombinedOutput(); err != nil {
				t.Errorf("nft flush ruleset: %v\n%s", err, out)
			}
		}, func() {})
		out, err := h.Command(context.Background(), "nft", "list", "table", "inet", "haven_vip").CombinedOutput()
		if err != nil {
			t.Errorf("after a ruleset flush on %s the fence was not installed again: %v\n%s", h, err, out)
		}
		t.Logf("ruleset flush on %s: the address was unanswered for %v", h, gap)
		c.waitSettled()
	})
	t.Run("planned handover", func(t *testing.T) {
		h := c.holder()
		to := c.nodes[0]
		if to == h {
			to = c.nodes[1]
		}
		var took time.Duration
		gap := c.fault("handover", 100*time.Millisecond, func() {
			start := time.Now()
			out, err := c.net.Host("client").Command(context.Background(), c.bin, "vip", "move", "--to", to, "-c", filepath.Join(c.dir, "haven.yaml")).CombinedOutput()
			took = time.Since(start)
			if err != nil {
				t.Errorf("haven vip move: %v\n%s", err, out)
			}
		}, func() {})
		if got := c.holder(); got != to {
			t.Errorf("after moving to %s, %s answers", to, got)
		}
		t.Logf("handover %s → %s: command took %v, client gap %v", h, to, took, gap)
	})
	t.Run("status commands", c.checkStatusCommands)
	if os.Getenv("HAVEN_E2E_DEBUG") != "" {
		t.Log(c.agentLogs())
	}
}

// checkStatusCommands runs haven status and haven vip status from the
// client, as an operator would, and checks they name the holder.
func (c *cluster) checkStatusCommands(t *testing.T) {
	holder := c.holder()
	cfg := filepath.Join(c.dir, "haven.yaml")
	out, err := c.net.Host("client").Command(context.Background(), c.bin, "status", "-c", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("haven status: %v\n%s", err, out)
	}
	for _, want := range []string{"etcd (as ", "LEADER", "members:", "vip/web", "floating addresses:", holder + "  "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("haven status lacks %q:\n%s", want, out)
		}
	}
	out, err = c.net.Host("client").Command(context.Background(), c.bin, "vip", "status", "-c", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("haven vip status: %v\n%s", err, out)
	}
	holders := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[3] == "holder" {
			holders++
			if f[2] != holder || !strings.HasPrefix(f[4], holder) {
				t.Errorf("haven vip status says %s holds it; the probes say %s:\n%s", f[2], holder, out)
			}
		}
	}
	if holders != 1 {
		t.Errorf("haven vip status shows %d holders, want 1:\n%s", holders, out)
	}
}

func (c *cluster) etcdLeader() string {
	c.t.Helper()
	for _, n := range c.nodes {
		st, err := c.status(n)
		if err != nil {
			continue
		}
		for _, e := range st.Coordination.Etcd {
			if e.Leader {
				for _, m := range c.nodes {
					if strings.Contains(e.Endpoint, c.net.Host(m).Addr.String()+":") {
						return m
					}
				}
			}
		}
	}
	c.t.Fatal("no etcd leader found in any node's status")
	return ""
}
