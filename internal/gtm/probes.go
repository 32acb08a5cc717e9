package gtm

import (
	"context"
	"fmt"
	"maps"
	"reflect"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
)

// probeKey names a monitor: one per check and address, so that records
// naming the same target share its verdicts, never disagree about it,
// and probe it once.
type probeKey struct{ check, addr string }

// probe is one health monitor and the targets that follow it.
type probe struct {
	mon     *health.Monitor
	check   config.Check // as configured: a reload that changes it replaces the monitor
	users   []*targetMonitor
	applied bool               // its first verdict is in the answers
	cancel  context.CancelFunc // stops its Run; nil before Run
}

// wire makes the targets' monitors from checks, keeping the running ones
// whose check and address are unchanged (with their state), and returns
// the monitors to start and those to stop. Called before Run, or by
// Reload; s.mu must not be held.
func (s *Service) wire(checks []pending) (start, stop []*probe, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	probes := map[probeKey]*probe{}
	var monitors []*targetMonitor
	for _, p := range checks {
		tm := &targetMonitor{name: p.rel, target: p.target, follows: p.follows}
		monitors = append(monitors, tm)
		if p.check == nil {
			continue // always up; only a drain takes it out
		}
		key := probeKey{p.check.Name, p.addr}
		pr := probes[key]
		if pr == nil {
			if old := s.probes[key]; old != nil && reflect.DeepEqual(old.check, *p.check) {
				pr, old.users = old, nil
			} else if pr, err = s.newProbe(p); err != nil {
				for _, n := range start {
					n.mon.Close()
				}
				return nil, nil, err
			} else {
				start = append(start, pr)
			}
			probes[key] = pr
		}
		tm.mon = pr.mon
		pr.users = append(pr.users, tm)
	}
	for key, old := range s.probes {
		if probes[key] != old {
			stop = append(stop, old)
		}
	}
	s.probes, s.monitors = probes, monitors
	return start, stop, nil
}

// newProbe makes the monitor of a check at an address.
func (s *Service) newProbe(p pending) (*probe, error) {
	prober, err := health.NewProber(p.check)
	if err != nil {
		return nil, fmt.Errorf("gtm: %s target %s: %w", p.rel, p.target, err)
	}
	pr := &probe{check: *p.check}
	pr.mon = health.NewMonitor(health.Options{
		Check:  p.check.Name,
		Target: p.addr,
		Spec:   health.SpecFromConfig(p.check),
		Prober: prober,
		Clock:  s.clock,
		// The monitor adds component=health and target=ADDRESS itself.
		Logger:  s.opt.Logger.With("component", "gtm"),
		Metrics: s.opt.HealthMetrics,
		OnTransition: func(ev health.Event) {
			s.mu.Lock()
			users := pr.users
			s.mu.Unlock()
			s.setLocal(users, ev.To != health.Down)
			s.mu.Lock()
			first := !pr.applied
			pr.applied = true
			s.mu.Unlock()
			if first {
				s.verdictArrived()
			}
			if s.opt.OnTransition != nil {
				s.opt.OnTransition(ev)
			}
		},
	})
	return pr, nil
}

// setLocal records this instance's verdict on the targets a monitor
// checks and applies it.
func (s *Service) setLocal(tms []*targetMonitor, up bool) {
	s.mu.Lock()
	for _, tm := range tms {
		s.local[viewKey(tm.name, tm.target)] = up
	}
	local := maps.Clone(s.local)
	s.mu.Unlock()
	if s.views != nil {
		s.views.publish(local)
	}
	s.apply()
}
