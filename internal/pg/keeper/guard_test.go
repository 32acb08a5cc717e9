package keeper

import (
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/clock"
)

// TestGuardActsUntilItsDeadline: the keeper acts as the primary from the
// owner's Acquire until the lease deadline on its own clock, without a
// word from the owner, and again from an Extend.
func TestGuardActsUntilItsDeadline(t *testing.T) {
	clk := clock.NewFake(t0)
	k := &Keeper{clk: clk, wake: make(chan struct{}, 1)}
	g := &keeperGuard{k: k}
	if g.isActing() {
		t.Fatal("acting before Acquire")
	}
	g.Acquire(7, t0.Add(time.Second))
	if acting, epoch := g.lead(); !acting || epoch != 7 || !g.fenceOpen() {
		t.Fatalf("after Acquire: acting %v, epoch %d, fence open %v; want true, 7, true", acting, epoch, g.fenceOpen())
	}
	select {
	case <-k.wake:
	default:
		t.Error("Acquire did not wake the keeper, which promotes")
	}
	clk.Advance(time.Second - time.Millisecond)
	if !g.isActing() {
		t.Fatal("not acting a millisecond before the deadline")
	}
	clk.Advance(time.Millisecond)
	if acting, epoch := g.lead(); acting || epoch != 7 {
		t.Fatalf("at the deadline: acting %v (epoch %d), want false", acting, epoch)
	}
	g.Extend(t0.Add(3 * time.Second))
	if !g.isActing() {
		t.Fatal("not acting after Extend moved the deadline ahead")
	}
	clk.Advance(2 * time.Second)
	if g.isActing() {
		t.Fatal("acting past the extended deadline")
	}
}
