package coord

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watched keeps the latest snapshot WatchMembers delivered.
type watched struct {
	mu     sync.Mutex
	latest map[string]MemberInfo
	calls  int
}

func (w *watched) set(m map[string]MemberInfo) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.latest = m
	w.calls++
}

func (w *watched) get() (map[string]MemberInfo, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.calls
}

// waitFor polls the latest snapshot until ok accepts it.
func (w *watched) waitFor(t *testing.T, what string, ok func(map[string]MemberInfo) error) {
	t.Helper()
	eventually(t, 20*time.Second, what, func(context.Context) error {
		m, calls := w.get()
		if calls == 0 {
			return fmt.Errorf("no snapshot yet")
		}
		if err := ok(m); err != nil {
			return fmt.Errorf("%w; last snapshot (after %d calls): %+v", err, calls, m)
		}
		return nil
	})
}

// runPublisher runs p until the returned stop is called; stop returns
// Run's result.
func runPublisher(t *testing.T, p *Publisher) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(stopWait):
				err = fmt.Errorf("publisher Run did not return within %v", stopWait)
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return stop
}

func equalInfo(a, b MemberInfo) bool {
	return a.Node == b.Node && a.Region == b.Region && a.Zone == b.Zone && a.Version == b.Version &&
		a.Address == b.Address && a.Started.Equal(b.Started) &&
		slices.Equal(a.Roles, b.Roles) && maps.Equal(a.Checks, b.Checks)
}

func sameInfo(got, want MemberInfo) error {
	if !equalInfo(got, want) {
		return fmt.Errorf("got %+v, want %+v", got, want)
	}
	return nil
}

// TestMembership publishes two agents on a one-member etcd and follows
// them with WatchMembers through an update, a lost lease and a stop.
func TestMembership(t *testing.T) {
	log := testLog(t)
	c := newTestClient(t, log, oneMember(t, log).m.Endpoints(), nil)

	var w watched
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- WatchMembers(wctx, c, "shop", w.set) }()
	t.Cleanup(func() {
		wcancel()
		select {
		case err := <-wdone:
			if err != nil {
				t.Errorf("WatchMembers: %v", err)
			}
		case <-time.After(stopWait):
			t.Errorf("WatchMembers did not return within %v", stopWait)
		}
	})
	w.waitFor(t, "empty snapshot", func(m map[string]MemberInfo) error {
		if len(m) != 0 {
			return fmt.Errorf("want no members")
		}
		return nil
	})

	started := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	infoA := MemberInfo{Node: "a", Region: "east", Zone: "a", Roles: []string{"etcd", "lb"}, Version: "1.0",
		Checks: map[string]string{"web": CheckUp}, Started: started, Address: "198.18.1.11"}
	infoB := MemberInfo{Node: "b", Region: "west", Zone: "b", Roles: []string{"db"}, Version: "1.0",
		Checks: map[string]string{"web": CheckUnknown}, Started: started.Add(time.Second), Address: "198.18.2.21"}
	pa, err := NewPublisher(PublisherConfig{Client: c, Cluster: "shop", Info: infoA, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := NewPublisher(PublisherConfig{Client: c, Cluster: "shop", Info: infoB, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	stopA := runPublisher(t, pa)
	runPublisher(t, pb)

	w.waitFor(t, "both members with their fields", func(m map[string]MemberInfo) error {
		if len(m) != 2 {
			return fmt.Errorf("want 2 members")
		}
		if err := sameInfo(m["a"], infoA); err != nil {
			return err
		}
		return sameInfo(m["b"], infoB)
	})

	// A health change, then a new version.
	pa.SetCheck("web", CheckDown)
	w.waitFor(t, "a's check down", func(m map[string]MemberInfo) error {
		if got := m["a"].Checks["web"]; got != CheckDown {
			return fmt.Errorf("a's web check is %q", got)
		}
		return nil
	})
	next := pa.Info()
	next.Version = "1.1"
	next.Roles = append(next.Roles, "vip")
	pa.Publish(next)
	w.waitFor(t, "a's new version and roles", func(m map[string]MemberInfo) error {
		return sameInfo(m["a"], next)
	})

	// b's lease revoked behind its back: b publishes again on a new lease.
	key := MembersPrefix("shop") + "b"
	resp, err := c.Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("get %s: %v %+v", key, err, resp)
	}
	oldLease := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := c.Revoke(context.Background(), oldLease); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "b published again on a new lease", func(ctx context.Context) error {
		resp, err := c.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%s absent", key)
		}
		lease := clientv3.LeaseID(resp.Kvs[0].Lease)
		if lease == oldLease || lease == 0 {
			return fmt.Errorf("%s still on lease %x", key, lease)
		}
		ttl, err := c.TimeToLive(ctx, lease)
		if err != nil {
			return err
		}
		if ttl.TTL <= 0 {
			return fmt.Errorf("new lease %x has TTL %d", lease, ttl.TTL)
		}
		return nil
	})
	w.waitFor(t, "b back in the snapshot", func(m map[string]MemberInfo) error {
		return sameInfo(m["b"], infoB)
	})

	// a stops: its lease is revoked and it disappears.
	if err := stopA(); err != nil {
		t.Fatalf("publisher a: %v", err)
	}
	w.waitFor(t, "a gone, b still there", func(m map[string]MemberInfo) error {
		if len(m) != 1 {
			return fmt.Errorf("want only b")
		}
		_, ok := m["b"]
		if !ok {
			return fmt.Errorf("b missing")
		}
		return nil
	})
	resp, err = c.Get(context.Background(), MembersPrefix("shop")+"a")
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("a's key after stop: %v %+v", err, resp.Kvs)
	}
}

