package coord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// Entry keeps one value, as JSON, at a key of its own, attached to a lease
// that it keeps alive: the key disappears a TTL after its process dies or
// is cut off from a quorum, and at once when Run returns. When the lease is
// lost it publishes again on a new one. Set and Update never block on
// etcd; Run publishes the latest value. Agents announce themselves with it
// (Publisher), and the database keeper its replication state.
type Entry[T any] struct {
	client *clientv3.Client
	key    string
	ttl    int64 // seconds
	log    *slog.Logger

	mu        sync.Mutex
	value     []byte // JSON; a copy per reader, so nothing is shared
	version   uint64 // bumped on every change
	published uint64 // the version etcd has

	changed chan struct{} // capacity 1: a change is pending
	started atomic.Bool
}

// EntryConfig configures an Entry.
type EntryConfig[T any] struct {
	Client *clientv3.Client
	Key    string
	// Value is published first.
	Value T
	// TTL of the lease (default DefaultMemberTTL; whole seconds, at least
	// 1s).
	TTL time.Duration
	// Logger receives warnings about a lost entry (default slog.Default()).
	Logger *slog.Logger
}

// NewEntry checks cfg. It starts nothing.
func NewEntry[T any](cfg EntryConfig[T]) (*Entry[T], error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("coord: entry %s: no client", cfg.Key)
	}
	if cfg.Key == "" {
		return nil, errors.New("coord: entry: no key")
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultMemberTTL
	}
	if ttl < time.Second || ttl%time.Second != 0 {
		return nil, fmt.Errorf("coord: entry %s: TTL %v is not a whole number of seconds of at least 1s", cfg.Key, ttl)
	}
	value, err := json.Marshal(cfg.Value)
	if err != nil {
		return nil, fmt.Errorf("coord: entry %s: %w", cfg.Key, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Entry[T]{
		client:  cfg.Client,
		key:     cfg.Key,
		ttl:     int64(ttl / time.Second),
		log:     log.With("component", "coord", "key", cfg.Key),
		value:   value,
		version: 1,
		changed: make(chan struct{}, 1),
	}, nil
}

// Value returns the value published now, a copy the caller owns.
func (e *Entry[T]) Value() T {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.decode()
}

func (e *Entry[T]) decode() T {
	var v T
	if err := json.Unmarshal(e.value, &v); err != nil {
		panic(fmt.Sprintf("coord: entry %s: own JSON does not decode: %v", e.key, err))
	}
	return v
}

// Set replaces the value.
func (e *Entry[T]) Set(v T) { e.Update(func(cur *T) { *cur = v }) }

// Update changes the value in place: change gets a copy of the current one.
// Only a change that alters the JSON is published.
func (e *Entry[T]) Update(change func(*T)) {
	e.mu.Lock()
	v := e.decode()
	change(&v)
	data, err := json.Marshal(v)
	if err != nil {
		e.mu.Unlock()
		e.log.Error("entry value does not encode; keeping the old one", "err", err)
		return
	}
	same := bytes.Equal(data, e.value)
	if !same {
		e.value = data
		e.version++
	}
	e.mu.Unlock()
	if !same {
		select {
		case e.changed <- struct{}{}:
		default: // a change is already pending; the loop reads the latest
		}
	}
}

func (e *Entry[T]) snapshot() ([]byte, uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.value, e.version
}

// Sync waits until etcd has the value as it is now (Run publishes it), or
// ctx ends.
func (e *Entry[T]) Sync(ctx context.Context) error {
	e.mu.Lock()
	want := e.version
	e.mu.Unlock()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		e.mu.Lock()
		done := e.published >= want
		e.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("coord: entry %s not published: %w", e.key, ctx.Err())
		case <-t.C:
		}
	}
}

// Run publishes the entry and keeps it alive until ctx ends, then revokes
// the lease so that the entry disappears at once. While etcd is unavailable
// it retries with backoff. It returns nil when ctx ended. Run may be called
// once.
func (e *Entry[T]) Run(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return fmt.Errorf("coord: entry %s: Run called twice", e.key)
	}
	return retrySessions(ctx, time.Duration(e.ttl)*time.Second, e.session, func(err error, wait time.Duration) error {
		e.log.Warn("entry lost; publishing again", "err", err, "retry_in", wait)
		return nil
	})
}

