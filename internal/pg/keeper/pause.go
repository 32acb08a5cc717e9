package keeper

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Pause is the operator's record that the database is in maintenance:
// while it exists no replica takes the lead, whatever happens to the
// primary, as Patroni's pause does. The primary keeps its lead and its
// postgres is still restarted in place when it crashes; what stops is the
// failover, so that an operator can stop, move or upgrade things by hand
// without the cluster acting on it.
type Pause struct {
	// Owner says who paused it (the operator and the machine the command
	// ran on), Reason why, if they said.
	Owner  string    `json:"owner"`
	Reason string    `json:"reason,omitempty"`
	Set    time.Time `json:"set"`
	// Until is when the pause ends by itself (the record is written under
	// an etcd lease of that length); zero: when someone resumes.
	Until time.Time `json:"until,omitzero"`
}

// pauseName is the name of the pause record's key under dbPrefix.
const pauseName = "paused"

// PauseKey is the key of database name's pause record.
func PauseKey(cluster, name string) string { return dbPrefix(cluster, name) + pauseName }

// String says what the pause is, for status and for why a replica is not
// promotable.
func (p Pause) String() string {
	s := "paused by " + p.Owner + " since " + p.Set.UTC().Format(time.RFC3339)
	if !p.Until.IsZero() {
		s += " until " + p.Until.UTC().Format(time.RFC3339)
	}
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}

// SetPause writes the pause record of database name, replacing one that
// exists; with an end, under a lease that ends it when no agent runs.
func SetPause(ctx context.Context, cli *clientv3.Client, cluster, name string, p Pause) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := coord.PutUntil(ctx, cli, PauseKey(cluster, name), string(b), p.Until); err != nil {
		return fmt.Errorf("pg: pause of %s: %w", name, err)
	}
	return nil
}

// Resume deletes the pause record of database name; it reports whether
// there was one.
func Resume(ctx context.Context, cli *clientv3.Client, cluster, name string) (bool, error) {
	resp, err := cli.Delete(ctx, PauseKey(cluster, name))
	if err != nil {
		return false, fmt.Errorf("pg: resume %s: %w", name, err)
	}
	return resp.Deleted > 0, nil
}

// ReadPause returns database name's pause record, nil when it is not
// paused.
func ReadPause(ctx context.Context, cli *clientv3.Client, cluster, name string) (*Pause, error) {
	resp, err := cli.Get(ctx, PauseKey(cluster, name))
	if err != nil {
		return nil, fmt.Errorf("pg: read the pause record of %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var p Pause
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return nil, fmt.Errorf("pg: the pause record %s does not decode: %w", PauseKey(cluster, name), err)
	}
	return &p, nil
}

// decodePause is the pause record among the entries under the database's
// prefix, nil when there is none. A record that is JSON but not a pause
// still pauses: someone meant to stop the failovers. (One that is not
// JSON at all never reaches here: the watch drops it.)
func decodePause(m map[string]json.RawMessage) *Pause {
	b, ok := m[pauseName]
	if !ok {
		return nil
	}
	var p Pause
	if err := json.Unmarshal(b, &p); err != nil {
		return &Pause{Owner: "?", Reason: "the pause record does not decode (" + err.Error() + "); haven pg resume removes it"}
	}
	return &p
}

// Paused returns the pause record as last seen, nil when the database is
// not paused.
func (k *Keeper) Paused() *Pause {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.paused
}

// pausedNow says whether v's pause is in force: its end, when it has one,
// is still ahead. etcd renews a lease to its whole length when its leader
// changes, so the record can outlive its end by a little; the end in the
// record is what the operator asked for.
func pausedNow(v view) bool {
	return v.paused != nil && (v.paused.Until.IsZero() || v.now.Before(v.paused.Until))
}
