package lb

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/haven-ha/haven/internal/lb/relay"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMetrics: the balancer's metrics pass promlint and count what
// requests did.
func TestMetrics(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	reg := prometheus.NewRegistry()
	lb := startLBOpts(t, Options{Metrics: NewMetrics(reg)}, "", "", b.addr())
	for range 3 {
		resp, err := http.Get(lb.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	rawExchange(t, lb.addr, "BAD\r\n\r\n")
	mfs := lintMetrics(t, reg)
	want := `
# HELP haven_lb_backend_responses_total Responses received from a backend by status class.
# TYPE haven_lb_backend_responses_total counter
haven_lb_backend_responses_total{backend="b1",balancer="web",class="1xx"} 0
haven_lb_backend_responses_total{backend="b1",balancer="web",class="2xx"} 3
haven_lb_backend_responses_total{backend="b1",balancer="web",class="3xx"} 0
haven_lb_backend_responses_total{backend="b1",balancer="web",class="4xx"} 0
haven_lb_backend_responses_total{backend="b1",balancer="web",class="5xx"} 0
haven_lb_backend_responses_total{backend="b1",balancer="web",class="other"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "haven_lb_backend_responses_total"); err != nil {
		t.Error(err)
	}
	var local string
	for _, mf := range mfs {
		if mf.GetName() == "haven_lb_local_responses_total" {
			for _, m := range mf.Metric {
				if m.GetCounter().GetValue() > 0 {
					local += m.String()
				}
			}
		}
	}
	if !strings.Contains(local, `value:"400"`) || strings.Count(local, "counter") != 1 {
		t.Errorf("local responses with a count: %s; want exactly one, status 400", local)
	}
	if os.Getenv("HAVEN_HTTP_LOOP") != "off" {
		// The three GETs on the event loops; the malformed one handed to
		// the goroutine path, which answers it: a request the loop does
		// not serve.
		want := `
# HELP haven_lb_loop_handoffs_total Client connections the HTTP event loops handed to a goroutine of their own, which serves them from then on, by reason: proxy (a PROXY header), request (an upgrade, Expect, a chunked or large body, a malformed head), head (too large, cut short), body (too large, cut short, slow), backend (none at hand: queued, a host name, none available), retry (one the loop cannot make), response (chunked or close-delimited), answer (haven's own).
# TYPE haven_lb_loop_handoffs_total counter
haven_lb_loop_handoffs_total{balancer="web",reason="answer"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="backend"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="body"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="head"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="proxy"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="request"} 1
haven_lb_loop_handoffs_total{balancer="web",reason="response"} 0
haven_lb_loop_handoffs_total{balancer="web",reason="retry"} 0
# HELP haven_lb_loop_requests_total Requests served on the HTTP event loops (plain HTTP; the rest go to a goroutine per connection).
# TYPE haven_lb_loop_requests_total counter
haven_lb_loop_requests_total{balancer="web"} 3
`
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "haven_lb_loop_requests_total", "haven_lb_loop_handoffs_total"); err != nil {
			t.Error(err)
		}
	}
}

// lintMetrics fails the test for each problem promlint finds in reg's
// metrics, and returns them.
func lintMetrics(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	testenv.LintMetrics(t, reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// TestTCPRelayMetric: once a TCP mode balancer has relayed a connection,
// /metrics says what it relays with: io_uring here, unless the
// environment chose otherwise (HAVEN_TCP_RELAY) or the kernel refused it.
func TestTCPRelayMetric(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	reg := prometheus.NewRegistry()
	lb := startLBOpts(t, Options{Metrics: NewMetrics(reg)}, "    mode: tcp\n", "", b.addr())
	resp, err := http.Get("http://" + lb.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "io_uring"
	if env := os.Getenv("HAVEN_TCP_RELAY"); env == "epoll" || env == "goroutines" {
		want = env
	}
	mfs := lintMetrics(t, reg)
	var got []string
	for _, mf := range mfs {
		if mf.GetName() == "haven_lb_tcp_relay_info" {
			for _, m := range mf.Metric {
				got = append(got, m.GetLabel()[0].GetValue())
			}
		}
	}
	if want == "io_uring" && len(got) == 1 && got[0] == "epoll" {
		ls, err := relay.NewRing(1)
		if err == nil {
			ls.Close()
		}
		testenv.Need(t, err == nil, "io_uring unavailable here, the relay fell back to epoll: %v", err)
	}
	if len(got) != 1 || got[0] != want {
		t.Errorf("haven_lb_tcp_relay_info relays: %v; want only %q", got, want)
	}
}
