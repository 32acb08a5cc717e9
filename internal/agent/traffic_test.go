package agent

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/miekg/dns"
)

// healthz serves /healthz "ok" on addr until stopped.
type healthz struct {
	srv  *http.Server
	done chan struct{}
}

func startHealthz(t *testing.T, addr string) *healthz {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := &healthz{srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })}, done: make(chan struct{})}
	go func() { h.srv.Serve(ln); close(h.done) }()
	t.Cleanup(h.stop)
	return h
}

func (h *healthz) stop() {
	h.srv.Close()
	<-h.done
}

// A node among traffic.nameservers answers for the zone; the failover
// name's answer follows its targets' health checks, and the first answer
// after the start already reflects them.
func TestAgentRunsTheTrafficManager(t *testing.T) {
	probe := freeAddr(t) // 127.0.0.1:P: the targets are 127.0.0.2 and .3 on P
	_, port, _ := net.SplitHostPort(probe)
	dnsAddr := freeAddr(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		moreChecks: fmt.Sprintf("  site:\n    http: {port: %s, path: /healthz}\n    interval: 1s\n    timeout: 1s\n    rise: 1\n    fall: 2\n", port),
		traffic: fmt.Sprintf(`{zone: gslb.test., nameservers: [lb1], listen: %q, records: {www: {policy: failover, ttl: 5s, targets: [
  {name: east, address: 127.0.0.2, check: site}, {name: west, address: 127.0.0.3, check: site}]}}}`, dnsAddr),
	}
	startHealthz(t, "127.0.0.3:"+port)
	// east accepts connections and never answers: its first verdict takes
	// the check's 1 s timeout, while west's comes at once. Answers given
	// before east's verdict would name east.
	silent, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	e := newEnv(t, c)
	e.run()
	www := func() (string, error) {
		q := new(dns.Msg)
		q.SetQuestion("www.gslb.test.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, dnsAddr)
		if err != nil {
			return "", err
		}
		if len(r.Answer) != 1 || !r.Authoritative {
			return "", fmt.Errorf("answer %v, aa %v", r.Answer, r.Authoritative)
		}
		return r.Answer[0].(*dns.A).A.String(), nil
	}
	// east is down from the start: the first answer already says west.
	var first string
	testenv.Poll(t, 20*time.Second, "an answer from the traffic manager", func() (bool, string) {
		a, err := www()
		first = a
		return err == nil, fmt.Sprint(err)
	})
	if first != "127.0.0.3" {
		t.Errorf("first answer %s, want west (127.0.0.3): east never passed a check", first)
	}
	silent.Close()
	east := startHealthz(t, "127.0.0.2:"+port)
	waitAnswer := func(want string) {
		t.Helper()
		testenv.Poll(t, 10*time.Second, "www answers "+want, func() (bool, string) {
			a, err := www()
			return err == nil && a == want, fmt.Sprint(a, err)
		})
	}
	waitAnswer("127.0.0.2")
	east.stop()
	waitAnswer("127.0.0.3")
	if r, err := try("GET", e.adminURL("/api/v1/status")); err != nil || !strings.Contains(r.body, `"traffic"`) {
		t.Errorf("the status API has no traffic section: %v", err)
	}
	r, err := try("GET", e.adminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`haven_dns_target_up{name="www.gslb.test.",target="east",zone="gslb.test."} 0`,
		`haven_dns_target_up{name="www.gslb.test.",target="west",zone="gslb.test."} 1`,
		`haven_dns_responses_total{rcode="NOERROR",zone="gslb.test."}`,
		`haven_dns_queries_total{transport="udp",zone="gslb.test."}`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A reload changes the names in place: west gives way to north
	// (unchecked), and a new name answers at once.
	e.c.traffic = fmt.Sprintf(`{zone: gslb.test., nameservers: [lb1], listen: %q, records: {
  www: {policy: failover, ttl: 5s, targets: [{name: east, address: 127.0.0.2, check: site}, {name: north, address: 127.0.0.4}]},
  api: {policy: failover, targets: [{name: a, address: 127.0.0.5}]}}}`, dnsAddr)
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitAnswer("127.0.0.4")
	q := new(dns.Msg)
	q.SetQuestion("api.gslb.test.", dns.TypeA)
	if r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, dnsAddr); err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.5" {
		t.Errorf("the name the reload added: %v %v", r, err)
	}
	// Leaving traffic.nameservers stops the traffic manager.
	e.c.traffic = strings.Replace(e.c.traffic, "nameservers: [lb1]", "nameservers: [lb2]", 1)
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if a, err := www(); err == nil {
		t.Errorf("still answering (%s) after leaving traffic.nameservers", a)
	}
}
