package gtm

import (
	"fmt"
	"strings"
	"time"
)

// Drain takes a target of the managed name rel out of the answers for d,
// whatever its health, as if it were down (a planned maintenance); the
// answers take it back when d ends or Enable is called.
func (s *Service) Drain(rel, target string, d time.Duration) error {
	if s.monitor(rel, target) == nil {
		return s.noTarget(rel, target)
	}
	if d <= 0 {
		return fmt.Errorf("gtm: a drain needs a positive duration, not %v", d)
	}
	s.mu.Lock()
	s.drained[viewKey(rel, target)] = s.clock.Now().Add(d)
	s.mu.Unlock()
	s.log.Info("target drained", "name", rel, "target", target, "for", d)
	s.apply()
	return nil
}

// Enable ends a drain.
func (s *Service) Enable(rel, target string) error {
	if s.monitor(rel, target) == nil {
		return s.noTarget(rel, target)
	}
	s.mu.Lock()
	delete(s.drained, viewKey(rel, target))
	s.mu.Unlock()
	s.log.Info("target enabled", "name", rel, "target", target)
	s.apply()
	return nil
}

func (s *Service) monitor(rel, target string) *targetMonitor {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tm := range s.monitors {
		if tm.name == rel && tm.target == target {
			return tm
		}
	}
	return nil
}

// noTarget says that rel has no target called target, and which it has.
func (s *Service) noTarget(rel, target string) error {
	var have []string
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tm := range s.monitors {
		if tm.name == rel {
			have = append(have, tm.target)
		}
	}
	if len(have) == 0 {
		return fmt.Errorf("gtm: traffic.records has no name %q", rel)
	}
	return fmt.Errorf("gtm: %s has no target %q (its targets: %s)", rel, target, strings.Join(have, ", "))
}
