package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/haven-ha/haven/internal/pg"
)

// reinitRequest asks the loop to rebuild this node's replica.
type reinitRequest struct {
	fromBackup bool
	done       chan error // buffered: the loop never waits for the caller
}

// ErrReinitPrimary is Reinit's error on the node that is the primary.
var ErrReinitPrimary = errors.New("this node is the primary: a primary is not rebuilt; switch over first (haven pg switchover), then rebuild it as a replica")

// Reinit rebuilds this node's replica from nothing, as patronictl reinit
// does: postgres is stopped, its data directory removed, and the node
// cloned again from the primary, or, with fromBackup, restored from the
// newest base backup and the archive's WAL, so that the primary sends only
// the WAL the archive does not have yet. It returns once the new replica
// streams from the primary, or with the reason it could not. The primary
// refuses (ErrReinitPrimary), and so does a node that knows no primary to
// follow: its data directory is not touched then.
func (k *Keeper) Reinit(ctx context.Context, fromBackup bool) error {
	if fromBackup && k.cfg.RestoreBackup == nil {
		return errors.New("the cluster has no backups (database.backup): rebuild from the primary instead")
	}
	req := reinitRequest{fromBackup: fromBackup, done: make(chan error, 1)}
	select {
	case k.reinits <- req:
	default:
		return errors.New("a rebuild of this node is already under way")
	}
	k.poke()
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("the rebuild goes on, but the wait for it ended: %w", ctx.Err())
	}
}

// reinit does Reinit's work in the loop's goroutine, which owns postgres.
func (k *Keeper) reinit(ctx context.Context, fromBackup bool) error {
	if acting, _ := k.guard.lead(); acting {
		return ErrReinitPrimary
	}
	leader, why := k.m.leader(k.look())
	if why != "" {
		return fmt.Errorf("no primary to follow (%s): nothing removed", why)
	}
	how := "cloning the primary"
	if fromBackup {
		how = "restoring the newest backup"
	}
	k.log.Warn("rebuilding this replica, as asked: stopping postgres and removing its data directory", "event", "database", "then", how, "primary", leader.Node)
	if err := k.stopPostgres(); err != nil {
		return fmt.Errorf("stop postgres: %w", err)
	}
	if err := os.RemoveAll(k.srv.DataDir()); err != nil {
		return fmt.Errorf("remove the data directory: %w", err)
	}
	up := k.cfg.Replication
	up.Host, up.Port, up.Slot = leader.Host, leader.Port, pg.SlotName(k.cfg.Node)
	if !fromBackup {
		return k.cloneWith(ctx, leader.Node, false, up, nil)
	}
	err := k.cloneWith(ctx, leader.Node, false, up, k.cfg.RestoreBackup)
	if err != nil && k.srv.PID() == 0 {
		// What the restore left is no replica: with the directory gone,
		// the next round clones the primary, as a new node does.
		if rerr := os.RemoveAll(k.srv.DataDir()); rerr != nil {
			return errors.Join(err, rerr)
		}
		return fmt.Errorf("%w; the next round clones the primary instead", err)
	}
	return err
}
