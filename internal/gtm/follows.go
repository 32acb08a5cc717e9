package gtm

import (
	"context"
	"maps"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
)

// stateKey is the name, among an agent's published states, of what f
// follows.
func stateKey(f *config.Follows) string {
	switch {
	case f.Balancer != "":
		return coord.BalancerState(f.Balancer)
	case f.VIP != "":
		return coord.VIPState(f.VIP)
	}
	return coord.DatabaseState
}

// followed reports whether some agent (of f's region, if it names one)
// publishes the state f follows as up. An agent that dies leaves the
// member list when its entry's lease expires (coord.DefaultMemberTTL). In
// a database that spans two regions (active known), the database of a
// region is up while that region is the active one: the regions' agents
// publish in their own region's etcd, and the global scope says which
// region takes the writes.
func followed(f *config.Follows, members map[string]coord.MemberInfo, active *string) bool {
	if f.Database && f.Region != "" && active != nil {
		return *active == f.Region
	}
	key := stateKey(f)
	for _, m := range members {
		if (f.Region == "" || m.Region == f.Region) && m.Checks[key] == coord.CheckUp {
			return true
		}
	}
	return false
}

// watchState feeds the targets that follow haven's state from the
// agents' member entries in etcd, until ctx ends.
func (s *Service) watchState(ctx context.Context) {
	cli, err := s.etcd(ctx)
	if err != nil {
		return // stopped before etcd answered
	}
	for ctx.Err() == nil {
		err := coord.WatchMembers(ctx, cli, s.opt.Cluster, s.setMembers)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("watching haven's state for followed targets", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// watchActiveRegion follows the active region of a database that spans
// two regions, until ctx ends.
func (s *Service) watchActiveRegion(ctx context.Context) {
	s.opt.ActiveRegion(ctx, func(region string) {
		s.mu.Lock()
		if s.activeRegion != nil && *s.activeRegion == region {
			s.mu.Unlock()
			return
		}
		s.log.Info("active region", "event", "region", "region", region)
		s.activeRegion = &region
		s.refollow()
	})
}

// refollow applies the verdicts of the targets that follow haven's state
// after what they follow changed: shared with the other name servers and
// answered. s.mu is held, and released.
func (s *Service) refollow() {
	changed := s.followVerdicts()
	local := maps.Clone(s.local)
	s.mu.Unlock()
	if changed {
		if s.views != nil {
			s.views.publish(local)
		}
		s.apply()
	}
}

// setMembers takes a snapshot of the agents' states and applies the
// verdicts of the targets that follow them.
func (s *Service) setMembers(members map[string]coord.MemberInfo) {
	s.mu.Lock()
	first := s.members == nil
	s.members = members
	s.refollow()
	if first {
		s.verdictArrived()
	}
}

// followVerdicts sets the local verdict of every following target from
// s.members, logging changes, and reports whether any changed. s.mu is
// held.
func (s *Service) followVerdicts() (changed bool) {
	if s.members == nil {
		return false
	}
	for _, tm := range s.monitors {
		if tm.follows == nil {
			continue
		}
		key, up := viewKey(tm.name, tm.target), followed(tm.follows, s.members, s.activeRegion)
		if was, ok := s.local[key]; ok && was == up {
			continue
		}
		s.local[key], changed = up, true
		s.log.Info("followed state changed", "name", tm.name, "target", tm.target, "follows", stateKey(tm.follows), "region", tm.follows.Region, "up", up)
	}
	return changed
}

// follower returns a target that follows haven's state, nil when none
// does. s.mu is held (or the service is not shared yet).
func (s *Service) follower() *targetMonitor {
	for _, tm := range s.monitors {
		if tm.follows != nil {
			return tm
		}
	}
	return nil
}
