package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// keepLeaderAway moves etcd's leadership off this node while holding()
// says it holds a floating address. Otherwise one crash takes both the
// address's holder and etcd's leader, and the takeover waits for an etcd
// election on top of the lease. A move stalls every write for a moment
// (raft drops proposals while its leadership is in transfer): holding()
// also says since when the holder's writes have all gone cleanly, and the
// move waits for leaderMoveClean of that, so that it never lands on lossy
// links, where the stall could outlast the lease.
func (c *coordination) keepLeaderAway(ctx context.Context, cl *etcdClients, holding func() (bool, time.Time)) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// whole is since when every member has answered: from the start, until
	// a check finds one that does not.
	whole := time.Now()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		held, clean := holding()
		if !held {
			continue
		}
		if clean.IsZero() || time.Since(clean) < leaderMoveClean {
			c.a.log.Debug("move etcd leadership away: not yet; the holder's writes have not gone cleanly for long enough", "clean_for", time.Since(clean).Round(time.Millisecond))
			continue
		}
		if err := c.moveLeader(ctx, cl, &whole); err != nil {
			c.a.log.Debug("move etcd leadership away", "err", err)
		}
	}
}

// Leadership moves only to a follower this close to the leader's log, and
// only once every member has answered for leaderMoveSettle (since the start,
// or since a check last found one that did not): raft drops proposals while
// a transfer waits for its target to catch up, and the renewals of the
// address this node holds would stall past their deadline. After a
// partition heals, a rejoining member catches up first.
const (
	leaderMoveSettle = 900 * time.Millisecond
	leaderMoveMaxLag = 64 // raft entries
	leaderMoveClean  = 5 * time.Second
)

func (c *coordination) moveLeader(ctx context.Context, cl *etcdClients, whole *time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cli := cl.all
	self := c.member.Endpoints()[0]
	st, err := cli.Status(ctx, self)
	if err != nil || st.Leader != st.Header.MemberId {
		return err // not the leader: nothing to do
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var target *etcdserverpb.Member
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
		if m.ID != st.Header.MemberId && !m.IsLearner && target == nil && st.RaftIndex-min(st.RaftIndex, ms.RaftIndex) <= leaderMoveMaxLag {
			target = m
		}
	}
	if whole.IsZero() {
		*whole = time.Now()
	}
	if since := time.Since(*whole); since < leaderMoveSettle {
		return fmt.Errorf("cluster whole for only %v", since.Round(time.Millisecond))
	}
	if target == nil {
		return errors.New("no follower caught up to move etcd leadership to")
	}
	// MoveLeader must reach the leader itself: the client of this node's
	// member alone.
	if cl.own == cli {
		return errors.New("no client of this node's own etcd member (see the earlier warning)")
	}
	if _, err := cl.own.MoveLeader(ctx, target.ID); err != nil {
		return fmt.Errorf("move etcd leadership to %s: %w", target.Name, err)
	}
	c.a.log.Info("moved etcd leadership off this node while it holds a floating address", "to", target.Name)
	return nil
}
