package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/haven-ha/haven/internal/coord"
)

// steerLeader keeps etcd's leadership where it does least harm, on a node
// that runs an etcd member, checking once a second. It moves the
// leadership off this node
//
//   - while it holds a floating address: one crash would take both the
//     address's holder and etcd's leader, and the takeover would wait for an
//     etcd election on top of the lease;
//   - while its disk is slow (most write-ahead-log fsyncs over the last
//     diskWindow took longer than coord.SlowWALFsync): every commit waits
//     for the leader's fsync, and a slow leader holds up every lease in the
//     cluster.
//
// It also publishes whether this member's disk keeps up (the membership
// check coord.EtcdDiskState), so that no node moves leadership to it.
//
// A move stalls every write for a moment (raft drops proposals while its
// leadership is in transfer), and the transfer depends on its target: it
// must have caught up, its disk must keep up, and the links to it must
// carry the exchange at once. On lossy links, or to a member that has just
// returned from a partition and still applies its backlog, the stall could
// outlast a lease and a holder would lose its address over nothing. So
// leadership goes only to a member that has applied all but a few entries
// of the leader's log, whose disk keeps up, and, when this node holds an
// address, through which every copy of the holder's writes has been
// answered within a renewal period for leaderMoveClean.
// heldSingleton is a singleton this node may hold whose takeover must not
// also wait for an etcd election: the floating addresses, the Galera
// writer.
type heldSingleton interface {
	// holding reports whether this node holds it now.
	holding() bool
	// cleanSince is since when the holder's writes through the member at
	// endpoint have all gone cleanly (zero: not clean, or not held).
	cleanSince(endpoint string) time.Time
	// what names it, for the log.
	what() string
}

func (c *coordination) steerLeader(ctx context.Context, cl *etcdClients, held func() []heldSingleton) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var disk diskWatch
	// whole is since when every member has answered: from the start, until
	// a check finds one that does not.
	whole := time.Now()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		slow, why := disk.sample(time.Now())
		if c.diskSlow.Swap(slow) != slow {
			if slow {
				c.a.log.Warn("this node's etcd disk is slow: no leadership moves to it, and it gives leadership away", "why", why)
			} else {
				c.a.log.Info("this node's etcd disk keeps up again")
			}
		}
		var holds []heldSingleton
		for _, h := range held() {
			if h.holding() {
				holds = append(holds, h)
			}
		}
		holding := len(holds) > 0
		var reason string
		switch {
		case holding:
			reason = "it holds " + holds[0].what()
		case slow:
			reason = "its disk is slow: " + why
		default:
			continue
		}
		fit := func(name, endpoint string) string {
			if c.memberDiskSlow(name) {
				return name + "'s disk is slow"
			}
			if !holding {
				return ""
			}
			for _, h := range holds {
				if clean := h.cleanSince(endpoint); clean.IsZero() || time.Since(clean) < leaderMoveClean {
					return fmt.Sprintf("writes through %s have been clean for %v, not %v", name, time.Since(clean).Round(time.Millisecond), leaderMoveClean)
				}
			}
			return ""
		}
		if err := c.moveLeader(ctx, cl, &whole, fit, reason); err != nil {
			c.a.log.Debug("move etcd leadership away", "reason", reason, "err", err)
		}
	}
}

// memberDiskSlow reports whether node's agent publishes its etcd disk as
// slow.
func (c *coordination) memberDiskSlow(node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[node].Checks[coord.EtcdDiskState] == coord.CheckDown
}

// diskWatch tells from etcd's metrics whether this node's member's disk
// keeps up, over a sliding window.
type diskWatch struct {
	samples []diskSample
}

type diskSample struct {
	at          time.Time
	total, slow uint64
}

// diskWindow is how far back diskWatch looks, and minFsyncs how many fsyncs
// it wants in that time before it judges.
const (
	diskWindow = 5 * time.Second
	minFsyncs  = 10
)

