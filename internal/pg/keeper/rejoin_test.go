package keeper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestRejoinWhenTheLeaderChangesMidRewind: a former primary rejoins while
// the node it rewinds from stops leading. Its first pg_rewind hangs, as
// one does on a paused source (whose kernel still acknowledges), until the
// keeper sees another node lead and stops it; its second is killed half
// way, which leaves pages of two histories. The node is set aside and
// cloned from the new leader, and ends a replica of it, without the row
// only it had.
func TestRejoinWhenTheLeaderChangesMidRewind(t *testing.T) {
	nodes := []string{"db1", "db2", "db3"}
	etcd, primary, replicas := startCluster(t, ModeAsync, nodes...)
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	for _, r := range replicas {
		waitRow(t, r.node, 1)
	}

	old := primary
	crash(t, old)
	primary, replicas = leaderOf(t, replicas...)
	waitCluster(t, primary, replicas...)
	primary.exec(t, "INSERT INTO t VALUES (2)")

	// The old primary writes a row nobody else has, so that its history
	// diverges and the rewind has work to do.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := old.node.Start(ctx); err != nil {
		t.Fatal(err)
	}
	old.exec(t, "INSERT INTO t VALUES (100)")
	if err := old.node.Stop(ctx, pg.StopFast); err != nil {
		t.Fatal(err)
	}

	// Its pg_rewind: the first run hangs; the first real run after it is
	// killed a moment after it starts; the others are pg_rewind's.
	real := requirePostgres(t)
	var hung, killed string
	bindir := testenv.WrapDir(t, real.Dir, "pg_rewind", func(marks string) string {
		hung, killed = filepath.Join(marks, "hung"), filepath.Join(marks, "killed")
		return fmt.Sprintf(`#!/bin/sh
if [ ! -e %[2]s ]; then : > %[2]s; exec sleep 600; fi
case " $* " in *" --dry-run "*) exec %[1]s "$@";; esac
if [ ! -e %[3]s ]; then
	: > %[3]s
	%[1]s "$@" & sleep 0.1; kill -9 $!
	echo "pg_rewind killed half way by the test" >&2
	exit 137
fi
exec %[1]s "$@"
`, real.Path("pg_rewind"), hung, killed)
	})
	back := startKeeper(t, etcd, reopen(t, old.node, func(c *pg.Config) { c.Bindir = bindir }), nodes, ModeAsync)
	testenv.Poll(t, testTimeout, "the old primary's pg_rewind hung", func() (bool, string) {
		_, err := os.Stat(hung)
		return err == nil, fmt.Sprint(err)
	})

	// Its source stops leading: the other replica takes over.
	primary.stop(t)
	next, _ := leaderOf(t, replicas...)
	waitCluster(t, next, back)
	waitRow(t, back.node, 2)
	next.exec(t, "INSERT INTO t VALUES (3)")
	waitRow(t, back.node, 3)
	if v, err := back.node.tryQuery("SELECT count(*)::text FROM t WHERE id = 100"); err != nil || v != "0" {
		t.Errorf("the row only the old primary had: %q rows, %v; want none", v, err)
	}

	log := back.node.log.String()
	for _, want := range []string{
		fmt.Sprintf("(stopped: %s leads now, not %s)", next.cfg.Node, primary.cfg.Node),
		"rewind impossible: moving the data directory aside and cloning again",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the old primary's log has no %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(killed); err != nil {
		t.Errorf("no pg_rewind was killed half way: %v", err)
	}
	if back.srv.RewindIncomplete() {
		t.Error("the cloned node is still marked as half rewound")
	}
	aside, _ := filepath.Glob(back.srv.DataDir() + ".diverged-*")
	if len(aside) != 1 {
		t.Errorf("data directories set aside: %v; want the half-rewound one", aside)
	}
}
