package coord

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestWALFsyncs: a running member's write-ahead-log fsyncs are counted
// from etcd's metrics, and none counts as slow on a disk in memory.
func TestWALFsyncs(t *testing.T) {
	log := testLog(t)
	r := oneMember(t, log)
	before, _, err := WALFsyncs(prometheus.DefaultGatherer)
	if err != nil {
		t.Fatal(err)
	}
	cli := newTestClient(t, log, r.m.Endpoints(), nil)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Put(ctx, "/k", string(rune('a'+i)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	after, slow, err := WALFsyncs(prometheus.DefaultGatherer)
	if err != nil {
		t.Fatal(err)
	}
	if after < before+20 {
		t.Errorf("fsyncs went from %d to %d over 20 writes; want at least 20 more", before, after)
	}
	if slow > after/2 {
		t.Errorf("%d of %d fsyncs counted slow on a disk in memory", slow, after)
	}
}