// session grants a lease, publishes the entry on it and keeps both up to
// date until the lease is lost or ctx ends.
func (e *Entry[T]) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, time.Duration(e.ttl)*time.Second)
	lease, err := e.client.Grant(gctx, e.ttl)
	cancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	id := lease.ID
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	alive, err := e.client.KeepAlive(kctx, id)
	if err != nil {
		return fmt.Errorf("keep lease %x alive: %w", id, err)
	}

	var published uint64
	var retry <-chan time.Time
	var rev int64 // the key's mod revision as this session last wrote or saw it; 0: absent
	for {
		value, version := e.snapshot()
		if version != published && retry == nil {
			if err := e.put(ctx, value, id, &rev); err != nil {
				if ctx.Err() != nil {
					e.revoke(ctx, id)
					return ctx.Err()
				}
				if errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return err
				}
				if errors.Is(err, ErrKeyMoved) {
					// Written behind this session's back (one of its own
					// writes, landing late): write the latest value
					// again, at the revision put read.
					e.log.Info("entry changed since it was last written; writing it again")
				} else {
					// Transient (no leader yet, say): keep the lease.
					e.log.Debug("entry: put failed; retrying", "err", err)
				}
				retry = time.After(retryMin)
			} else {
				published = version
				e.mu.Lock()
				e.published = version
				e.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			e.revoke(ctx, id)
			return ctx.Err()
		case _, ok := <-alive:
			if !ok {
				return fmt.Errorf("lease %x expired or was revoked", id)
			}
		case <-e.changed:
		case <-retry:
			retry = nil
		}
	}
}

// entryPutTimeout bounds one write of an entry. A write proposed while
// etcd loses its leader is dropped and would only fail at the server's
// 5 s request timeout; meanwhile newer values wait behind it (a promoted
// database primary's new role, seen 4 s late). Abandoned sooner, the
// latest value is written again once a leader is elected.
const entryPutTimeout = time.Second

// ErrKeyMoved says that a key's revision was not the one its writer last
// wrote or saw (FencedPut): another write landed since, maybe one of the
// writer's own that had timed out.
var ErrKeyMoved = errors.New("coord: the key changed since it was last written")

// FencedPut writes value at key only if the key is still at *rev, the
// revision its writer last wrote or saw (0: absent), and moves *rev to
// what it finds; when the key has moved it writes nothing and returns
// ErrKeyMoved, and the caller writes again with the revision it now has.
//
// A write that timed out is not always lost: sent to a member that froze,
// it waits in that member's socket and is carried out when the member
// wakes, seconds later (gRPC's deadline counts from when the member reads
// it). Unfenced, such a write put a promoted primary's published state
// back to "replica" 3 s after the promotion, and nothing wrote it again
// while the value stayed the same: the router had no primary for 17 s in
// a soak. Fenced, the late write finds a newer revision and does nothing.
func FencedPut(ctx context.Context, cli *clientv3.Client, key, value string, rev *int64, opts ...clientv3.OpOption) error {
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", *rev)).
		Then(clientv3.OpPut(key, value, opts...)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		*rev = resp.Header.Revision
		return nil
	}
	*rev = 0
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		*rev = kvs[0].ModRevision
	}
	return ErrKeyMoved
}

// put writes the entry's value on lease id, fenced (FencedPut).
func (e *Entry[T]) put(ctx context.Context, value []byte, id clientv3.LeaseID, rev *int64) error {
	pctx, cancel := context.WithTimeout(ctx, min(entryPutTimeout, time.Duration(e.ttl)*time.Second))
	defer cancel()
	return FencedPut(pctx, e.client, e.key, string(value), rev, clientv3.WithLease(id))
}

// revoke deletes the entry by revoking its lease, bounded in time even
// though ctx has ended.
func (e *Entry[T]) revoke(ctx context.Context, id clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if _, err := e.client.Revoke(rctx, id); err != nil {
		e.log.Warn("entry: revoke lease on stop", "err", err)
	}
}

// WatchPrefix calls fn with every entry under prefix, decoded from JSON and
// keyed by the rest of its key, then again after every change, until ctx
// ends; then it returns nil. Keys with a further '/' and values that do not
// decode are left out. Each call gets a consistent snapshot (a whole
// revision) as a new map that fn may keep but must not modify. fn runs on
// WatchPrefix's goroutine and should return quickly. While etcd is
// unavailable, or the member cut off from its quorum, WatchPrefix retries;
// it lists the entries again when it resumes.
func WatchPrefix[T any](ctx context.Context, client *clientv3.Client, prefix string, fn func(map[string]T)) error {
	return retrySessions(ctx, retryMax, func(ctx context.Context) error {
		return watchPrefix(ctx, client, prefix, fn)
	}, func(err error, _ time.Duration) error {
		if errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrUserEmpty) {
			return fmt.Errorf("coord: watch %s: %w", prefix, err)
		}
		return nil
	})
}