// TestPublisherChanges checks which updates count as changes, without
// etcd.
func TestPublisherChanges(t *testing.T) {
	started := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	p, err := NewPublisher(PublisherConfig{Client: &clientv3.Client{}, Cluster: "shop",
		Info: MemberInfo{Node: "a", Started: started, Checks: map[string]string{"web": CheckUp}}})
	if err != nil {
		t.Fatal(err)
	}
	version := func() uint64 { _, v := p.entry.snapshot(); return v }
	v0 := version()

	p.SetCheck("web", CheckUp)
	if version() != v0 || len(p.entry.changed) != 0 {
		t.Error("setting a check to its state counted as a change")
	}
	p.SetCheck("web", CheckDown)
	p.SetCheck("db", CheckUnknown)
	if version() != v0+2 || len(p.entry.changed) != 1 {
		t.Errorf("two check changes: version %d (from %d), %d pending signals", version(), v0, len(p.entry.changed))
	}
	info := p.Info()
	info.Node = "renamed"
	info.Started = time.Time{}
	info.Version = "2"
	p.Publish(info)
	got := p.Info()
	if got.Node != "a" || !got.Started.Equal(started) || got.Version != "2" || got.Checks["web"] != CheckDown {
		t.Errorf("after Publish: %+v", got)
	}
	// The caller's copy is not shared.
	info.Checks["web"] = "mangled"
	if p.Info().Checks["web"] != CheckDown {
		t.Error("Publish kept the caller's map")
	}

	for _, bad := range []PublisherConfig{
		{Cluster: "shop", Info: MemberInfo{Node: "a"}},
		{Client: &clientv3.Client{}, Cluster: "", Info: MemberInfo{Node: "a"}},
		{Client: &clientv3.Client{}, Cluster: "shop", Info: MemberInfo{Node: "a/b"}},
		{Client: &clientv3.Client{}, Cluster: "shop", Info: MemberInfo{Node: "a"}, TTL: 1500 * time.Millisecond},
	} {
		if _, err := NewPublisher(bad); err == nil {
			t.Errorf("NewPublisher(%+v) succeeded", bad)
		}
	}
}

// A write of an entry's that timed out can still be carried out later (a
// frozen member reads it when it wakes): it must not undo a newer value,
// which the entry would not write again while it stays the same. A soak
// saw a promoted primary's entry put back to "replica" that way.
func TestEntryLateWriteUndoesNothing(t *testing.T) {
	log := testLog(t)
	c := newTestClient(t, log, oneMember(t, log).m.Endpoints(), nil)
	e, err := NewEntry(EntryConfig[string]{Client: c, Key: "/haven/shop/test/entry", Value: "replica", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if err := e.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	get := func() (string, int64, clientv3.LeaseID) {
		t.Helper()
		resp, err := c.Get(sctx, "/haven/shop/test/entry")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get the entry: %v, %d keys", err, len(resp.Kvs))
		}
		kv := resp.Kvs[0]
		return string(kv.Value), kv.ModRevision, clientv3.LeaseID(kv.Lease)
	}
	_, rev, lease := get()
	e.Set("primary")
	if err := e.Sync(sctx); err != nil {
		t.Fatal(err)
	}
	// The write of "replica" as the entry made it, against the revision it
	// had then, carried out only now.
	late := rev
	if err := e.put(sctx, []byte(`"replica"`), lease, &late); !errors.Is(err, ErrKeyMoved) {
		t.Errorf("a late write = %v; want ErrKeyMoved", err)
	}
	if v, _, _ := get(); v != `"primary"` {
		t.Fatalf("after a late write of the old value the entry holds %s; want \"primary\"", v)
	}
	// A value written behind the entry's back is overwritten at its next
	// change.
	if _, err := c.Put(sctx, "/haven/shop/test/entry", `"stray"`, clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	e.Set("primary, newer")
	eventually(t, 20*time.Second, "the entry's newer value", func(context.Context) error {
		if v, _, _ := get(); v != `"primary, newer"` {
			return fmt.Errorf("the entry holds %s", v)
		}
		return nil
	})
}
