// Package health probes targets and turns the results into one debounced
// verdict per target, up or down, that every haven role shares: the balancer
// routes by it, the traffic manager answers by it.
//
// A Monitor watches one target. Active probes (a Prober run by Monitor.Run)
// move it between states with HAProxy's rise/fall rule; passive observations
// of live traffic (ObserveSuccess, ObserveFailure) can eject it at once, like
// Envoy's outlier detection, within the budget of a Group. Every transition is
// an Event: logged, counted, kept in a short history and handed to the owner.
//
// See docs/health.md for the configuration and the failure-detection bounds.
package health

import (
	"fmt"
	"time"
)

// State is a target's health verdict. The zero value is Unknown.
type State int32

const (
	// Unknown means no verdict yet: the first probe has not completed.
	Unknown State = iota
	// Up means the target passes its checks and may take traffic.
	Up
	// Down means the target failed its checks, or was ejected passively.
	Down
)

// String returns "unknown", "up" or "down".
func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("state(%d)", int32(s))
}

// MarshalText encodes s as its String, so that JSON shows "up", not 1.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses "unknown", "up" or "down".
func (s *State) UnmarshalText(b []byte) error {
	switch string(b) {
	case "unknown":
		*s = Unknown
	case "up":
		*s = Up
	case "down":
		*s = Down
	default:
		return fmt.Errorf("health: %q is not a state: want unknown, up or down", b)
	}
	return nil
}

// Result is the outcome of one active probe.
type Result struct {
	At       time.Time     // when the probe started
	Duration time.Duration // how long it took
	Err      error         // nil: the probe passed
}

// Event is one state transition of one target.
type Event struct {
	Check  string    `json:"check"`
	Target string    `json:"target"`
	From   State     `json:"from"`
	To     State     `json:"to"`
	At     time.Time `json:"at"`
	// Reason says why: the failing probe's error, the run of passes that
	// brought the target back, or the passive failures that ejected it.
	Reason string `json:"reason"`
	// Passive is set for transitions made by passive health: an ejection,
	// and the return after eject_for when there is no active check.
	Passive bool `json:"passive,omitempty"`
}

// Status is a JSON-friendly snapshot of a Monitor, for the admin API and the
// dashboard.
type Status struct {
	Check  string    `json:"check"`
	Target string    `json:"target"`
	State  State     `json:"state"`
	Since  time.Time `json:"since"` // when State was entered
	// Last is the latest active probe; nil before the first one.
	Last *ResultStatus `json:"last,omitempty"`
	// ConsecutiveOK and ConsecutiveFail count the current run of passing
	// or failing probes; at most one of them is non-zero.
	ConsecutiveOK   int `json:"consecutive_ok"`
	ConsecutiveFail int `json:"consecutive_fail"`
	// PassiveEjected is set while the target is down because of passive
	// health.
	PassiveEjected bool `json:"passive_ejected"`
	// PassiveFailures is the current run of failures seen in live traffic.
	PassiveFailures int64 `json:"passive_failures"`
	// Events are the latest transitions, oldest first.
	Events []Event `json:"events"`
}

// ResultStatus is a Result in JSON-friendly form.
type ResultStatus struct {
	At              time.Time `json:"at"`
	DurationSeconds float64   `json:"duration_seconds"`
	OK              bool      `json:"ok"`
	Error           string    `json:"error,omitempty"`
}

func resultStatus(r Result) *ResultStatus {
	if r.At.IsZero() {
		return nil
	}
	s := &ResultStatus{At: r.At, DurationSeconds: r.Duration.Seconds(), OK: r.Err == nil}
	if r.Err != nil {
		s.Error = r.Err.Error()
	}
	return s
}
