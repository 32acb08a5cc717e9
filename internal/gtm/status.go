package gtm

import (
	"maps"
	"time"

	"github.com/haven-ha/haven/internal/health"
)

// Status is the traffic manager in the status API: what each managed name
// answers now, and each target's health.
type Status struct {
	Zone string `json:"zone"`
	// Views says whose verdicts the answers follow (standalone, shared,
	// isolated), and Peers how many other instances publish a view.
	Views ViewMode     `json:"views"`
	Peers int          `json:"peers"`
	Names []NameStatus `json:"names"`
}

// NameStatus is one managed name.
type NameStatus struct {
	Name    string   `json:"name"`
	Policy  Policy   `json:"policy"`
	Answers []string `json:"answers"` // the addresses (or CNAMEs) it may answer with now
	// Servfail: no target is healthy and the name is closed.
	Servfail bool           `json:"servfail,omitempty"`
	Targets  []TargetStatus `json:"targets"`
}

// TargetStatus is one target of a managed name.
type TargetStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	// Health is the check's state; nil for a target without a check.
	Health *health.Status `json:"health,omitempty"`
	// Follows is the haven state the target follows instead of a check,
	// such as "balancer web" or "database in east".
	Follows string `json:"follows,omitempty"`
	// DrainedUntil is when an operator's drain ends (zero: not drained).
	DrainedUntil time.Time `json:"drained_until,omitzero"`
	// Votes are the instances' views of the target that its answer
	// follows, as last decided; nil unless the views are shared.
	Votes *Votes `json:"votes,omitempty"`
}

// Status reports every managed name.
func (s *Service) Status() Status {
	mons := map[[2]string]*health.Monitor{}
	follows := map[[2]string]string{}
	s.mu.Lock()
	for _, tm := range s.monitors {
		if tm.mon != nil {
			mons[[2]string{tm.name, tm.target}] = tm.mon
		}
		if f := tm.follows; f != nil {
			follows[[2]string{tm.name, tm.target}] = stateKey(f)
			if f.Region != "" {
				follows[[2]string{tm.name, tm.target}] += " in " + f.Region
			}
		}
	}
	drained := map[string]time.Time{}
	for _, m := range []map[string]time.Time{s.drained, s.recorded} {
		for k := range m {
			if u := s.drainedUntil(k); s.clock.Now().Before(u) {
				drained[k] = u
			}
		}
	}
	votes := maps.Clone(s.votes)
	s.mu.Unlock()
	st := Status{Zone: s.srv.Zone().Origin, Views: ViewMode(s.srv.viewMode.Load().(string))}
	if s.views != nil {
		st.Peers = s.views.peerCount()
	}
	for _, ns := range s.srv.names() {
		for i, tg := range ns.Targets {
			if m := mons[[2]string{ns.rel, tg.Name}]; m != nil {
				h := m.Snapshot()
				ns.Targets[i].Health = &h
			}
			ns.Targets[i].DrainedUntil = drained[viewKey(ns.rel, tg.Name)]
			ns.Targets[i].Follows = follows[[2]string{ns.rel, tg.Name}]
			if v, ok := votes[viewKey(ns.rel, tg.Name)]; ok {
				ns.Targets[i].Votes = &v
			}
		}
		st.Names = append(st.Names, ns.NameStatus)
	}
	return st
}
