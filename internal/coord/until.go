package coord

import (
	"context"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PutUntil writes value at key; with a non-zero until, under an etcd lease
// that ends then (rounded up to the second), so that the key disappears
// at its end even when no agent runs: an operator's record with an end (a
// drain, a pause, a forced failover). An end already past is an error.
func PutUntil(ctx context.Context, cli *clientv3.Client, key, value string, until time.Time) error {
	var opts []clientv3.OpOption
	if !until.IsZero() {
		ttl := int64(math.Ceil(time.Until(until).Seconds()))
		if ttl < 1 {
			return fmt.Errorf("%s ends at %s, in the past", key, until.Format(time.RFC3339))
		}
		lease, err := cli.Grant(ctx, ttl)
		if err != nil {
			return fmt.Errorf("lease for %s: %w", key, err)
		}
		opts = append(opts, clientv3.WithLease(lease.ID))
	}
	if _, err := cli.Put(ctx, key, value, opts...); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}
