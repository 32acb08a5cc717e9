package gtm

import (
	"fmt"
	"maps"
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

// SetRecordedDrains replaces the drains kept in etcd (haven dns drain on a
// cluster with coordination, which every name server watches): each key,
// DrainKey(name, target), is out of the answers until its time, as a
// local drain is. The record's lease ends it in etcd; the watch then
// takes it away here.
func (s *Service) SetRecordedDrains(drains map[string]time.Time) {
	s.mu.Lock()
	s.recorded = maps.Clone(drains)
	s.mu.Unlock()
	s.apply()
}

// DrainKey is the key of rel's target in SetRecordedDrains.
func DrainKey(rel, target string) string { return viewKey(rel, target) }

// drainedUntil is when key's drain ends, local or recorded, whichever
// ends later (zero: not drained). Called with s.mu held.
func (s *Service) drainedUntil(key string) time.Time {
	until := s.drained[key]
	if r := s.recorded[key]; r.After(until) {
		until = r
	}
	return until
}

// Known says whether rel is a managed name with a target called target,
// and if not, which targets it has.
func (s *Service) Known(rel, target string) error {
	if s.monitor(rel, target) == nil {
		return s.noTarget(rel, target)
	}
	return nil
}

// Drained says whether rel's target is out of the answers by a drain,
// local or recorded, now.
func (s *Service) Drained(rel, target string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock.Now().Before(s.drainedUntil(viewKey(rel, target)))
}
