package coord

import (
	"encoding/json"
	"fmt"
	"time"
)

// Record is the value stored at a singleton's ownership key. The key's
// etcd ModRevision versions it: every write is a compare-and-swap on the
// revision the writer last saw.
type Record struct {
	// Holder is the node that holds the singleton; "" once released.
	Holder string `json:"holder,omitempty"`
	// Epoch is the fencing epoch: the etcd revision of the write that
	// acquired the singleton. The acquiring write itself carries 0 (it
	// cannot know its own revision); renewals carry it.
	Epoch int64 `json:"epoch,omitempty"`
	// LeaseMS is the holder's lease in milliseconds: a challenger waits at
	// least this long, on its own clock, after it last saw the record
	// change before it may take the singleton over.
	LeaseMS int64 `json:"lease_ms"`
	// Next, on a released record, names the node that may take the
	// singleton at once (a planned handover); any other node waits out the
	// lease in case Next is gone.
	Next string `json:"next,omitempty"`
	// Seq identifies the write that stored this version among the
	// writer's writes: a holder that sees its own write through the watch,
	// or in the answer to another copy of the same request, knows when it
	// sent it and may extend its deadline without waiting for the write's
	// own answer. Numbers start at random in each process, so that a
	// restarted node never mistakes its previous process's write for its
	// own.
	Seq uint64 `json:"seq,omitempty"`
}

// Guard is what an ownership record protects: the thing only the holder may
// do (answer for a floating address, accept database writes). The owner
// calls it from one goroutine, in order.
type Guard interface {
	// Acquire is called when this node may act as the holder under epoch
	// until deadline, a time on the local monotonic clock.
	Acquire(epoch int64, deadline time.Time)
	// Extend moves the deadline after a successful renewal.
	Extend(deadline time.Time)
	// Release must stop the node acting now. It is called before the
	// deadline passes when a renewal has not succeeded in time, on a
	// planned handover, and when the record names another holder.
	Release(reason string)
}

// observation is one version of the ownership record as etcd returned it.
type observation struct {
	rec Record
	// present is false when the key does not exist (never written, or
	// deleted by hand).
	present bool
	// modRev is the revision of this version: the key's ModRevision, the
	// deletion's revision, or the read's revision when the key is absent.
	// Observations are ordered by it.
	modRev int64
}

func (o observation) exists() bool { return o.present }

// epoch is the fencing epoch of the holder the observation names.
func (o observation) epoch() int64 {
	if o.rec.Epoch != 0 {
		return o.rec.Epoch
	}
	return o.modRev
}

func (o observation) held() bool { return o.exists() && o.rec.Holder != "" }

func decodeObservation(value []byte, modRev int64) (observation, error) {
	var rec Record
	if err := json.Unmarshal(value, &rec); err != nil {
		return observation{}, fmt.Errorf("ownership record at revision %d: %w", modRev, err)
	}
	return observation{rec: rec, present: true, modRev: modRev}, nil
}

func describe(o observation) string {
	switch {
	case !o.exists():
		return "no holder (deleted)"
	case o.rec.Holder == "":
		return "no holder (released)"
	}
	return fmt.Sprintf("%s (epoch %d)", o.rec.Holder, o.epoch())
}

func orAnyone(node string) string {
	if node == "" {
		return "any eligible node"
	}
	return node
}

func orNone(node string) string {
	if node == "" {
		return "nobody"
	}
	return node
}
