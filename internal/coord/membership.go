package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

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

// The names, in MemberInfo.Checks, of the states an agent publishes about
// its roles, which traffic targets may follow.
const DatabaseState = "database" // up on the serving primary

// EtcdDiskState is down on a node whose etcd member's disk does not keep
// up (most write-ahead-log fsyncs slower than SlowWALFsync): etcd's
// leadership is not moved to it.
const EtcdDiskState = "etcd disk"

// BalancerState is up on a node whose balancer name is ready (listening,
// with a usable backend).
func BalancerState(name string) string { return "balancer " + name }

// VIPState is up on the node that holds balancer name's floating address.
func VIPState(name string) string { return "vip " + name }

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
// /haven/<cluster>/members/<node>, attached to a lease that it keeps alive
// (an Entry). When the lease is lost (expired during a partition, or
// revoked) it publishes again on a new lease. Publish and SetCheck change
// the entry; they never block on etcd.
type Publisher struct {
	entry *Entry[MemberInfo]
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
	info := cfg.Info.clone()
	if info.Started.IsZero() {
		info.Started = time.Now()
	}
	entry, err := NewEntry(EntryConfig[MemberInfo]{
		Client: cfg.Client, Key: MembersPrefix(cfg.Cluster) + info.Node, Value: info, TTL: cfg.TTL, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("coord: publisher: %w", err)
	}
	return &Publisher{entry: entry}, nil
}

// Info returns what the Publisher publishes now.
func (p *Publisher) Info() MemberInfo { return p.entry.Value() }

// Publish replaces the published fields with info's. The node name cannot
// change: info.Node is ignored, and so is a zero info.Started.
func (p *Publisher) Publish(info MemberInfo) {
	p.entry.Update(func(cur *MemberInfo) {
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
	p.entry.Update(func(cur *MemberInfo) {
		if cur.Checks == nil {
			cur.Checks = map[string]string{}
		}
		cur.Checks[name] = state
	})
}

// Run publishes the entry and keeps it alive until ctx ends, then revokes
// the lease so that the entry disappears at once. While etcd is unavailable
// it retries with backoff. It returns nil when ctx ended. Run may be called
// once.
func (p *Publisher) Run(ctx context.Context) error { return p.entry.Run(ctx) }

// WatchMembers calls fn with every member published under cluster, then
// again after every change, until ctx ends; then it returns nil. Each call
// gets a consistent snapshot (a whole revision) as a new map that fn may
// keep but must not modify. A member whose lease expires disappears from
// the next snapshot. fn runs on WatchMembers' goroutine and should return
// quickly. While etcd is unavailable WatchMembers retries; it lists the
// members again when it resumes.
func WatchMembers(ctx context.Context, client *clientv3.Client, cluster string, fn func(map[string]MemberInfo)) error {
	return WatchPrefix(ctx, client, MembersPrefix(cluster), func(members map[string]MemberInfo) {
		for node, info := range members {
			info.Node = node // the key, not the value, names the node
			members[node] = info
		}
		fn(members)
	})
}
