package pg

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// fakeNode is a NodeState whose leadership the test sets.
type fakeNode struct{ leader atomic.Bool }

func (n *fakeNode) Leader() bool { return n.leader.Load() }

// taggedNode adds tags and the primary's position to a fakeNode.
type taggedNode struct {
	fakeNode
	tags       map[string]string
	primaryLSN LSN
}

func (n *taggedNode) Tags() map[string]string { return n.tags }
func (n *taggedNode) PrimaryLSN() (LSN, bool) { return n.primaryLSN, n.primaryLSN != 0 }

// healthGet sends method path to h and returns the code and, for a GET, the
// decoded body.
func healthGet(t *testing.T, h http.Handler, method, path string) (int, HealthStatus, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	var st HealthStatus
	body := rec.Body.String()
	if method == http.MethodGet && rec.Code != http.StatusNotFound && rec.Code != http.StatusBadRequest {
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, body, err)
		}
	}
	if method != http.MethodGet && body != "" && rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("%s %s: body %q; want none", method, path, body)
	}
	return rec.Code, st, body
}

// expectCodes checks the code of each path on h.
func expectCodes(t *testing.T, h http.Handler, what string, want map[string]int) {
	t.Helper()
	for path, code := range want {
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
			if got, st, body := healthGet(t, h, m, path); got != code {
				t.Errorf("%s: %s %s = %d; want %d (%+v %s)", what, m, path, got, code, st, body)
			}
		}
	}
}

func TestParseLag(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		bad  bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "1024kB", want: 1 << 20},
		{in: "16MB", want: 16 << 20},
		{in: "1GB", want: 1 << 30},
		{in: "2TB", want: 2 << 40},
		{in: "10B", want: 10},
		{in: " 1 MB ", want: 1 << 20},
		{in: "0", want: 0},
		{in: "", bad: true},
		{in: "MB", bad: true},
		{in: "1mb", bad: true},
		{in: "1.5MB", bad: true},
		{in: "-1", bad: true},
		{in: "99999999999TB", bad: true},
		{in: "18446744073709551616", bad: true},
	} {
		got, err := ParseLag(c.in)
		if c.bad != (err != nil) || got != c.want {
			t.Errorf("ParseLag(%q) = %d, %v; want %d, bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
}

func FuzzParseLag(f *testing.F) {
	for _, s := range []string{"1048576", "16MB", "1 kB", "x", "99999999999TB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseLag(s)
		if err == nil {
			if m, err := ParseLag(" " + s + " "); err != nil || m != n {
				t.Fatalf("ParseLag(%q) = %d; with spaces around %d, %v", s, n, m, err)
			}
		}
	})
}

func TestHealthHandlerRequests(t *testing.T) {
	h := NewHealthHandler(nil, nil, &fakeNode{}, 0)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/nope", http.StatusNotFound},
		{http.MethodHead, "/primary/", http.StatusNotFound},
		{http.MethodGet, "/patroni", http.StatusNotFound},
		{http.MethodPost, "/primary", http.StatusMethodNotAllowed},
		{http.MethodGet, "/replica?lag=1mb", http.StatusBadRequest},
		{http.MethodGet, "/read-only?lag=x", http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s = %d; want %d", c.method, c.path, rec.Code, c.code)
		}
	}
}

func TestHealthHandler(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	r1 := newNode(t, "r1")
	ctx := testCtx(t)

	if err := p.CreateSlot(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	pn := &fakeNode{}
	pn.leader.Store(true)
	ph := NewHealthHandler(p.Server, nil, pn, 0)

	expectCodes(t, ph, "primary with leadership", map[string]int{
		"/primary": 200, "/master": 200, "/leader": 200, "/read-write": 200, "/": 200,
		"/replica": 503, "/replica?lag=1MB": 503, "/read-only": 200, "/health": 200,
		"/unknown": 404,
	})
	_, st, _ := healthGet(t, ph, http.MethodGet, "/primary")
	if st.State != "running" || st.Role != "primary" || st.ServerVersion < 150000 || st.Timeline != 1 ||
		st.XLog == nil || st.XLog.Location == nil || *st.XLog.Location == 0 || !st.Leader || st.PostmasterStartTime == "" {
		t.Errorf("primary's status = %+v", st)
	}

	pn.leader.Store(false)
	expectCodes(t, ph, "primary without leadership", map[string]int{
		"/primary": 503, "/leader": 503, "/read-only": 503, "/replica": 503, "/health": 200,
	})
	pn.leader.Store(true)

	if err := r1.Clone(ctx, p.upstream("r1")); err != nil {
		t.Fatal(err)
	}
	p.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	waitRow(t, r1, 1)
	rn := &taggedNode{}
	rh := NewHealthHandler(r1.Server, nil, rn, 0)
	expectCodes(t, rh, "streaming replica", map[string]int{
		"/replica": 200, "/replica?lag=1MB": 200, "/replica?replication_state=streaming": 200,
		"/read-only": 200, "/read-only?lag=16MB": 200, "/health": 200,
		"/primary": 503, "/replica?tag_zone=a": 503, "/replica?replication_state=x": 503,
	})
	_, st, _ = healthGet(t, rh, http.MethodGet, "/replica")
	if st.State != "running" || st.Role != "replica" || st.ReplicationState != "streaming" || st.Timeline != 1 ||
		st.XLog == nil || st.XLog.ReplayedLocation == nil || *st.XLog.ReplayedLocation == 0 || st.Leader {
		t.Errorf("replica's status = %+v", st)
	}
	waitFor(t, "the primary lists r1", func() (string, bool) {
		_, st, _ := healthGet(t, ph, http.MethodGet, "/primary")
		return fmt.Sprintf("%+v", st.Replication), len(st.Replication) == 1 &&
			st.Replication[0].ApplicationName == "r1" && st.Replication[0].State == "streaming"
	})

	// The primary's position, from the keeper, 2 MB ahead of what r1
	// replayed; a leader wrongly set on a replica makes no primary.
	rn.primaryLSN = LSN(*st.XLog.ReplayedLocation) + 2<<20
	rn.tags = map[string]string{"zone": "a"}
	rn.leader.Store(true)
	expectCodes(t, rh, "lagging replica", map[string]int{
		"/replica?lag=1MB": 503, "/replica?lag=16MB": 200, "/replica": 200, "/replica?tag_zone=a": 200,
		"/read-only?lag=1MB": 503, "/primary": 503,
	})
	rn.tags = map[string]string{"noloadbalance": "true"}
	expectCodes(t, rh, "noloadbalance", map[string]int{"/replica": 503, "/read-only": 503, "/health": 200})

	for _, s := range []*testServer{r1, p} {
		s.stop(t)
	}
	for _, h := range []http.Handler{ph, rh} {
		expectCodes(t, h, "stopped", map[string]int{
			"/primary": 503, "/replica": 503, "/read-only": 503, "/health": 503, "/nope": 404,
		})
	}
	if _, st, _ := healthGet(t, ph, http.MethodGet, "/health"); st.State != "stopped" || st.Role != "" {
		t.Errorf("stopped primary's status = %+v", st)
	}
}
