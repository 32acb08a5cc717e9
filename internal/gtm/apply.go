package gtm

import (
	"time"

	"github.com/haven-ha/haven/internal/clock"
)

// apply sets the server's answers from the verdicts (this instance's own,
// or the majority of the instances' views), the failover and failback
// delays, and the drains.
func (s *Service) apply() {
	s.mu.Lock()
	defer s.mu.Unlock()
	eff, mode := s.local, Standalone
	s.votes = nil
	if s.views != nil {
		eff, s.votes, mode = s.views.decide(s.local)
	}
	s.srv.viewMode.Store(string(mode))
	now := s.clock.Now()
	var next time.Time // the earliest moment a delay or drain ends
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, tm := range s.monitors {
		key := viewKey(tm.name, tm.target)
		if until, ok := s.drained[key]; ok && !now.Before(until) {
			delete(s.drained, key)
			s.log.Info("drain ended", "name", tm.name, "target", tm.target)
		}
		if until := s.drainedUntil(key); now.Before(until) {
			s.srv.SetHealth(tm.name, tm.target, false)
			later(until)
			continue
		}
		up, ok := eff[key]
		if !ok {
			// No verdict yet (or no check): answered as up.
			up = true
			if tm.mon != nil {
				if cur, known := s.srv.answered(tm.name, tm.target); known && !cur {
					s.srv.SetHealth(tm.name, tm.target, true) // a drain ended before the first verdict
				}
				continue
			}
		}
		cur, known := s.srv.answered(tm.name, tm.target)
		if !known || cur == up {
			delete(s.differing, key)
			s.srv.SetHealth(tm.name, tm.target, up)
			continue
		}
		since, ok := s.differing[key]
		if !ok {
			since = now
			s.differing[key] = now
		}
		delay := s.delays[tm.name][1] // failback
		if !up {
			delay = s.delays[tm.name][0]
		}
		if now.Sub(since) >= delay {
			delete(s.differing, key)
			s.srv.SetHealth(tm.name, tm.target, up)
		} else {
			later(since.Add(delay))
		}
	}
	s.schedule(now, next)
}

// reapply is a pending apply, when a delay or a drain ends.
type reapply struct {
	timer clock.Timer
	stop  chan struct{} // closed when replaced, before the timer fires
}

// schedule arms the one apply that the earliest end of a delay or drain
// needs, at next (none if next is zero or the service is closed),
// replacing the one armed before. s.mu is held.
func (s *Service) schedule(now, next time.Time) {
	if r := s.reapply; r != nil {
		r.timer.Stop()
		close(r.stop)
		s.reapply = nil
	}
	if next.IsZero() || s.closed {
		return
	}
	r := &reapply{timer: s.clock.NewTimer(next.Sub(now)), stop: make(chan struct{})}
	s.reapply = r
	go func() {
		select {
		case <-r.timer.C():
			s.apply()
		case <-r.stop:
		}
	}()
}
