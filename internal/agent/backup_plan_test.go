package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pg/keeper"
)

func TestBackupDue(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	h := time.Hour
	daily := backupSchedule{base: 24 * h, incr: 6 * h}
	for _, c := range []struct {
		name    string
		s       backupSchedule
		n       newestBackups
		request string
		now     time.Time
		kind    string
		next    time.Time
	}{
		{"no schedule, nothing asked", backupSchedule{}, newestBackups{}, "", t0, "", time.Time{}},
		{"no schedule, a full backup asked", backupSchedule{}, newestBackups{}, kindFull, t0, kindFull, time.Time{}},
		{"no schedule, an incremental asked, none before", backupSchedule{}, newestBackups{}, kindIncremental, t0, kindFull, time.Time{}},
		{"no schedule, an incremental asked", backupSchedule{}, newestBackups{full: t0, any: t0}, kindIncremental, t0, kindIncremental, time.Time{}},
		{"empty repository", daily, newestBackups{}, "", t0, kindFull, time.Time{}},
		{"a fresh full backup", daily, newestBackups{full: t0, any: t0}, "", t0.Add(h), "", t0.Add(6 * h)},
		{"incremental due", daily, newestBackups{full: t0, any: t0}, "", t0.Add(6 * h), kindIncremental, time.Time{}},
		{"after an incremental", daily, newestBackups{full: t0, any: t0.Add(18 * h)}, "", t0.Add(20 * h), "", t0.Add(24 * h)},
		{"full due, incremental too", daily, newestBackups{full: t0, any: t0.Add(12 * h)}, "", t0.Add(25 * h), kindFull, time.Time{}},
		{"full only, not due", backupSchedule{base: 24 * h}, newestBackups{full: t0, any: t0.Add(12 * h)}, "", t0.Add(h), "", t0.Add(24 * h)},
		{"full only, due", backupSchedule{base: 24 * h}, newestBackups{full: t0, any: t0}, "", t0.Add(24 * h), kindFull, time.Time{}},
		{"only incrementals (a full expired)", daily, newestBackups{any: t0}, "", t0.Add(h), kindFull, time.Time{}},
		{"a request before it is due", daily, newestBackups{full: t0, any: t0}, kindFull, t0.Add(h), kindFull, time.Time{}},
		{"an incremental request while a full is due", daily, newestBackups{full: t0, any: t0}, kindIncremental, t0.Add(30 * h), kindIncremental, time.Time{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			kind, next := c.s.due(c.n, c.request, c.now)
			if kind != c.kind || !next.Equal(c.next) {
				t.Errorf("due = %q, next %v; want %q, next %v", kind, next, c.kind, c.next)
			}
		})
	}
}

func TestBackupNode(t *testing.T) {
	primary := keeper.MemberState{Role: keeper.RolePrimary}
	replica := func(lag uint64) keeper.MemberState {
		return keeper.MemberState{Role: keeper.RoleReplica, Streaming: true, Upstream: "db1", Lag: lag}
	}
	notStreaming := replica(0)
	notStreaming.Streaming = false
	elsewhere := replica(0)
	elsewhere.Upstream = "db9"
	for _, c := range []struct {
		name    string
		from    string
		holder  string
		members map[string]keeper.MemberState
		want    string
	}{
		{"no primary", "replica", "", map[string]keeper.MemberState{"db2": replica(0)}, ""},
		{"holder not serving yet", "replica", "db1", map[string]keeper.MemberState{"db1": {Role: keeper.RoleStopped}, "db2": replica(0)}, ""},
		{"primary alone", "replica", "db1", map[string]keeper.MemberState{"db1": primary}, "db1"},
		{"least lag", "replica", "db1", map[string]keeper.MemberState{"db1": primary, "db2": replica(100), "db3": replica(5)}, "db3"},
		{"same lag: by name", "replica", "db1", map[string]keeper.MemberState{"db1": primary, "db3": replica(0), "db2": replica(0)}, "db2"},
		{"unhealthy replicas: the primary", "replica", "db1", map[string]keeper.MemberState{
			"db1": primary, "db2": notStreaming, "db3": {Role: keeper.RoleFailed}, "db4": elsewhere}, "db1"},
		{"from primary", "primary", "db1", map[string]keeper.MemberState{"db1": primary, "db2": replica(0)}, "db1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := backupNode(c.from, c.holder, c.members); got != c.want {
				t.Errorf("backupNode = %q, want %q", got, c.want)
			}
		})
	}
}

// holdLease calls lost when renewals stop being answered or end, and not
// while they are answered.
func TestHoldLease(t *testing.T) {
	run := func(renewals chan *clientv3.LeaseKeepAliveResponse, within time.Duration) (context.CancelFunc, <-chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		lost := make(chan error, 1)
		go holdLease(ctx, renewals, time.Now(), within, func(err error) { lost <- err })
		return cancel, lost
	}
	// Answered every few milliseconds for twice as long as within: held.
	renewals := make(chan *clientv3.LeaseKeepAliveResponse)
	within := 150 * time.Millisecond
	cancel, lost := run(renewals, within)
	for end := time.Now().Add(2 * within); time.Now().Before(end); {
		renewals <- &clientv3.LeaseKeepAliveResponse{}
		time.Sleep(3 * time.Millisecond)
	}
	select {
	case err := <-lost:
		t.Fatalf("lost while renewals were answered: %v", err)
	default:
	}
	cancel()
	// Unanswered: lost.
	cancel, lost = run(make(chan *clientv3.LeaseKeepAliveResponse), 20*time.Millisecond)
	defer cancel()
	if err := <-lost; !errors.Is(err, errLockLost) {
		t.Errorf("unanswered renewals: %v, want errLockLost", err)
	}
	// Renewing ended (the lease expired): lost.
	renewals = make(chan *clientv3.LeaseKeepAliveResponse)
	close(renewals)
	cancel2, lost := run(renewals, time.Hour)
	defer cancel2()
	if err := <-lost; !errors.Is(err, errLockLost) {
		t.Errorf("renewals ended: %v, want errLockLost", err)
	}
}
