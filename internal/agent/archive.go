package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg"
)

// archiveRole streams the database's WAL into the first backup repository
// while this node serves the primary (internal/backup/wal): the archiver
// follows the primary from node to node, and each one starts where the
// repository's archive ends.
type archiveRole struct {
	a    *Agent
	db   *dbRole
	arch *wal.Archiver
	// sync: every commit waits for the archiver (archive: synchronous).
	sync bool
	// claim claims the repository before the archiver writes to it.
	claim *repoClaim
}

// archiveStall is how long WAL may wait for the repository, with a
// synchronous archive, before the agent logs that commits are stalled.
const archiveStall = 5 * time.Second

// syncArchive returns the application_name of the WAL archiver that
// every commit must wait for, or "" when haven.yaml does not ask for
// one (database.backup.archive: synchronous).
func syncArchive(cfg *config.Config) string {
	if b := cfg.Database.Backup; b != nil && len(b.Repositories) > 0 && b.Archive == "synchronous" {
		return wal.DefaultApplicationName
	}
	return ""
}

// archiveCheck is how often the role looks whether this node serves the
// primary: a new primary starts archiving within it.
const archiveCheck = 250 * time.Millisecond

// newArchive returns the archive role of a database node whose haven.yaml
// has backup repositories, and nil otherwise. It connects to postgres over
// the unix socket as its superuser, which pg_hba.conf lets haven do for
// replication.
func newArchive(a *Agent, cfg *config.Config, db *dbRole) (*archiveRole, error) {
	if db == nil || cfg.Database.Backup == nil || len(cfg.Database.Backup.Repositories) == 0 {
		return nil, nil
	}
	r, err := repo.OpenNamed(cfg.Database.Backup, "")
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	cc, err := db.srv.ConnConfig()
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	sync := syncArchive(cfg) != ""
	arch, err := wal.New(wal.Config{Conn: &cc.Config, Repo: r, Cluster: cfg.Cluster, Synchronous: sync, Logger: a.log, Registerer: a.reg})
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	return &archiveRole{a: a, db: db, arch: arch, sync: sync}, nil
}

// run archives while this node serves the primary, until ctx ends; a
// stopped archiver stores what it has received first.
func (r *archiveRole) run(ctx context.Context, _ *etcdClients) {
	t := time.NewTicker(archiveCheck)
	defer t.Stop()
	var stop context.CancelFunc
	var done chan struct{}
	halt := func(why string) {
		if stop == nil {
			return
		}
		stop()
		<-done
		stop, done = nil, nil
		r.a.log.Info("stopped archiving WAL", "because", why)
	}
	defer halt("the agent stops")
	// A node that does not serve the primary must not keep the archive's
	// slot: on a replica nobody streams from it, and postgres would keep
	// its WAL from the slot's position on, without bound. It is dropped
	// once postgres runs as a replica (at start, and after each primary
	// spell).
	dropSlot := true
	var stalled bool
	for {
		serving := r.db.servesPrimary()
		if r.sync && serving {
			stalled = r.reportStall(stalled)
		}
		switch {
		case serving && stop == nil && r.claimed(ctx):
			actx, cancel := context.WithCancel(ctx)
			stop, done = cancel, make(chan struct{})
			r.a.log.Info("archiving WAL: this node serves the primary", "synchronous", r.sync)
			go func() {
				defer close(done)
				_ = r.arch.Run(actx) // it logs and retries its own failures
			}()
		case !serving:
			halt("this node no longer serves the primary")
			if dropSlot {
				dropSlot = !r.dropSlot(ctx)
			}
		}
		dropSlot = dropSlot || serving
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportStall logs, with a synchronous archive, when WAL has waited for
// the repository longer than archiveStall (commits wait with it: the
// repository is down or slow), and when it no longer does; it returns
// whether WAL waits now.
func (r *archiveRole) reportStall(stalled bool) bool {
	lag, age := r.arch.Lag()
	switch {
	case age >= archiveStall && !stalled:
		r.a.log.Error("commits are waiting for the WAL archive: the repository has not stored WAL for a while (database.backup.archive: synchronous); see the archiver's errors",
			"waiting", age.Round(time.Millisecond), "lag_bytes", lag)
		return true
	case age < archiveStall && stalled:
		r.a.log.Warn("the WAL archive stores again: commits no longer wait for it")
		return false
	}
	return stalled
}

// dropSlot drops the archive's replication slot if postgres runs as a
// replica, and reports whether it did (or there was none).
func (r *archiveRole) dropSlot(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if replica, err := r.db.srv.IsInRecovery(ctx); err != nil || !replica {
		return false
	}
	slots, err := r.db.srv.Slots(ctx)
	if err != nil {
		return false
	}
	if !slices.ContainsFunc(slots, func(s pg.Slot) bool { return s.Name == wal.DefaultSlot }) {
		return true
	}
	if err := r.db.srv.DropSlot(ctx, wal.DefaultSlot); err != nil {
		r.a.log.Warn("could not drop the WAL archive's replication slot on this replica: it keeps WAL", "slot", wal.DefaultSlot, "err", err)
		return false
	}
	r.a.log.Info("dropped the WAL archive's replication slot: this node is a replica, and the primary archives", "slot", wal.DefaultSlot)
	return true
}

// claimed claims the repository for this cluster's system (repo.Claim)
// and reports whether it is this cluster's: a repository another cluster
// owns is not written to (the claim logs why).
func (r *archiveRole) claimed(ctx context.Context) bool {
	if r.claim == nil {
		return true
	}
	k := r.db.keeper.Load()
	if k == nil || k.State().SystemID == 0 {
		return false
	}
	return r.claim.claim(ctx, k.State().SystemID) == nil
}