// sample takes a reading of etcd's metrics and says whether the disk is
// slow now, and why.
func (d *diskWatch) sample(now time.Time) (bool, string) {
	total, slow, err := coord.WALFsyncs(prometheus.DefaultGatherer)
	if err != nil {
		return false, ""
	}
	return d.add(now, total, slow)
}

// add judges a reading of the fsync counters taken at now against the
// oldest one still in the window: slow when there were at least minFsyncs
// fsyncs and most of them were slow.
func (d *diskWatch) add(now time.Time, total, slow uint64) (bool, string) {
	d.samples = append(d.samples, diskSample{now, total, slow})
	for len(d.samples) > 1 && now.Sub(d.samples[1].at) >= diskWindow {
		d.samples = d.samples[1:]
	}
	first := d.samples[0]
	n, s := total-first.total, slow-first.slow
	if n < minFsyncs || 2*s <= n {
		return false, ""
	}
	return true, fmt.Sprintf("%d of %d write-ahead-log fsyncs in the last %v took longer than %v", s, n, now.Sub(first.at).Round(time.Second), time.Duration(coord.SlowWALFsync*float64(time.Second)))
}

// Leadership moves only to a follower this close to the leader's log, in
// entries received and applied, once every member has answered for
// leaderMoveSettle (since the start, or since a check last found one that
// did not), and, from a holder, once its writes through the target have
// been clean for leaderMoveClean.
const (
	leaderMoveSettle = 900 * time.Millisecond
	leaderMoveMaxLag = 64 // raft entries
	leaderMoveClean  = 5 * time.Second
)

// moveLeader moves etcd's leadership from this node's member, if it leads,
// to the first follower that is caught up and that fit (given its name and
// client URL) does not object to.
func (c *coordination) moveLeader(ctx context.Context, cl *etcdClients, whole *time.Time, fit func(name, endpoint string) string, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cli := cl.all
	self := c.ownMember().Endpoints()[0]
	st, err := cli.Status(ctx, self)
	if err != nil || st.Leader != st.Header.MemberId {
		return err // not the leader: nothing to do
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var target *etcdserverpb.Member
	var why []string
	for _, m := range list.Members {
		if len(m.ClientURLs) == 0 {
			*whole = time.Time{}
			return fmt.Errorf("member %s has no client URL yet", m.Name)
		}
		ms, err := cli.Status(ctx, m.ClientURLs[0])
		if err != nil {
			*whole = time.Time{}
			return fmt.Errorf("member %s is not healthy: %w", m.Name, err)
		}
		if m.ID == st.Header.MemberId || m.IsLearner || target != nil {
			continue
		}
		lag := func(i uint64) uint64 { return st.RaftIndex - min(st.RaftIndex, i) }
		if lag(ms.RaftIndex) > leaderMoveMaxLag || lag(ms.RaftAppliedIndex) > leaderMoveMaxLag {
			why = append(why, fmt.Sprintf("%s is %d entries behind (%d applied)", m.Name, lag(ms.RaftIndex), lag(ms.RaftAppliedIndex)))
			continue
		}
		if no := fit(m.Name, m.ClientURLs[0]); no != "" {
			why = append(why, no)
			continue
		}
		target = m
	}
	if whole.IsZero() {
		*whole = time.Now()
	}
	if since := time.Since(*whole); since < leaderMoveSettle {
		return fmt.Errorf("cluster whole for only %v", since.Round(time.Millisecond))
	}
	if target == nil {
		return fmt.Errorf("no follower to move etcd leadership to: %s", strings.Join(why, "; "))
	}
	// MoveLeader must reach the leader itself: the client of this node's
	// member alone.
	if cl.own == cli {
		return errors.New("no client of this node's own etcd member (see the earlier warning)")
	}
	if _, err := cl.own.MoveLeader(ctx, target.ID); err != nil {
		return fmt.Errorf("move etcd leadership to %s: %w", target.Name, err)
	}
	c.a.log.Info("moved etcd leadership off this node", "to", target.Name, "because", reason)
	return nil
}
