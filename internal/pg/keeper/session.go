package keeper

import (
	"context"
	"errors"
	"fmt"

	"github.com/haven-ha/haven/internal/pg"
)

// startSupervisor starts a supervisor session unless one runs.
func (k *Keeper) startSupervisor(ctx context.Context) { k.startSupervisorIf(ctx, nil) }

// startPrimary starts a supervisor session for a primary, only while the
// node leads. Release clears the lead before it stops the session, under
// the same lock, so a primary never starts after its node let go.
func (k *Keeper) startPrimary(ctx context.Context) bool {
	return k.startSupervisorIf(ctx, k.guard.isActing)
}

func (k *Keeper) startSupervisorIf(ctx context.Context, cond func() bool) bool {
	k.supMu.Lock()
	defer k.supMu.Unlock()
	if k.session != nil {
		return true
	}
	if cond != nil && !cond() {
		return false
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &supSession{cancel: cancel, done: make(chan struct{})}
	k.session = s
	go func() {
		s.err = k.sup.Run(sctx)
		close(s.done)
	}()
	return true
}

// supSession is one run of the Supervisor.
type supSession struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err
	err    error
}

func (k *Keeper) supRunning() bool {
	k.supMu.Lock()
	defer k.supMu.Unlock()
	return k.session != nil
}

// stopPostgres ends the supervisor session, a fast shutdown that ends every
// session at once, and returns when postgres has stopped. Concurrent
// callers all wait; no new session starts until the old one has ended.
func (k *Keeper) stopPostgres() error {
	k.supMu.Lock()
	s := k.session
	k.supMu.Unlock()
	if s == nil {
		return nil
	}
	s.cancel()
	<-s.done
	k.supMu.Lock()
	if k.session == s {
		k.session = nil
	}
	k.supMu.Unlock()
	return s.err
}

// waitRunning waits until the supervisor session that bootstrap started
// runs postgres, woken by the supervisor's changes of state. It gives up
// when the session ends: Release stops it when the node lets go of the
// lead, and no state it waits for comes then.
func (k *Keeper) waitRunning(ctx context.Context) error {
	for {
		// Before the state: a change after this read closes it.
		changed := k.supervisorChanged()
		switch k.sup.Status().State {
		case pg.StateRunning:
			return nil
		case pg.StateFailed:
			return fmt.Errorf("postgres failed to start after initdb; see %s", k.srv.LogFile())
		}
		k.supMu.Lock()
		s := k.session
		k.supMu.Unlock()
		if s == nil {
			return errStoppedWhileInitialising
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return errStoppedWhileInitialising
		case <-changed:
		}
	}
}

var errStoppedWhileInitialising = errors.New("postgres was stopped before it accepted connections: the node let go of the lead while initialising")

// supervisorChanged returns a channel that closes at the supervisor's next
// change of state.
func (k *Keeper) supervisorChanged() <-chan struct{} {
	k.changeMu.Lock()
	defer k.changeMu.Unlock()
	return k.changed
}

// onSupervisorChange wakes the loop and whoever waits in waitRunning.
func (k *Keeper) onSupervisorChange(pg.Status) {
	k.changeMu.Lock()
	close(k.changed)
	k.changed = make(chan struct{})
	k.changeMu.Unlock()
	k.poke()
}
