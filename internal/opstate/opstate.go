// Package opstate keeps an operator's overrides of what the configuration
// says (a backend drained or in maintenance, a backend's weight) as records
// in etcd, so that an override applies to every node of a balancer at
// once, survives the agents' restarts and reloads, says who set it and
// when, and can end by itself.
//
// One key per override, under /haven/CLUSTER/operator/:
//
//	lb/BALANCER/BACKEND/state   {"value":"drain",...}   drain | maint
//	lb/BALANCER/BACKEND/weight  {"value":"50",...}      0-256
//	dns/NAME/TARGET/state       {"kind":"dns","value":"drain","until":...}
//
// A record with an end is written under an etcd lease of its remaining
// time, so that it disappears when it ends even if no agent runs then.
// Every agent watches the prefix (Watch) and applies the whole set each
// time it changes: the records are the truth, a node that was down when
// one was written applies it when it comes back.
package opstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Record is one override.
type Record struct {
	// Kind is what it overrides: "" for a balancer's backend, KindDNS for
	// a traffic name's target (Balancer is then the name, Backend the
	// target, and the only record a drain).
	Kind string `json:"kind,omitempty"`
	// Balancer and Backend name what it overrides; What is "state" or
	// "weight", Value its value ("drain", "maint"; "0"-"256").
	Balancer string `json:"balancer"`
	Backend  string `json:"backend"`
	What     string `json:"what"`
	Value    string `json:"value"`
	// Owner says who set it (the operator and the machine the command
	// ran on, as the CLI sends them), Reason why, if they said.
	Owner  string    `json:"owner"`
	Reason string    `json:"reason,omitempty"`
	Set    time.Time `json:"set"`
	// Until is when it ends by itself; zero: when someone ends it.
	Until time.Time `json:"until,omitzero"`
}

// State and Weight are a Record's kinds.
const (
	State  = "state"
	Weight = "weight"
)

// KindDNS marks a record of a traffic name's target (haven dns drain).
const KindDNS = "dns"

// Prefix is the key prefix of cluster's records.
func Prefix(cluster string) string { return "/haven/" + cluster + "/operator/" }

// Key is the record's key.
func (r Record) Key(cluster string) string {
	kind := "lb"
	if r.Kind == KindDNS {
		kind = KindDNS
	}
	return Prefix(cluster) + kind + "/" + r.Balancer + "/" + r.Backend + "/" + r.What
}

// Valid says what is wrong with r, if anything.
func (r Record) Valid() error {
	for _, f := range []struct{ name, v string }{{"balancer", r.Balancer}, {"backend", r.Backend}} {
		if f.v == "" || strings.ContainsAny(f.v, "/\x00") {
			return fmt.Errorf("opstate: %s %q must be a non-empty name without /", f.name, f.v)
		}
	}
	switch r.Kind {
	case "":
	case KindDNS:
		if r.What != State || r.Value != "drain" {
			return fmt.Errorf("opstate: a traffic target's record is a drain (state drain), not %s %q", r.What, r.Value)
		}
		if r.Until.IsZero() {
			return errors.New("opstate: a traffic target's drain needs an end")
		}
		return nil
	default:
		return fmt.Errorf("opstate: kind %q is not lb or dns", r.Kind)
	}
	switch r.What {
	case State:
		if r.Value != "drain" && r.Value != "maint" {
			return fmt.Errorf("opstate: state %q is not drain or maint", r.Value)
		}
	case Weight:
		var w int
		if _, err := fmt.Sscanf(r.Value, "%d", &w); err != nil || w < 0 || w > 256 || fmt.Sprint(w) != r.Value {
			return fmt.Errorf("opstate: weight %q is not a number 0-256", r.Value)
		}
	default:
		return fmt.Errorf("opstate: %q is not state or weight", r.What)
	}
	return nil
}

// Put writes r, replacing the record of the same key; with an end, under
// a lease that ends it.
func Put(ctx context.Context, cli *clientv3.Client, cluster string, r Record) error {
	if err := r.Valid(); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := coord.PutUntil(ctx, cli, r.Key(cluster), string(b), r.Until); err != nil {
		return fmt.Errorf("opstate: %w", err)
	}
	return nil
}

// Delete removes the record of balancer/backend's what; it reports whether
// there was one.
func Delete(ctx context.Context, cli *clientv3.Client, cluster, balancer, backend, what string) (bool, error) {
	return DeleteRecord(ctx, cli, cluster, Record{Balancer: balancer, Backend: backend, What: what})
}

// DeleteRecord removes the record with r's key; it reports whether there
// was one.
func DeleteRecord(ctx context.Context, cli *clientv3.Client, cluster string, r Record) (bool, error) {
	key := r.Key(cluster)
	resp, err := cli.Delete(ctx, key)
	if err != nil {
		return false, fmt.Errorf("opstate: delete %s: %w", key, err)
	}
	return resp.Deleted > 0, nil
}

// List returns cluster's records and the revision they were read at. A
// record that does not decode is skipped and reported in bad.
func List(ctx context.Context, cli *clientv3.Client, cluster string) (rs []Record, rev int64, bad []string, err error) {
	resp, err := cli.Get(ctx, Prefix(cluster), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, nil, fmt.Errorf("opstate: list %s: %w", Prefix(cluster), err)
	}
	for _, kv := range resp.Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil || r.Valid() != nil || r.Key(cluster) != string(kv.Key) {
			bad = append(bad, string(kv.Key))
			continue
		}
		rs = append(rs, r)
	}
	return rs, resp.Header.Revision, bad, nil
}

// Watch calls apply with all of cluster's records now, and again after
// every change, until ctx ends. After a failure it lists them again, a
// little later each time (up to 5s): apply always gets the whole set.
func Watch(ctx context.Context, cli *clientv3.Client, cluster string, apply func([]Record), log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := watchOnce(ctx, cli, cluster, apply, log)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRelist) {
			backoff = 100 * time.Millisecond
			continue
		}
		log.Warn("operator records: watch failed, listing them again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func watchOnce(ctx context.Context, cli *clientv3.Client, cluster string, apply func([]Record), log *slog.Logger) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rs, rev, bad, err := List(lctx, cli, cluster)
	cancel()
	if err != nil {
		return err
	}
	for _, k := range bad {
		log.Error("operator record does not decode: ignored (delete it with haven lb enable or etcdctl)", "key", k)
	}
	apply(rs)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range cli.Watch(wctx, Prefix(cluster), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		// Read the whole set again rather than patch it: the records
		// are few, and a re-read cannot drift from etcd.
		return errRelist
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("the watch ended")
}

// errRelist is not a failure: a change was seen, list again at once.
var errRelist = errors.New("changed")
