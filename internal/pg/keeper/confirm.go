package keeper

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pg"
)

// confirmTimeout bounds each question to a peer before a promotion.
const confirmTimeout = time.Second

// confirmPromotion asks the other replicas' postgres, over TCP, how far
// they have received WAL, right before this node promotes: the positions
// they published in etcd may be a tick old, and a replica that is gone may
// still have an entry there for a few seconds. It also reads the members'
// states from etcd (not the watch, which may lag the record's release). It
// returns why the node must not promote (the machine's confirm), or nil
// and the states it read.
func (k *Keeper) confirmPromotion(ctx context.Context, v view, self pg.LSN) ([]MemberState, error) {
	got := k.peerPositions(ctx, k.m.promotionPeers(v))
	states, err := k.readStates(ctx)
	return states, k.m.confirm(self, got, states, err, v.sync)
}

// readStates reads every member's published state from etcd.
func (k *Keeper) readStates(ctx context.Context) ([]MemberState, error) {
	qctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	resp, err := k.cfg.Client.Get(qctx, StatePrefix(k.cfg.Cluster, k.cfg.Name), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var states []MemberState
	for _, kv := range resp.Kvs {
		var m MemberState
		if json.Unmarshal(kv.Value, &m) == nil {
			states = append(states, m)
		}
	}
	return states, nil
}

// promotionPeers are the replicas a node asks before it promotes: every
// other member not tagged nofailover; only the synchronous standbys while
// commits wait for some.
func (m *machine) promotionPeers(v view) []MemberState {
	syncSet := m.cfg.mode != ModeAsync && v.sync.K > 0
	var peers []MemberState
	for _, p := range v.members {
		if p.Node == m.cfg.node || p.NoFailover {
			continue
		}
		if syncSet && !slices.Contains(v.sync.Standbys, p.Node) {
			continue
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b MemberState) int { return strings.Compare(a.Node, b.Node) })
	return peers
}

// confirm says why the node, with WAL to self, must not promote, or nil,
// from what the peers answered (answers, node to position), the members'
// states freshly read from etcd (or the error of that read) and the sync
// record rec:
//   - a peer that answered has received more WAL;
//   - a primary that let go published where its WAL ended
//     (LastPrimaryLSN), and self lacks more than max_lag_on_failover of it
//     (0 outside async mode): a planned handover loses nothing even when
//     sync mode had degraded. A crashed primary's running position is not
//     asked for: in sync mode its unacknowledged tail need not survive, and
//     in async mode promotable's lag rule covers it;
//   - sync and strict mode: fewer than len(Standbys)-K+1 of the
//     synchronous standbys (this node among them) answered, so none of
//     them may be sure to have every acknowledged commit.
func (m *machine) confirm(self pg.LSN, answers map[string]pg.LSN, states []MemberState, statesErr error, rec SyncState) error {
	for _, node := range slices.Sorted(maps.Keys(answers)) {
		if lsn := answers[node]; lsn > self {
			return fmt.Errorf("%s has received more WAL (%s, this node %s)", node, lsn, self)
		}
	}
	if statesErr != nil {
		return fmt.Errorf("read the members' states: %w", statesErr)
	}
	if last := m.lastToLetGo(states); last.LastPrimaryLSN > self && uint64(last.LastPrimaryLSN-self) > m.cfg.maxLag {
		return fmt.Errorf("has WAL to %s, but %s wrote to %s before it let go", self, last.Node, last.LastPrimaryLSN)
	}
	if m.cfg.mode != ModeAsync && rec.K > 0 {
		answered := len(answers)
		if slices.Contains(rec.Standbys, m.cfg.node) {
			answered++
		}
		if need := len(rec.Standbys) - rec.K + 1; answered < need {
			return fmt.Errorf("only %d of the synchronous standbys %v answered; %d must, to be sure of every acknowledged commit", answered, rec.Standbys, need)
		}
	}
	return nil
}

// lastToLetGo returns the state of the other node that let go of the lead
// last, as states show it: the one that published where its WAL ended, on
// the newest timeline, then the furthest (zero when none did).
func (m *machine) lastToLetGo(states []MemberState) MemberState {
	var last MemberState
	for _, st := range states {
		if st.Node == m.cfg.node || st.LastPrimaryLSN == 0 {
			continue
		}
		if last.Node == "" || st.Timeline > last.Timeline || st.Timeline == last.Timeline && st.LastPrimaryLSN > last.LastPrimaryLSN {
			last = st
		}
	}
	return last
}

// checkpointWait bounds how long a node about to promote waits to receive
// the old primary's shutdown checkpoint (awaitCheckpoint).
const checkpointWait = 3 * time.Second

// checkpointGate is what awaitCheckpoint decided.
type checkpointGate struct {
	// wait: do not promote this round.
	wait bool
	// waited is how long the node has waited so far (under this lead);
	// when it is not zero and wait is false, the node gave up waiting.
	waited time.Duration
	// from is the old primary, whose shutdown checkpoint runs from start
	// to end; self is how far this node has received WAL.
	from             string
	start, end, self pg.LSN
}

// awaitCheckpoint decides whether a node about to promote under the lead
// of epoch, with WAL received to self, waits for the shutdown checkpoint
// of the primary it succeeds, from the members' states freshly read from
// etcd. The primary that let go last (as confirm finds it) published where
// its latest checkpoint starts and, after a clean stop, where it ends. A
// node that has received to its start but not to its end lacks that one
// record: promoted now, it would fork its timeline before it, and the old
// primary, whose WAL goes on past the fork, would need pg_rewind to follow
// (which would discard only that checkpoint). A fast shutdown sends it to
// every replica that streams before postgres exits, so a successor
// normally has it by the time the record is released; one that does not
// waits, from the first round it sees that under this lead, for
// checkpointWait, and then promotes without it. It never waits when it
// has the end, when the old primary published no end (it did not stop
// cleanly: there is nothing to wait for), or when it lacks more than the
// checkpoint (confirm decides that).
func (m *machine) awaitCheckpoint(now time.Time, epoch int64, self pg.LSN, states []MemberState) checkpointGate {
	last := m.lastToLetGo(states)
	g := checkpointGate{from: last.Node, start: last.LastPrimaryLSN, end: last.LastPrimaryEnd, self: self}
	if g.end == 0 || self < g.start || self >= g.end {
		return g
	}
	if m.ckptEpoch != epoch || m.ckptSince.IsZero() {
		m.ckptEpoch, m.ckptSince = epoch, now
	}
	g.waited = now.Sub(m.ckptSince)
	g.wait = g.waited < checkpointWait
	return g
}

// peerPositions asks each peer's postgres, in parallel, how far it has
// received (or replayed) WAL; peers that do not answer within
// confirmTimeout, or that are not replicas of this cluster, are left out.
func (k *Keeper) peerPositions(ctx context.Context, peers []MemberState) map[string]pg.LSN {
	var mu sync.Mutex
	got := map[string]pg.LSN{}
	var wg sync.WaitGroup
	for _, m := range peers {
		wg.Go(func() {
			lsn, err := k.peerPosition(ctx, m)
			if err != nil {
				k.log.Info("peer did not answer before promotion", "peer", m.Node, "err", err)
				return
			}
			mu.Lock()
			got[m.Node] = lsn
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

func (k *Keeper) peerPosition(ctx context.Context, m MemberState) (pg.LSN, error) {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	up := k.cfg.Replication
	up.Host, up.Port = m.Host, m.Port
	p, err := pg.QueryPeer(ctx, up, k.cfg.Node+"_failover")
	if err != nil {
		return 0, err
	}
	if !p.InRecovery {
		return 0, fmt.Errorf("%s is not in recovery", m.Node)
	}
	if want := k.State().SystemID; want != 0 && p.SystemID != want {
		return 0, fmt.Errorf("%s holds another database (system identifier %d)", m.Node, p.SystemID)
	}
	return max(p.Received, p.Replayed), nil
}
