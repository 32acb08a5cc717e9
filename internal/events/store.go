package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// writeBatch is how many events one etcd transaction writes (etcd
	// allows 128 operations per transaction by default).
	writeBatch = 64
	// trimEvery is how many writes pass between two trims.
	trimEvery = 100
	// callTimeout bounds each call to etcd.
	callTimeout = 5 * time.Second
	// retryWait is the wait after a failed write or watch.
	retryWait = time.Second
)

// Run writes this node's events to etcd and reads every node's from it
// until ctx ends; etcd errors are retried (the events wait in memory) and
// logged at most once per outage.
func (l *Log) Run(ctx context.Context, cli *clientv3.Client, log *slog.Logger) error {
	errc := make(chan error, 2)
	go func() { errc <- l.write(ctx, cli, log) }()
	go func() { errc <- l.watch(ctx, cli, log) }()
	err := <-errc
	<-errc
	return err
}

// write sends pending events to etcd in batches, oldest first.
func (l *Log) write(ctx context.Context, cli *clientv3.Client, log *slog.Logger) error {
	prefix := Prefix(l.opt.Cluster)
	sinceTrim, failing := trimEvery, false // trim once at start
	for {
		l.mu.Lock()
		batch := slices.Clone(l.pending[:min(len(l.pending), writeBatch)])
		l.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-l.wake:
				continue
			}
		}
		ops := make([]clientv3.Op, 0, len(batch))
		for _, e := range batch {
			b, _ := json.Marshal(e)
			ops = append(ops, clientv3.OpPut(prefix+e.ID, string(b)))
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := cli.Txn(cctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				log.Warn("events: cannot write to etcd; they wait in memory", "pending", l.Pending(), "err", err)
				failing = true
			}
			if !sleep(ctx, retryWait) {
				return nil
			}
			continue
		}
		failing = false
		l.mu.Lock()
		// Only the batch's own events leave: Record may have dropped
		// some of them meanwhile, so match by ID.
		sent := make(map[string]bool, len(batch))
		for _, e := range batch {
			sent[e.ID] = true
		}
		l.pending = slices.DeleteFunc(l.pending, func(e Event) bool { return sent[e.ID] })
		l.mu.Unlock()
		l.metrics.written.Add(float64(len(batch)))
		if sinceTrim += len(batch); sinceTrim >= trimEvery {
			sinceTrim = 0
			if err := l.trim(ctx, cli); err != nil && ctx.Err() == nil {
				log.Warn("events: trim the history", "err", err)
			}
		}
	}
}

// trim deletes the oldest events past History.
func (l *Log) trim(ctx context.Context, cli *clientv3.Client) error {
	prefix := Prefix(l.opt.Cluster)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := cli.Get(cctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	over := resp.Count - int64(l.opt.History)
	if over <= 0 {
		return nil
	}
	oldest, err := cli.Get(cctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(over))
	if err != nil {
		return err
	}
	if len(oldest.Kvs) == 0 {
		return nil
	}
	end := string(oldest.Kvs[len(oldest.Kvs)-1].Key) + "\x00"
	del, err := cli.Delete(cctx, prefix, clientv3.WithRange(end))
	if err != nil {
		return err
	}
	l.metrics.trimmed.Add(float64(del.Deleted))
	return nil
}

// watch reads the newest events, then every new one, again after each
// lost watch.
func (l *Log) watch(ctx context.Context, cli *clientv3.Client, log *slog.Logger) error {
	failing := false
	for {
		err := l.watchOnce(ctx, cli)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !failing {
			log.Warn("events: cannot read the cluster's events from etcd; this node shows its own", "err", err)
		}
		failing = err != nil
		if !sleep(ctx, retryWait) {
			return nil
		}
	}
}

func (l *Log) watchOnce(ctx context.Context, cli *clientv3.Client) error {
	prefix := Prefix(l.opt.Cluster)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	resp, err := cli.Get(cctx, prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(l.opt.Recent)))
	cancel()
	if err != nil {
		return err
	}
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		if e, ok := decode(resp.Kvs[i].Value); ok {
			l.add(e)
		}
	}
	wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer stop()
	for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if e, ok := decode(ev.Kv.Value); ok {
				l.add(e)
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("the watch ended")
}

func decode(b []byte) (Event, bool) {
	var e Event
	if json.Unmarshal(b, &e) != nil || e.ID == "" {
		return Event{}, false
	}
	return e, true
}

// Read returns the newest events in etcd after the ID after, oldest
// first, at most limit: for a node asked about history older than its
// memory holds.
func Read(ctx context.Context, cli *clientv3.Client, cluster, after string, limit int) ([]Event, error) {
	prefix := Prefix(cluster)
	from := prefix
	if after != "" {
		from = prefix + after + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, fmt.Errorf("events: read %s: %w", strings.TrimSuffix(prefix, "/"), err)
	}
	out := make([]Event, 0, len(resp.Kvs))
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		if e, ok := decode(resp.Kvs[i].Value); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
