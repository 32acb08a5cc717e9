package agent

import "log/slog"

// stack holds the stops of what the agent has started, so that one path
// undoes a start that fails halfway and the same path stops the agent:
// last started, first stopped. The start order is chosen for that: the
// etcd member before the balancers (it goes last: the balancers hand their
// floating addresses over through it), the balancers before the roles that
// guard them (their addresses are handed over while the balancers still
// serve), the traffic manager last (it stops answering first).
type stack struct {
	log   *slog.Logger
	stops []stop
}

type stop struct {
	name string
	f    func()
}

// push records how to stop what just started.
func (s *stack) push(name string, f func()) {
	s.stops = append(s.stops, stop{name, f})
}

// unwind stops everything, last started first, and empties the stack. It
// is safe to call again.
func (s *stack) unwind() {
	for len(s.stops) > 0 {
		st := s.stops[len(s.stops)-1]
		s.stops = s.stops[:len(s.stops)-1]
		s.log.Debug("stopping", "what", st.name)
		st.f()
	}
}
