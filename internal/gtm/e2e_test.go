package gtm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// The end-to-end failover test runs `haven agent` as the traffic manager
// of a zone in a network namespace, and the demo application on two
// target hosts. Each way a target can fail (it refuses, answers 5xx,
// answers the wrong body, answers too slowly, goes silent) must move the
// failover name to the other target, and back after the repair. It logs
// how long detection and the answer took against the checks' bound:
// interval × fall, plus the probe timeout when the target does not answer,
// plus 0.5 s.

const (
	checkInterval = 500 * time.Millisecond
	checkTimeout  = 300 * time.Millisecond
	checkFall     = 2
)

func TestMain(m *testing.M) { testenv.Main(m) }

// startBackends runs the demo backend on port 8080 of each host until the
// test ends.
func startBackends(t *testing.T, n *testnet.Net, bin string, hosts ...string) map[string]*testnet.Proc {
	t.Helper()
	procs := map[string]*testnet.Proc{}
	for _, host := range hosts {
		p, err := n.Host(host).Start(context.Background(), bin, "backend", "--listen", n.Host(host).Addr.String()+":8080", "--name", host)
		if err != nil {
			t.Fatal(err)
		}
		procs[host] = p
	}
	return procs
}

// askWWW asks the name server at server, from client, for www.gslb.t. A,
// on a socket of its own so that a late reply to an earlier query cannot
// be taken for this one. It returns the address, or why there is none.
func askWWW(client *testnet.Host, server string) string {
	conn, err := client.DialContext(context.Background(), "udp", net.JoinHostPort(server, "53"))
	if err != nil {
		return fmt.Sprint("no answer: ", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	q := new(dns.Msg)
	q.SetQuestion("www.gslb.t.", dns.TypeA)
	r, _, err := (&dns.Client{}).ExchangeWithConn(q, &dns.Conn{Conn: conn})
	if err != nil || len(r.Answer) != 1 {
		return fmt.Sprint("no answer: ", err)
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok {
		return fmt.Sprint("not an A record: ", r.Answer[0])
	}
	return a.A.String()
}

func TestTrafficFailover(t *testing.T) {
	testnet.Require(t)
	bin := testenv.Haven(t)
	n := testnet.Start(t, testnet.Options{Hosts: []string{"dns", "east", "west", "client"}})
	dir := t.TempDir()
	cfg := fmt.Sprintf(`cluster: gtm
admin: {token_file: %[1]s/token}
regions:
  r:
    nodes:
      dns: {address: %[2]s}
checks:
  site:
    http: {port: 8080, path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: %[3]s
    timeout: %[4]s
    rise: 2
    fall: %[5]d
traffic:
  zone: gslb.t.
  nameservers: [dns]
  records:
    www:
      policy: failover
      ttl: 1s
      targets:
        - {name: east, address: %[6]s, check: site}
        - {name: west, address: %[7]s, check: site}
`, dir, n.Host("dns").Addr, checkInterval, checkTimeout, checkFall, n.Host("east").Addr, n.Host("west").Addr)
	for name, content := range map[string]string{"haven.yaml": cfg, "token": "gtm-e2e\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	east := startBackends(t, n, bin, "east", "west")["east"]
	agent, err := n.Host("dns").Start(context.Background(), bin, "agent", "-c", filepath.Join(dir, "haven.yaml"), "-n", "dns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent's log:\n%s", testnet.Outputs(100000, agent))
		}
	})
	client := n.Host("client")
	web := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	www := func() string { return askWWW(client, n.Host("dns").Addr.String()) }
	// waitAnswer polls until www answers addr and returns when it did.
	waitAnswer := func(step, addr string) time.Time {
		t.Helper()
		testenv.Poll(t, 30*time.Second, step+": www answers "+addr, func() (bool, string) {
			got := www()
			return got == addr, "www answers " + got
		})
		return time.Now()
	}
	mode := func(m string) {
		t.Helper()
		resp, err := web.Post("http://"+n.Host("east").Addr.String()+":8080/_demo/mode/"+m, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// downEvent is when the agent marked east down after since.
	downEvent := func(since time.Time) time.Time {
		resp, err := web.Get("http://" + n.Host("dns").Addr.String() + ":9900/api/v1/status")
		if err != nil {
			return time.Time{}
		}
		defer resp.Body.Close()
		var st struct {
			Events []health.Event `json:"events"`
		}
		json.NewDecoder(resp.Body).Decode(&st)
		for _, ev := range st.Events {
			if ev.Target == n.Host("east").Addr.String() && ev.To == health.Down && ev.At.After(since) {
				return ev.At
			}
		}
		return time.Time{}
	}

	eastAddr, westAddr := n.Host("east").Addr.String(), n.Host("west").Addr.String()
	waitAnswer("start", eastAddr)
	for _, f := range []struct {
		name     string
		silent   bool // the probe waits for its timeout
		do, undo func()
	}{
		{"east refuses connections", false, func() { _ = east.Kill(); east.Wait() }, func() { east = startBackends(t, n, bin, "east")["east"] }},
		{"east answers 5xx", false, func() { mode("fail") }, func() { mode("ok") }},
		{"east answers the wrong body", false, func() { mode("wrong") }, func() { mode("ok") }},
		{"east answers too slowly", true, func() { mode("hang") }, func() { mode("ok") }},
		{"east goes silent (packets dropped)", true,
			func() {
				if err := n.Partition(n.Host("dns"), n.Host("east")); err != nil {
					t.Fatal(err)
				}
			},
			func() {
				if err := n.HealAll(); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(f.name, func(t *testing.T) {
			start := time.Now()
			f.do()
			changed := waitAnswer(f.name, westAddr)
			bound := checkInterval*checkFall + 500*time.Millisecond
			if f.silent {
				bound += checkTimeout
			}
			detected := downEvent(start)
			if detected.IsZero() {
				t.Errorf("the agent's events have no transition of east to down")
			}
			t.Logf("%s: marked down after %v, answer changed after %v (bound interval × fall%s + 0.5 s = %v)",
				f.name, detected.Sub(start).Round(time.Millisecond), changed.Sub(start).Round(time.Millisecond),
				map[bool]string{true: " + timeout", false: ""}[f.silent], bound)
			f.undo()
			waitAnswer(f.name+": repaired", eastAddr)
		})
	}
}