// retrySessions runs session until ctx ends, again after each failure,
// with a backoff from retryMin to retryMax that starts over once a session
// lasted healthy, longer than healthy. failed sees each failure and the
// wait before the next attempt; an error from it ends the loop. It returns
// nil when ctx ended.
func retrySessions(ctx context.Context, healthy time.Duration, session func(context.Context) error, failed func(err error, wait time.Duration) error) error {
	wait := retryMin
	for {
		began := time.Now()
		err := session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) > healthy {
			wait = retryMin
		}
		if ferr := failed(err, wait); ferr != nil {
			return ferr
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

// A watch stream to a member that froze (SIGSTOP, a hung disk, a stuck
// VM) neither delivers nor fails: gRPC raises client keepalive pings to
// at least 10s apart, so the connection looks alive for 10-20s. Each
// session therefore asks for progress every watchProgressEvery and ends
// when an answer is later than watchStallAfter; the next session opens a
// stream of its own (unique metadata: clientv3 shares one stream among
// watches of equal metadata) on whichever member the balancer picks, and
// lists with a deadline.
const (
	watchProgressEvery = 500 * time.Millisecond
	watchStallAfter    = 1500 * time.Millisecond
	watchListTimeout   = 2 * time.Second
)

var watchSessions atomic.Uint64

// errWatchStalled ends a watch session whose member stopped answering.
var errWatchStalled = errors.New("watch stalled: the member stopped answering")

// watchPrefix lists the entries, then follows changes from the listed
// revision on, until the watch fails, stalls or ctx ends.
func watchPrefix[T any](ctx context.Context, client *clientv3.Client, prefix string, fn func(map[string]T)) error {
	lctx, cancelList := context.WithTimeout(ctx, watchListTimeout)
	resp, err := client.Get(lctx, prefix, clientv3.WithPrefix())
	cancelList()
	if err != nil {
		return err
	}
	entries := make(map[string]T, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if name, v, ok := decodeEntry[T](prefix, kv.Key, kv.Value); ok {
			entries[name] = v
		}
	}
	fn(maps.Clone(entries))

	// WithRequireLeader: a member cut off from the quorum ends the watch
	// instead of serving a stale view.
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(
		metadata.AppendToOutgoingContext(ctx, "haven-watch-session", strconv.FormatUint(watchSessions.Add(1), 10))))
	defer cancel(nil)
	// The watch starts at the listed revision, not after it, and skips
	// what the list already had: etcd answers no progress request for a
	// watch whose start is still in the future, as an idle one's would be.
	listed := resp.Header.Revision
	watch := client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(listed))
	heard := make(chan struct{}, 1)
	go watchLiveness(wctx, client, heard, cancel)
	for wr := range watch {
		select {
		case heard <- struct{}{}:
		default:
		}
		if err := wr.Err(); err != nil {
			return err
		}
		changed := false
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= listed {
				continue
			}
			changed = true
			name := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			switch ev.Type {
			case mvccpb.Event_DELETE:
				delete(entries, name)
			case mvccpb.Event_PUT:
				if _, v, ok := decodeEntry[T](prefix, ev.Kv.Key, ev.Kv.Value); ok {
					entries[name] = v
				} else {
					delete(entries, name)
				}
			}
		}
		if changed {
			fn(maps.Clone(entries))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := context.Cause(wctx); errors.Is(err, errWatchStalled) {
		return err
	}
	return errors.New("watch closed")
}

// watchLiveness asks the watch stream of ctx for progress and cancels it
// when no response (progress or events, signalled on heard) came within
// watchStallAfter of a request.
func watchLiveness(ctx context.Context, client *clientv3.Client, heard <-chan struct{}, cancel context.CancelCauseFunc) {
	t := time.NewTicker(watchProgressEvery)
	defer t.Stop()
	var asked time.Time // of the request not answered yet; zero when none
	for {
		select {
		case <-ctx.Done():
			return
		case <-heard:
			asked = time.Time{}
		case now := <-t.C:
			if asked.IsZero() {
				asked = now
				// It only queues the request on the stream; the answer
				// comes back on the watch channel.
				_ = client.RequestProgress(ctx)
			} else if now.Sub(asked) > watchStallAfter {
				cancel(errWatchStalled)
				return
			}
		}
	}
}

// decodeEntry parses one entry; the key, not the value, names it.
func decodeEntry[T any](prefix string, key, value []byte) (string, T, bool) {
	var v T
	name := strings.TrimPrefix(string(key), prefix)
	if name == "" || strings.Contains(name, "/") {
		return "", v, false
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return "", v, false
	}
	return name, v, true
}
