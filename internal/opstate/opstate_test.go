package opstate

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord/coordtest"
	"github.com/haven-ha/haven/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func client(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// watcher is one agent's view: the last set Watch applied.
type watcher struct {
	mu   sync.Mutex
	last []Record
}

func (w *watcher) apply(rs []Record) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = rs
}

func (w *watcher) values() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, r := range w.last {
		out = append(out, r.Backend+" "+r.What+" "+r.Value)
	}
	slices.Sort(out)
	return out
}

func (w *watcher) waitFor(t *testing.T, what string, want ...string) {
	t.Helper()
	testenv.Poll(t, 10*time.Second, what, func() (bool, string) {
		got := w.values()
		return slices.Equal(got, want), strings.Join(got, "; ")
	})
}

// TestRecordsReachEveryWatcher: two agents watching see every override
// as it is written, changed, deleted and as it ends by itself; one that
// starts watching later sees the overrides already in place.
func TestRecordsReachEveryWatcher(t *testing.T) {
	url, _ := coordtest.StartMember(t)
	cli := client(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	var a, b, late watcher
	go Watch(ctx, client(t, url), "c", a.apply, log)
	go Watch(ctx, client(t, url), "c", b.apply, log)

	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(Put(ctx, cli, "c", Record{Balancer: "web", Backend: "app1", What: State, Value: "drain", Owner: "ops@laptop", Set: now}))
	must(Put(ctx, cli, "c", Record{Balancer: "web", Backend: "app2", What: Weight, Value: "50", Owner: "ops@laptop", Set: now}))
	must(Put(ctx, cli, "c", Record{Balancer: "web", Backend: "app3", What: State, Value: "maint", Owner: "ops@laptop", Set: now, Until: now.Add(5 * time.Second)}))
	for _, w := range []*watcher{&a, &b} {
		w.waitFor(t, "every watcher sees the three overrides", "app1 state drain", "app2 weight 50", "app3 state maint")
	}
	go Watch(ctx, client(t, url), "c", late.apply, log)
	late.waitFor(t, "a watcher started later sees the overrides in place", "app1 state drain", "app2 weight 50", "app3 state maint")

	must(Put(ctx, cli, "c", Record{Balancer: "web", Backend: "app1", What: State, Value: "maint", Owner: "ops@laptop", Set: now}))
	if ok, err := Delete(ctx, cli, "c", "web", "app2", Weight); err != nil || !ok {
		t.Fatalf("delete app2's weight: %v, %v", ok, err)
	}
	// app3's maintenance ends by itself (its lease), with no agent's help.
	for _, w := range []*watcher{&a, &b, &late} {
		w.waitFor(t, "every watcher sees the change, the delete and the end", "app1 state maint")
		// (waitFor polls for 10 s: app3's 5 s lease ends within it.)
	}
	rs, _, _, err := List(ctx, cli, "c")
	if err != nil || len(rs) != 1 || rs[0].Owner != "ops@laptop" || !rs[0].Set.Equal(now) {
		t.Fatalf("List = %+v, %v; want app1's record with its owner and time", rs, err)
	}
}

// TestBadRecords: Put refuses what no balancer could apply, and a key
// someone wrote by hand that does not decode is skipped, not applied.
// A traffic target's drain has its own key, apart from a backend of a
// balancer with the same names.
func TestDNSRecordKey(t *testing.T) {
	dns := Record{Kind: KindDNS, Balancer: "www", Backend: "east", What: State, Value: "drain", Until: time.Now().Add(time.Hour)}
	lb := Record{Balancer: "www", Backend: "east", What: State, Value: "drain"}
	if err := dns.Valid(); err != nil {
		t.Fatal(err)
	}
	if got := dns.Key("c"); got != "/haven/c/operator/dns/www/east/state" || got == lb.Key("c") {
		t.Errorf("dns record key %q (the balancer's: %q)", got, lb.Key("c"))
	}
}

func TestBadRecords(t *testing.T) {
	for _, r := range []Record{
		{Balancer: "web", Backend: "app1", What: State, Value: "off"},
		{Balancer: "web", Backend: "app1", What: Weight, Value: "300"},
		{Balancer: "web", Backend: "app1", What: Weight, Value: "5x"},
		{Balancer: "web", Backend: "a/b", What: State, Value: "drain"},
		{Balancer: "", Backend: "app1", What: State, Value: "drain"},
		{Balancer: "web", Backend: "app1", What: "colour", Value: "red"},
		{Kind: KindDNS, Balancer: "www", Backend: "east", What: State, Value: "maint", Until: time.Now().Add(time.Hour)},
		{Kind: KindDNS, Balancer: "www", Backend: "east", What: Weight, Value: "5", Until: time.Now().Add(time.Hour)},
		{Kind: KindDNS, Balancer: "www", Backend: "east", What: State, Value: "drain"}, // no end
		{Kind: "queue", Balancer: "www", Backend: "east", What: State, Value: "drain"},
	} {
		if err := r.Valid(); err == nil {
			t.Errorf("%+v is valid", r)
		}
	}
	url, _ := coordtest.StartMember(t)
	cli := client(t, url)
	ctx := context.Background()
	if _, err := cli.Put(ctx, Prefix("c")+"lb/web/app1/state", "{not json"); err != nil {
		t.Fatal(err)
	}
	if err := Put(ctx, cli, "c", Record{Balancer: "web", Backend: "app2", What: State, Value: "drain", Until: time.Now().Add(-time.Second)}); err == nil {
		t.Error("a record that ended in the past was written")
	}
	rs, _, bad, err := List(ctx, cli, "c")
	if err != nil || len(rs) != 0 || len(bad) != 1 {
		t.Fatalf("List over a hand-written bad key = %+v, bad %v, %v", rs, bad, err)
	}
}
