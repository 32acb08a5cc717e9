package gtm

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// The traffic instances agree on health: each publishes its own verdicts
// (its view) in etcd, and a target is answered as down only when more
// than half of the instances that publish a view for it see it down. One
// instance partitioned away from a healthy target therefore changes no
// answer. An instance that cannot reach etcd's quorum goes by its own
// view, and says so (ViewMode).

// ViewMode says whose verdicts an instance answers by.
type ViewMode string

// View modes.
const (
	// Standalone: no coordination configured; the instance's own checks.
	Standalone ViewMode = "standalone"
	// Shared: the majority of the instances' views.
	Shared ViewMode = "shared"
	// Isolated: coordination is configured but etcd's quorum is out of
	// reach; the instance falls back to its own checks.
	Isolated ViewMode = "isolated"
)

// ViewsPrefix is where the traffic instances of cluster publish their
// views: /haven/<cluster>/traffic/views/<node>.
func ViewsPrefix(cluster string) string { return "/haven/" + cluster + "/traffic/views/" }

// How often an instance confirms it reaches etcd's quorum, and how long
// it waits for the answer.
const (
	quorumPoll    = 500 * time.Millisecond
	quorumTimeout = 400 * time.Millisecond
	viewTTL       = 3 * time.Second
)

// views keeps the other instances' views and whether etcd is reachable.
type views struct {
	node, prefix string
	log          *slog.Logger
	onChange     func()

	mu      sync.Mutex
	peers   map[string]map[string]bool // node → target key → up
	mode    ViewMode
	entry   *coord.Entry[map[string]bool]
	pending map[string]bool // the local view, before the entry exists
}

func newViews(node, cluster string, log *slog.Logger, onChange func()) *views {
	return &views{node: node, prefix: ViewsPrefix(cluster), log: log, onChange: onChange, mode: Isolated, pending: map[string]bool{}}
}

// publish records this instance's view.
func (v *views) publish(local map[string]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.pending = maps.Clone(local)
	if v.entry != nil {
		v.entry.Set(v.pending)
	}
}

// run publishes the local view and follows the others' on the client
// etcd returns (it waits for one), until ctx ends.
func (v *views) run(ctx context.Context, etcd func(context.Context) (*clientv3.Client, error)) {
	cli, err := etcd(ctx)
	if err != nil {
		return // stopped before etcd answered
	}
	v.mu.Lock()
	entry, err := coord.NewEntry(coord.EntryConfig[map[string]bool]{Client: cli, Key: v.prefix + v.node, Value: v.pending, TTL: viewTTL, Logger: v.log})
	if err != nil {
		v.mu.Unlock()
		v.log.Error("traffic views: cannot publish this instance's view; answering by it alone", "err", err)
		return
	}
	v.entry = entry
	v.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = entry.Run(ctx) })
	wg.Go(func() {
		_ = coord.WatchPrefix(ctx, cli, v.prefix, func(m map[string]map[string]bool) {
			delete(m, v.node) // the local view is always the live one
			v.mu.Lock()
			v.peers = m
			v.mu.Unlock()
			v.onChange()
		})
	})
	t := time.NewTicker(quorumPoll)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, quorumTimeout)
		// A linearizable read needs the quorum: it fails on a member cut
		// off from it.
		_, err := cli.Get(qctx, v.prefix+v.node)
		cancel()
		v.setReachable(err == nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// setReachable switches between Shared and Isolated; the answers are
// recomputed on a switch.
func (v *views) setReachable(ok bool) {
	v.mu.Lock()
	old := v.mode
	if ok {
		v.mode = Shared
	} else {
		v.mode = Isolated
	}
	changed := old != v.mode
	v.mu.Unlock()
	if changed {
		if ok {
			v.log.Info("traffic views: etcd's quorum reachable: answering by the instances' majority", "event", "dns")
		} else {
			v.log.Warn("traffic views: etcd's quorum out of reach: answering by this instance's own checks", "event", "dns")
		}
		v.onChange()
	}
}

// Votes are the instances' views of one target: Down of Of see it down,
// this instance's own view included.
type Votes struct {
	Down int `json:"down"`
	Of   int `json:"of"`
}

// decide returns each target's verdict: the local one when isolated,
// else down only when more than half of the views that have the target
// see it down (ties stay up), with the votes (nil when isolated).
func (v *views) decide(local map[string]bool) (map[string]bool, map[string]Votes, ViewMode) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mode != Shared {
		return local, nil, v.mode
	}
	out := make(map[string]bool, len(local))
	votes := make(map[string]Votes, len(local))
	for key, up := range local {
		down, total := 0, 1
		if !up {
			down++
		}
		for _, view := range v.peers {
			if pu, ok := view[key]; ok {
				total++
				if !pu {
					down++
				}
			}
		}
		out[key] = down*2 <= total
		votes[key] = Votes{Down: down, Of: total}
	}
	return out, votes, Shared
}

// peerCount is how many other instances publish a view.
func (v *views) peerCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.peers)
}

// viewKey names a target in the views.
func viewKey(rel, target string) string { return rel + "/" + target }
