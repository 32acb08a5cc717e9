package demo

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/netlab"
)

// The fourth act: two regions, each a web server, and haven's traffic
// manager answering for www.gslb.demo. with the healthy region. The demo
// asks for the name, takes the first region down, and asks again.

// TrafficResult summarises the fourth act.
type TrafficResult struct {
	// Before, During and After are what www answered with both regions up,
	// with east down, and once east was back.
	Before, During, After string
	// Moved is from east going down to the answer naming west.
	Moved time.Duration
}

// trafficHosts: dns1 198.18.1.11 (the traffic manager), east 198.18.1.12
// and west 198.18.1.13 (a region each), client 198.18.1.14.
var trafficHosts = []string{"dns1", "east", "west", "client"}

// RunTraffic plays the fourth act.
func RunTraffic(ctx context.Context, opt Options) (*TrafficResult, error) {
	opt = opt.defaults()
	st, err := newStage(ctx, "dns", netlab.Options{Hosts: trafficHosts}, func(dir string) map[string]string {
		return map[string]string{"haven.yaml": trafficConfig(dir), "token": "demo\n"}
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")
	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 4: two regions and the DNS traffic manager\n")
	fmt.Fprintf(w, "  dns1 198.18.1.11 answers for gslb.demo.; regions east 198.18.1.12 and west 198.18.1.13 (a web server each);\n")
	fmt.Fprintf(w, "  www.gslb.demo. fails over from east to west (check every 500ms, fall 2); config %s\n", cfgPath)

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	web := map[string]*netlab.Proc{}
	startWeb := func(region string) error {
		h := n.Host(region)
		p, err := h.Start(procCtx, exe, "backend", "--listen", h.Addr.String()+":8080", "--name", region)
		web[region] = p
		return err
	}
	for _, r := range []string{"east", "west"} {
		if err := startWeb(r); err != nil {
			return nil, err
		}
	}
	agent, err := n.Host("dns1").Start(procCtx, exe, "agent", "-c", cfgPath, "-n", "dns1")
	if err != nil {
		return nil, err
	}
	conn, err := n.Host("client").DialContext(ctx, "udp", "198.18.1.11:53")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ask := func() string { return askA(conn, "www.gslb.demo.") }
	waitFor := func(want string, within time.Duration) (string, error) {
		deadline := time.Now().Add(within)
		got := ""
		for time.Now().Before(deadline) {
			if got = ask(); got == want {
				return got, nil
			}
			if !sleepCtx(ctx, 20*time.Millisecond) {
				return got, ctx.Err()
			}
		}
		return got, fmt.Errorf("www.gslb.demo. answers %s, not %s, after %v\n%s", got, want, within, netlab.Outputs(20000, agent))
	}
	res := &TrafficResult{}
	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	if res.Before, err = waitFor("198.18.1.12", 30*time.Second); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "\n%s  dig www.gslb.demo. A  ->  %s (east)\n", since(time.Now()), res.Before)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	downAt := time.Now()
	_ = web["east"].Kill()
	fmt.Fprintf(w, "%s  kill -9 east's web server: the east region is down\n", since(downAt))
	if res.During, err = waitFor("198.18.1.13", 30*time.Second); err != nil {
		return res, err
	}
	res.Moved = time.Since(downAt)
	fmt.Fprintf(w, "%s  dig www.gslb.demo. A  ->  %s (west), %.2fs after east went down\n", since(time.Now()), res.During, res.Moved.Seconds())
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	if err := startWeb("east"); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "%s  east's web server restarted\n", since(time.Now()))
	if res.After, err = waitFor("198.18.1.12", 30*time.Second); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "%s  dig www.gslb.demo. A  ->  %s (east again, after 2 passing checks)\n", since(time.Now()), res.After)
	fmt.Fprintln(w, "(resolvers see a change once their cached answer expires: the record's TTL is 5s here)")
	return res, nil
}

// askA asks for name's A record over conn and returns the address, or
// what went wrong.
func askA(conn net.Conn, name string) string {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	r, _, err := (&dns.Client{}).ExchangeWithConn(q, &dns.Conn{Conn: conn})
	if err != nil {
		return "no answer (" + err.Error() + ")"
	}
	if len(r.Answer) != 1 {
		return fmt.Sprintf("%d answers (%s)", len(r.Answer), dns.RcodeToString[r.Rcode])
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return r.Answer[0].String()
}

func trafficConfig(dir string) string {
	return fmt.Sprintf(`cluster: demo-dns
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      dns1: {address: 198.18.1.11, zone: a}
checks:
  site:
    http: {port: 8080, path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 500ms
    timeout: 300ms
    rise: 2
    fall: 2
traffic:
  zone: gslb.demo.
  nameservers: [dns1]
  records:
    www:
      policy: failover
      ttl: 5s
      targets:
        - {name: east, address: 198.18.1.12, check: site}
        - {name: west, address: 198.18.1.13, check: site}
`, dir)
}
