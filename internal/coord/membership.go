package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CheckUp, CheckDown and CheckUnknown are the states of a check in
// MemberInfo.Checks (the strings of health.State).
const (
	CheckUp      = "up"
	CheckDown    = "down"
	CheckUnknown = "unknown"
)

// DefaultMemberTTL is how long a member's entry outlives its agent: an
// agent that dies, or that is cut off from a quorum, disappears from the
// member list this long after its last lease renewal.
const DefaultMemberTTL = 5 * time.Second

const (
	// retryMin and retryMax bound the backoff between attempts to
	// publish or watch while etcd is unavailable.
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
	// revokeTimeout bounds revoking the lease when a Publisher stops.
	revokeTimeout = 2 * time.Second
)

// MemberInfo is what an agent publishes about itself.
type MemberInfo struct {
	Node    string   `json:"node"`
	Region  string   `json:"region,omitempty"`
	Zone    string   `json:"zone,omitempty"`
	Roles   []string `json:"roles,omitempty"`
	Version string   `json:"version,omitempty"`
	// Checks maps a check name to CheckUp, CheckDown or CheckUnknown.
	Checks  map[string]string `json:"checks,omitempty"`
	Started time.Time         `json:"started"`
	// Address is the node's address (as in haven.yaml).
	Address string `json:"address,omitempty"`
}

func (i MemberInfo) clone() MemberInfo {
	i.Roles = slices.Clone(i.Roles)
	i.Checks = maps.Clone(i.Checks)
	return i
}

// MembersPrefix is the key prefix under which the agents of a haven cluster
// publish themselves: /haven/<cluster>/members/.
func MembersPrefix(cluster string) string { return "/haven/" + cluster + "/members/" }

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Client  *clientv3.Client
	Cluster string
	// Info is published first; Info.Node names the key. Info.Started
	// defaults to the time NewPublisher is called.
	Info MemberInfo
	// TTL of the lease the entry is attached to (default DefaultMemberTTL;
	// whole seconds, at least 1s).
	TTL time.Duration
	// Logger receives warnings about lost entries (component=coord).
	Logger *slog.Logger
}

// Publisher keeps an agent's MemberInfo under
// /haven/<cluster>/members/<node>, attached to a lease that it keeps alive.
// When the lease is lost (expired during a partition, or revoked) it
// publishes again on a new lease. Publish and SetCheck change the entry;
// they never block on etcd.
type Publisher struct {
	client *clientv3.Client
	key    string
	ttl    int64 // seconds
	log    *slog.Logger

	mu      sync.Mutex
	info    MemberInfo
	version uint64 // bumped by every change of info

	changed chan struct{} // capacity 1: a change is pending
	started atomic.Bool
}

// NewPublisher checks cfg. It starts nothing.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("coord: publisher: no client")
	case cfg.Cluster == "" || strings.Contains(cfg.Cluster, "/"):
		return nil, fmt.Errorf("coord: publisher: cluster name %q is empty or contains '/'", cfg.Cluster)
	case cfg.Info.Node == "" || strings.Contains(cfg.Info.Node, "/"):
		return nil, fmt.Errorf("coord: publisher: node name %q is empty or contains '/'", cfg.Info.Node)
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultMemberTTL
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		return nil, fmt.Errorf("coord: publisher: TTL %v is not a whole number of seconds of at least 1s", ttl)
	}
	info := cfg.Info.clone()
	if info.Started.IsZero() {
		info.Started = time.Now()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{
		client:  cfg.Client,
		key:     MembersPrefix(cfg.Cluster) + info.Node,
		ttl:     int64(ttl / time.Second),
		log:     log.With("component", "coord", "key", MembersPrefix(cfg.Cluster)+info.Node),
		info:    info,
		version: 1,
		changed: make(chan struct{}, 1),
	}, nil
}

// Info returns what the Publisher publishes now.
func (p *Publisher) Info() MemberInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info.clone()
}

// Publish replaces the published fields with info's. The node name cannot
// change: info.Node is ignored, and so is a zero info.Started.
func (p *Publisher) Publish(info MemberInfo) {
	p.update(func(cur *MemberInfo) {
		info = info.clone()
		info.Node = cur.Node
		if info.Started.IsZero() {
			info.Started = cur.Started
		}
		*cur = info
	})
}

// SetCheck records the state of one check (CheckUp, CheckDown or
// CheckUnknown) and publishes it if it changed.
func (p *Publisher) SetCheck(name, state string) {
	p.update(func(cur *MemberInfo) {
		if cur.Checks[name] == state {
			return
		}
		cur.Checks = maps.Clone(cur.Checks)
		if cur.Checks == nil {
			cur.Checks = map[string]string{}
		}
		cur.Checks[name] = state
	})
}

func (p *Publisher) update(change func(*MemberInfo)) {
	p.mu.Lock()
	before := p.info.clone()
	change(&p.info)
	same := equalInfo(before, p.info)
	if !same {
		p.version++
	}
	p.mu.Unlock()
	if !same {
		select {
		case p.changed <- struct{}{}:
		default: // a change is already pending; the loop reads the latest
		}
	}
}

