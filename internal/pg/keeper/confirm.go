package keeper

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
// still have an entry there for a few seconds. It returns an error that says
// why the node must not promote: a reachable replica has more WAL, or (sync
// and strict mode) too few synchronous standbys answered to be sure this
// node has every acknowledged commit.
func (k *Keeper) confirmPromotion(ctx context.Context, self pg.LSN) error {
	k.mu.Lock()
	members, sync := k.members, k.sync
	k.mu.Unlock()
	syncSet := k.cfg.Mode != ModeAsync && sync.K > 0

	var peers []MemberState
	for _, m := range members {
		if m.Node == k.cfg.Node || m.NoFailover {
			continue
		}
		if syncSet && !slices.Contains(sync.Standbys, m.Node) {
			continue
		}
		peers = append(peers, m)
	}
	got := k.peerPositions(ctx, peers)

	for node, lsn := range got {
		if lsn > self {
			return fmt.Errorf("%s has received more WAL (%s, this node %s)", node, lsn, self)
		}
	}
	if err := k.caughtUp(ctx, self); err != nil {
		return err
	}
	if syncSet {
		answered := len(got)
		if slices.Contains(sync.Standbys, k.cfg.Node) {
			answered++
		}
		if need := len(sync.Standbys) - sync.K + 1; answered < need {
			return fmt.Errorf("only %d of the synchronous standbys %v answered; %d must, to be sure of every acknowledged commit", answered, sync.Standbys, need)
		}
	}
	return nil
}

// caughtUp reads the members' states from etcd (not the watch, which may
// lag the record's release) and checks that self has received the WAL a
// primary that let go wrote before it stopped (its published final
// position), within max_lag_on_failover. A crashed primary's running
// position is not asked for: in sync mode its unacknowledged tail need not
// survive, and in async mode promotable's lag rule covers it.
func (k *Keeper) caughtUp(ctx context.Context, self pg.LSN) error {
	qctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	resp, err := k.cfg.Client.Get(qctx, StatePrefix(k.cfg.Cluster, k.cfg.Name), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read the members' states: %w", err)
	}
	var last MemberState
	for _, kv := range resp.Kvs {
		var m MemberState
		if json.Unmarshal(kv.Value, &m) != nil || m.Node == k.cfg.Node {
			continue
		}
		end := m.LastPrimaryLSN
		if end != 0 && (m.Timeline > last.Timeline || m.Timeline == last.Timeline && end > last.LSN) {
			last = MemberState{Node: m.Node, Timeline: m.Timeline, LSN: end}
		}
	}
	if last.LSN > self && uint64(last.LSN-self) > k.cfg.MaxLagOnFailover {
		return fmt.Errorf("has WAL to %s, but %s wrote to %s before it let go", self, last.Node, last.LSN)
	}
	return nil
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
				k.log.Info("peer did not answer before promotion", "peer", m.Node, "error", err)
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
