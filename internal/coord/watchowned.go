package coord

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchOwned calls fn with the holder of the ownership record at
// ownerPrefix (see OwnerPrefix) and the entries under entriesPrefix (as
// WatchPrefix decodes them), once both have been listed, then again each
// time either changes, until ctx ends; then it returns nil. An empty
// ownerPrefix follows the entries alone (the holder is ""). fn runs on one
// goroutine at a time and should return quickly. While etcd is
// unreachable fn is not called: the caller's last view stands. The
// database routers follow a primary (or writer) record and the members'
// states with it.
func WatchOwned[T any](ctx context.Context, cli *clientv3.Client, ownerPrefix, entriesPrefix string, fn func(holder string, entries map[string]T)) error {
	var (
		mu      sync.Mutex
		holder  string
		entries map[string]T
		ready   = [2]bool{ownerPrefix == "", false} // both listed once
	)
	update := func() {
		if ready[0] && ready[1] {
			fn(holder, entries)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if ownerPrefix == "" {
			return
		}
		_ = WatchPrefix(ctx, cli, ownerPrefix+"/", func(m map[string]Record) {
			mu.Lock()
			defer mu.Unlock()
			holder, ready[0] = m["record"].Holder, true
			update()
		})
	}()
	err := WatchPrefix(ctx, cli, entriesPrefix, func(m map[string]T) {
		mu.Lock()
		defer mu.Unlock()
		entries, ready[1] = m, true
		update()
	})
	cancel()
	<-done
	return err
}