func (p *Publisher) snapshot() (MemberInfo, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info.clone(), p.version
}

// Run publishes the entry and keeps it alive until ctx ends, then revokes
// the lease so that the entry disappears at once. While etcd is unavailable
// it retries with backoff. It returns nil when ctx ended. Run may be called
// once.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return fmt.Errorf("coord: publisher %s: Run called twice", p.key)
	}
	wait := retryMin
	for {
		began := time.Now()
		err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > time.Duration(p.ttl)*time.Second {
			wait = retryMin // the session was healthy for a while
		}
		p.log.Warn("membership entry lost; publishing again", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// session grants a lease, publishes the entry on it and keeps both up to
// date until the lease is lost or ctx ends.
func (p *Publisher) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, time.Duration(p.ttl)*time.Second)
	lease, err := p.client.Grant(gctx, p.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	id := lease.ID
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	alive, err := p.client.KeepAlive(kctx, id)
	if err != nil {
		return fmt.Errorf("keep lease %x alive: %w", id, err)
	}

	var published uint64
	var retry <-chan time.Time
	for {
		info, version := p.snapshot()
		if version != published && retry == nil {
			if err := p.put(ctx, info, id); err != nil {
				if ctx.Err() != nil {
					p.revoke(ctx, id)
					return ctx.Err()
				}
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return err
				}
				// Transient (no leader yet, say): keep the lease, try
				// again shortly.
				p.log.Debug("membership: put failed; retrying", "error", err)
				retry = time.After(retryMin)
			} else {
				published = version
			}
		}
		select {
		case <-ctx.Done():
			p.revoke(ctx, id)
			return ctx.Err()
		case _, ok := <-alive:
			if !ok {
				return fmt.Errorf("lease %x expired or was revoked", id)
			}
		case <-p.changed:
		case <-retry:
			retry = nil
		}
	}
}

func (p *Publisher) put(ctx context.Context, info MemberInfo, id clientv3.LeaseID) error {
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, time.Duration(p.ttl)*time.Second)
	defer cancel()
	_, err = p.client.Put(pctx, p.key, string(data), clientv3.WithLease(id))
	return err
}

// revoke deletes the entry by revoking its lease, bounded in time even
// though ctx has ended.
func (p *Publisher) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if _, err := p.client.Revoke(rctx, id); err != nil {
		p.log.Warn("membership: revoke lease on stop", "error", err)
	}
}

// WatchMembers calls fn with every member published under cluster, then
// again after every change, until ctx ends; then it returns nil. Each call
// gets a consistent snapshot (a whole revision) as a new map that fn may
// keep but must not modify. A member whose lease expires disappears from
// the next snapshot. fn runs on WatchMembers' goroutine and should return
// quickly. While etcd is unavailable WatchMembers retries; it lists the
// members again when it resumes.
func WatchMembers(ctx context.Context, client *clientv3.Client, cluster string, fn func(map[string]MemberInfo)) error {
	prefix := MembersPrefix(cluster)
	wait := retryMin
	for {
		began := time.Now()
		err := watchMembers(ctx, client, prefix, fn)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrUserEmpty) {
			return fmt.Errorf("coord: watch members: %w", err)
		}
		if time.Since(began) > retryMax {
			wait = retryMin
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// watchMembers lists the members, then follows changes from the listed
// revision on, until the watch fails or ctx ends.
func watchMembers(ctx context.Context, client *clientv3.Client, prefix string, fn func(map[string]MemberInfo)) error {
	resp, err := client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	members := make(map[string]MemberInfo, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if node, info, ok := decodeMember(prefix, kv.Key, kv.Value); ok {
			members[node] = info
		}
	}
	fn(maps.Clone(members))

	// WithRequireLeader: a member cut off from the quorum ends the watch
	// instead of serving a stale view.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	watch := client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range watch {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		for _, ev := range wr.Events {
			node := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			switch ev.Type {
			case mvccpb.Event_DELETE:
				delete(members, node)
			case mvccpb.Event_PUT:
				if _, info, ok := decodeMember(prefix, ev.Kv.Key, ev.Kv.Value); ok {
					members[node] = info
				} else {
					delete(members, node)
				}
			}
		}
		fn(maps.Clone(members))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}

// decodeMember parses one entry; the key, not the value, names the node.
func decodeMember(prefix string, key, value []byte) (string, MemberInfo, bool) {
	node := strings.TrimPrefix(string(key), prefix)
	if node == "" || strings.Contains(node, "/") {
		return "", MemberInfo{}, false
	}
	var info MemberInfo
	if err := json.Unmarshal(value, &info); err != nil {
		return "", MemberInfo{}, false
	}
	info.Node = node
	return node, info, true
}

func equalInfo(a, b MemberInfo) bool {
	return a.Node == b.Node && a.Region == b.Region && a.Zone == b.Zone && a.Version == b.Version &&
		a.Address == b.Address && a.Started.Equal(b.Started) &&
		slices.Equal(a.Roles, b.Roles) && maps.Equal(a.Checks, b.Checks)
}
