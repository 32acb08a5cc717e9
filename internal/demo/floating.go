package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
)

// The second act: two balancer nodes share a floating address, in network
// namespaces on one bridge, with the three web servers behind them and a
// third node for etcd's quorum. Clients send traffic to the floating
// address; the node that holds it is killed.

// FloatingResult summarises the second act.
type FloatingResult struct {
	Sent, Failed int64
	// Holder held the address first; Successor took it over.
	Holder, Successor string
	// Outage is from the first to the last failed request after the kill
	// (0 when none failed).
	Outage time.Duration
}

// floatingHosts are the demo's machines, in address order: lb1 is
// 198.18.1.11, client 198.18.1.17.
var floatingHosts = []string{"lb1", "lb2", "q1", "web1", "web2", "web3", "client"}

const floatingVIP = "198.18.1.100"

// CanRunFloating says whether this machine can run the second act: it
// needs root, iproute2 and nftables. The error says what is missing.
func CanRunFloating() error {
	if os.Geteuid() != 0 {
		return errors.New("it needs root (network namespaces)")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("it needs %s (apt-get install iproute2 nftables)", bin)
		}
	}
	return nil
}

// RunFloating plays the second act.
func RunFloating(ctx context.Context, opt Options) (*FloatingResult, error) {
	opt = opt.defaults()
	st, err := newStage(ctx, "vip", netlab.Options{Hosts: floatingHosts}, func(dir string) map[string]string {
		return map[string]string{"haven.yaml": floatingConfig(dir), "token": "demo\n"}
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")
	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 2: a floating address %s held by one of two balancer nodes\n", floatingVIP)
	fmt.Fprintf(w, "  network namespaces on one bridge: lb1 198.18.1.11, lb2 198.18.1.12, q1 198.18.1.13 (etcd's third member),\n")
	fmt.Fprintf(w, "  web1-3 198.18.1.14-16:8080, client 198.18.1.17; config %s\n", cfgPath)

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	for i, web := range []string{"web1", "web2", "web3"} {
		addr := fmt.Sprintf("198.18.1.%d:8080", 14+i)
		if _, err := n.Host(web).Start(procCtx, exe, "backend", "--listen", addr, "--name", web); err != nil {
			return nil, err
		}
	}
	agents := map[string]*netlab.Proc{}
	startAgent := func(node string) error {
		p, err := n.Host(node).Start(procCtx, exe, "agent", "-c", cfgPath, "-n", node)
		agents[node] = p
		return err
	}
	for _, node := range []string{"lb1", "lb2", "q1"} {
		if err := startAgent(node); err != nil {
			return nil, err
		}
	}
	client := n.Host("client")
	admin := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	holder, _, err := waitHolder(ctx, admin, "", 60*time.Second)
	if err != nil {
		return nil, fmt.Errorf("demo: %w\n%s", err, agents["lb1"].Output())
	}
	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	fmt.Fprintf(w, "\n%s  %s holds %s; sending traffic to http://%s/counter from the client\n", since(start), holder, floatingVIP, floatingVIP)

	ld := newLoad("http://" + floatingVIP + "/counter")
	ld.dial = client.DialContext
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { ld.run(loadCtx, 4); close(loadDone) }()
	defer func() { stopLoad(); <-loadDone }()

	res := &FloatingResult{Holder: holder}
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	killedAt := time.Now()
	_ = agents[holder].Kill()
	fmt.Fprintf(w, "%s  kill -9 the agent on %s (its address stays on the interface; the fence silences it)\n", since(killedAt), holder)
	successor, epoch, err := waitHolder(ctx, admin, holder, 10*time.Second)
	if err != nil {
		return res, fmt.Errorf("demo: %w", err)
	}
	res.Successor = successor
	fmt.Fprintf(w, "%s  %s holds %s (fencing epoch %d)\n", since(time.Now()), successor, floatingVIP, epoch)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	if err := startAgent(holder); err == nil {
		fmt.Fprintf(w, "%s  %s's agent restarted: it removes the stale address and becomes a backup\n", since(time.Now()), holder)
	}
	sleepCtx(ctx, opt.Phase)
	stopLoad()
	<-loadDone
	res.Sent, res.Failed = ld.sent.Load(), ld.failed.Load()
	if first, last := ld.failureWindow(); !first.IsZero() {
		res.Outage = last.Sub(first)
		fmt.Fprintf(w, "\nrequests sent %d, failed %d, all between %s and %s (%.0f ms)\n", res.Sent, res.Failed, since(first), since(last), res.Outage.Seconds()*1000)
	} else {
		fmt.Fprintf(w, "\nrequests sent %d, failed %d\n", res.Sent, res.Failed)
	}
	if errs := ld.errors(); len(errs) > 0 {
		fmt.Fprintf(w, "errors seen: %s\n", strings.Join(errs, "; "))
	}
	fmt.Fprintln(w, "(connections open on the killed node are lost with it; new ones reach it until its fence closes, then the successor)")
	return res, nil
}

func floatingConfig(dir string) string {
	return fmt.Sprintf(`cluster: demo
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      lb1: {address: 198.18.1.11, zone: a}
      lb2: {address: 198.18.1.12, zone: b}
      q1: {address: 198.18.1.13, zone: c}
coordination:
  members: [lb1, lb2, q1]
  data_dir: %[1]s/{node}/etcd
checks:
  web:
    http: {port: 8080, path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 500ms
    timeout: 250ms
    rise: 2
    fall: 2
balancers:
  web:
    nodes: [lb1, lb2]
    listen: "%[2]s:80"
    vip: %[2]s/24
    check: web
    timeouts: {server: 2s}
    backends:
      - {name: web1, address: "198.18.1.14:8080"}
      - {name: web2, address: "198.18.1.15:8080"}
      - {name: web3, address: "198.18.1.16:8080"}
`, dir, floatingVIP)
}

// waitHolder polls the balancer nodes' status until one other than not
// holds the address, and returns it with its epoch.
func waitHolder(ctx context.Context, c *http.Client, not string, within time.Duration) (string, int64, error) {
	deadline := time.Now().Add(within)
	last := "no answer"
	for time.Now().Before(deadline) {
		for _, node := range []string{"lb1", "lb2"} {
			if node == not {
				continue
			}
			st, err := vipState(ctx, c, node)
			if err != nil {
				last = err.Error()
				continue
			}
			last = fmt.Sprintf("%s is %s", node, st.State)
			if st.State == "holder" {
				return node, st.Epoch, nil
			}
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return "", 0, ctx.Err()
		}
	}
	return "", 0, fmt.Errorf("no balancer node took the floating address within %v (last: %s)", within, last)
}

type vipNodeState struct {
	State string `json:"state"`
	Epoch int64  `json:"epoch"`
}

func vipState(ctx context.Context, c *http.Client, node string) (vipNodeState, error) {
	addr := map[string]string{"lb1": "198.18.1.11", "lb2": "198.18.1.12"}[node]
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+":9900/api/v1/vips", nil)
	resp, err := c.Do(req)
	if err != nil {
		return vipNodeState{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var vips []vipNodeState
	if err := json.Unmarshal(body, &vips); err != nil || len(vips) == 0 {
		return vipNodeState{}, fmt.Errorf("%s: no floating address in its status", node)
	}
	return vips[0], nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
