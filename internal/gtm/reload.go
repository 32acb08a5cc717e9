package gtm

import (
	"maps"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
)

// Reload applies a new traffic section without a restart: names, targets,
// policies, TTLs, delays, the name servers and the geo database (read
// again, so a refreshed file is picked up) change in place; a monitor
// whose check and address are unchanged keeps running with its state, so
// nothing is re-probed from scratch. A configuration the server cannot
// answer with is an error and changes nothing. It returns what still
// needs a restart (the listener, the TSIG key).
func (s *Service) Reload(cfg *config.Config) (restart []string, err error) {
	p, err := planFrom(cfg)
	if err != nil {
		return nil, err
	}
	var geo *GeoDB
	if p.geoip != "" {
		if geo, err = OpenGeoDB(p.geoip); err != nil {
			return nil, err
		}
		p.zone.Geo = geo
	}
	z, err := p.zone.normalize()
	if err != nil {
		if geo != nil {
			geo.Close()
		}
		return nil, err
	}
	start, stop, err := s.wire(p.checks)
	if err != nil {
		if geo != nil {
			geo.Close()
		}
		return nil, err
	}
	s.mu.Lock()
	s.delays = p.delays
	s.queryLog = p.queryLog
	if s.running != nil {
		// Opened again even when unchanged: logrotate moved it away.
		if err := s.srv.SetQueryLog(p.queryLog); err != nil {
			s.log.Error("reload: the query log could not be opened again; the previous file stays in use", "err", err)
		}
	}
	keep := map[string]bool{}
	for _, tm := range s.monitors {
		keep[viewKey(tm.name, tm.target)] = true
	}
	maps.DeleteFunc(s.local, func(k string, _ bool) bool { return !keep[k] })
	for _, m := range []map[string]time.Time{s.differing, s.drained} {
		maps.DeleteFunc(m, func(k string, _ time.Time) bool { return !keep[k] })
	}
	s.followVerdicts()
	// A new monitor has no verdict yet: its targets keep what they are
	// answered as until it has one, not the verdict of a check or address
	// they no longer have.
	for _, pr := range start {
		for _, tm := range pr.users {
			delete(s.local, viewKey(tm.name, tm.target))
		}
	}
	// A kept monitor's verdict applies to the targets that now follow it.
	for _, pr := range s.probes {
		if st := pr.mon.State(); st != health.Unknown {
			for _, tm := range pr.users {
				s.local[viewKey(tm.name, tm.target)] = st != health.Down
			}
		}
	}
	if s.running != nil {
		for _, pr := range start {
			s.startProbe(pr)
		}
	}
	local := maps.Clone(s.local)
	// The old database is unmapped by its reader's cleanup once no table
	// (a query in flight) refers to it any more.
	s.geo = geo
	s.mu.Unlock()
	for _, pr := range stop {
		if pr.cancel != nil {
			pr.cancel()
		}
		pr.mon.Close()
	}
	s.srv.setZone(z)
	s.verdictArrived() // the monitors changed: a starting Run counts its first verdicts again
	if s.views != nil {
		s.views.publish(local)
	}
	s.apply()
	if p.listen != s.listen {
		restart = append(restart, "traffic.listen")
	}
	if !maps.Equal(p.tsig, s.srv.tsig) {
		restart = append(restart, "traffic.tsig")
	}
	s.log.Info("traffic configuration reloaded", "names", len(z.Names), "monitors started", len(start), "stopped", len(stop))
	return restart, nil
}
