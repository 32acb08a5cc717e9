package keeper

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/coord"
)

func TestRoutesFrom(t *testing.T) {
	member := func(node, role string, lag uint64) MemberState {
		return MemberState{Node: node, Host: "198.18.1." + node[len(node)-1:], Port: 5432, Role: role, Lag: lag}
	}
	members := map[string]MemberState{
		"db1": member("db1", RolePrimary, 0),
		"db2": member("db2", RoleReplica, 100),
		"db3": member("db3", RoleReplica, 5000),
		"db4": member("db4", RoleStopped, 0),
	}
	for _, tc := range []struct {
		name        string
		holder      string
		members     map[string]MemberState
		wantPrimary string
		wantAddrs   []string
	}{
		{"the holder that has promoted", "db1", members, "198.18.1.1:5432", []string{"198.18.1.2:5432"}},
		{"a holder that has not promoted yet: no primary", "db2", members, "", []string{"198.18.1.2:5432"}},
		{"a former primary that still says primary but lost the record", "", members, "", []string{"198.18.1.2:5432"}},
		{"a holder with no published state", "db9", members, "", []string{"198.18.1.2:5432"}},
		{"no members at all", "db1", nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := RoutesFrom(tc.holder, tc.members, 1000)
			if r.PrimaryAddr != tc.wantPrimary {
				t.Errorf("primary = %q, want %q", r.PrimaryAddr, tc.wantPrimary)
			}
			if !slices.Equal(r.Addrs, tc.wantAddrs) {
				t.Errorf("replicas = %v, want %v (the lagging db3 and the stopped db4 are left out)", r.Addrs, tc.wantAddrs)
			}
		})
	}
}

// TestWatchRoutes follows the keys a failover writes, as the keepers
// write them, and checks what a router would see at each step.
func TestWatchRoutes(t *testing.T) {
	etcd := startEtcd(t)
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{etcd}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := cli.Put(ctx, key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	record := coord.OwnerPrefix("c", "pg", "main") + "/record"
	state := func(node, role string) {
		put(StatePrefix("c", "main")+node, MemberState{Node: node, Host: "198.18.1." + node[2:], Port: 5432, Role: role})
	}
	state("db1", RolePrimary)
	state("db2", RoleReplica)
	put(record, coord.Record{Holder: "db1", Epoch: 7, LeaseMS: 1000})

	got := make(chan Routes, 16)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- WatchRoutes(wctx, cli, "c", "main", 1<<20, func(r Routes) { got <- r }) }()
	expect := func(step, primary string, replicas ...string) {
		t.Helper()
		for {
			select {
			case r := <-got:
				if r.Primary == primary && slices.Equal(r.Replicas, replicas) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("%s: never saw primary %q, replicas %v", step, primary, replicas)
			}
		}
	}
	expect("start", "db1", "db2")
	// A failover: the record passes to db2, which then promotes.
	put(record, coord.Record{Holder: "db2", Epoch: 9, LeaseMS: 1000})
	expect("db2 holds the record but has not promoted", "", "db2")
	state("db2", RolePrimary)
	expect("db2 promoted (db1's stale entry still says primary)", "db2")
	state("db1", RoleReplica)
	expect("db1 rejoined", "db2", "db1")
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchRoutes returned %v after its context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchRoutes did not return after its context ended")
	}
}
