package volume

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func testStorage(t *testing.T, settings map[string]string) *Storage {
	t.Helper()
	s, err := NewStorage(StorageConfig{
		Volume: "files", Node: "st1", PingTimeout: 2500 * time.Millisecond,
		Bricks: []Brick{{Node: "st1", Address: "198.18.1.11", Path: "/b"}, {Node: "st2", Address: "198.18.1.12", Path: "/b"}, {Node: "st3", Address: "198.18.1.13", Path: "/b", Arbiter: true}},
		Allow:  []string{"198.18.1.11", "198.18.1.12", "198.18.1.13", "198.18.1.31"}, Settings: settings,
		CLI: &CLI{Sock: "/nonexistent"}, Lock: func(context.Context) (func(), error) { return func() {}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func option(opts [][2]string, key string) (string, int) {
	i := slices.IndexFunc(opts, func(o [2]string) bool { return o[0] == key })
	if i < 0 {
		return "", -1
	}
	return opts[i][1], i
}

func TestOptions(t *testing.T) {
	opts := testStorage(t, map[string]string{"performance.cache-size": "64MB", "cluster.heal-timeout": "120"}).Options()
	for key, want := range map[string]string{
		"network.ping-timeout":       "3", // 2.5s rounds up: never shorter than asked
		"cluster.quorum-type":        "auto",
		"cluster.server-quorum-type": "server",
		"cluster.self-heal-daemon":   "on",
		"cluster.heal-timeout":       "120", // the operator's replaces haven's default
		"auth.allow":                 "198.18.1.11,198.18.1.12,198.18.1.13,198.18.1.31",
		"performance.cache-size":     "64MB",
	} {
		if got, _ := option(opts, key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	seen := map[string]bool{}
	for _, o := range opts {
		if seen[o[0]] {
			t.Errorf("%s is set twice: the reconciliation would flip it every round", o[0])
		}
		seen[o[0]] = true
	}
	if _, i := option(opts, "performance.cache-size"); i != len(opts)-1 {
		t.Errorf("the operator's options come after haven's: %v", opts)
	}
}

func TestReporter(t *testing.T) {
	bricks := testStorage(t, nil).cfg.Bricks
	for _, c := range []struct {
		self string
		pool []Peer
		want string
	}{
		{"198.18.1.11", nil, "198.18.1.11"},
		{"198.18.1.12", []Peer{{Hostname: "198.18.1.11", Connected: true}}, "198.18.1.11"},
		{"198.18.1.12", []Peer{{Hostname: "198.18.1.11"}, {Hostname: "198.18.1.13", Connected: true}}, "198.18.1.12"},
		{"198.18.1.13", []Peer{{Hostname: "198.18.1.11"}, {Hostname: "198.18.1.12"}}, "198.18.1.13"},
	} {
		if got := reporter(bricks, c.self, c.pool); got != c.want {
			t.Errorf("self %s, pool %+v: reporter %s, want %s", c.self, c.pool, got, c.want)
		}
	}
}

// TestMetricsLint lints the volume metrics of a storage node and a mount
// node, as Prometheus would scrape them.
func TestMetricsLint(t *testing.T) {
	s := testStorage(t, nil)
	s.status = Status{Volume: "files", State: "Started", ClientQuorum: true, ServerQuorum: true, Reporter: true,
		Bricks: []BrickStatus{{Brick: s.cfg.Bricks[0], Online: true, HealKnown: true, Pending: 3}, {Brick: s.cfg.Bricks[1], Online: true, HealKnown: true}, {Brick: s.cfg.Bricks[2]}},
		Peers:  []Peer{{Hostname: "198.18.1.12", Connected: true}, {Hostname: "198.18.1.13"}}}
	m := &Mount{cfg: MountConfig{Volume: "files", Path: "/nonexistent"}}
	m.last = MountStatus{Volume: "files", Healthy: true}
	reg := prometheus.NewPedanticRegistry()
	cp, _ := NewCopier(CopyConfig{Volume: "files", Dir: "/nonexistent", Store: fakeStore{}})
	cp.st = CopyStatus{Copying: true, LastPass: time.Now().Add(-time.Minute), Files: 3, Passes: 2}
	reg.MustRegister(NewCollector([]*Storage{s}, []*Mount{m}, []*Copier{cp}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"haven_volume_bricks_online", "haven_volume_heal_pending_entries", "haven_volume_quorum_met", "haven_volume_mount_up", "haven_volume_brick_restarts_total", "haven_volume_copy_lag_seconds", "haven_volume_copy_passes_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s in %s", want, strings.Join(names, ", "))
		}
	}
}

// fakeStore is a repository that holds nothing: the metrics' copier never
// copies.
type fakeStore struct{ repo.Repository }

func (fakeStore) String() string { return "fake://" }
