package keeper

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Force is the operator's record of a forced failover (haven pg failover
// --to NODE --yes): for when no replica qualifies under the failover
// rules (strict mode with the primary and its synchronous standby lost,
// or async with every replica behind max_lag_on_failover), the named
// replica takes the free lead and promotes without the rules' checks,
// losing what it had not received. The other nodes stand aside while the
// record exists; the new primary removes it, and its lease ends it anyway.
type Force struct {
	To     string    `json:"to"`
	Owner  string    `json:"owner"`
	Set    time.Time `json:"set"`
	Reason string    `json:"reason,omitempty"`
}

// forceName is the name of the force record's key under dbPrefix.
const forceName = "force"

// ForceTTL is how long a force record lasts when nobody acts on it.
const ForceTTL = time.Minute

// ForceKey is the key of database name's force record.
func ForceKey(cluster, name string) string { return dbPrefix(cluster, name) + forceName }

// SetForce writes database name's force record, under a lease of ForceTTL.
func SetForce(ctx context.Context, cli *clientv3.Client, cluster, name string, f Force) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := coord.PutUntil(ctx, cli, ForceKey(cluster, name), string(b), time.Now().Add(ForceTTL)); err != nil {
		return fmt.Errorf("pg: forced failover to %s: %w", f.To, err)
	}
	return nil
}

// decodeForce is the force record among the entries under the
// database's prefix, nil when there is none or it does not decode (a
// forced promotion needs to know whom it is for).
func decodeForce(m map[string]json.RawMessage) *Force {
	b, ok := m[forceName]
	if !ok {
		return nil
	}
	var f Force
	if json.Unmarshal(b, &f) != nil || f.To == "" {
		return nil
	}
	return &f
}

// forceActive says whether v's force record is in force: written less than
// ForceTTL ago (etcd may keep the record a little longer: its lease is
// renewed to its whole length when etcd's leader changes).
func (m *machine) forceActive(v view) bool {
	return v.force != nil && v.now.Before(v.force.Set.Add(ForceTTL))
}

// forcedHere says whether v's force record, in force, names this node.
func (m *machine) forcedHere(v view) bool { return m.forceActive(v) && v.force.To == m.cfg.node }

// clearForce removes the force record once this node has promoted on it.
func (k *Keeper) clearForce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	if _, err := k.cfg.Client.Delete(ctx, ForceKey(k.cfg.Cluster, k.cfg.Name)); err != nil {
		k.log.Warn("remove the forced failover's record (its lease ends it anyway)", "err", err)
	}
}
