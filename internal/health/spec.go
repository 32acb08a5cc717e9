package health

import (
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// Defaults mirror the config package's, so that a Spec or PassiveSpec built
// by hand (tests, `haven lb` without a file) behaves like one from haven.yaml.
const (
	defaultInterval        = 2 * time.Second
	defaultTimeout         = time.Second
	defaultRise            = 2
	defaultFall            = 3
	defaultJitter          = 0.1
	minFastInterval        = 100 * time.Millisecond
	defaultEjectFor        = 10 * time.Second
	defaultPassiveFailures = 5
)

// Spec is the timing and debouncing of active checks.
type Spec struct {
	// Interval separates probe starts while the target is stably up.
	Interval time.Duration
	// FastInterval is used while Unknown and while in transition: a
	// contrary result has been seen but no verdict reached yet.
	FastInterval time.Duration
	// DownInterval is used while the target is stably down.
	DownInterval time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	// Rise consecutive passes bring a down target up; Fall consecutive
	// failures take an up target down. The first result decides alone.
	Rise, Fall int
	// Jitter spreads every wait by ±Jitter×wait so that the probes of many
	// targets do not synchronise. 0 disables it.
	Jitter float64
}

// SpecFromConfig returns the Spec of check c, with haven.yaml's defaults
// for anything c leaves unset.
func SpecFromConfig(c *config.Check) Spec {
	s := Spec{
		Interval:     c.Interval.D(),
		FastInterval: c.FastInterval.D(),
		DownInterval: c.DownInterval.D(),
		Timeout:      c.Timeout.D(),
		Rise:         c.Rise,
		Fall:         c.Fall,
		Jitter:       defaultJitter,
	}
	if c.Jitter != nil {
		s.Jitter = *c.Jitter
	}
	return s.withDefaults()
}

// withDefaults fills zero fields. Jitter is kept as given (0 means none) but
// clamped to [0, 1] so that a jittered wait is never negative.
func (s Spec) withDefaults() Spec {
	if s.Interval <= 0 {
		s.Interval = defaultInterval
	}
	if s.FastInterval <= 0 {
		s.FastInterval = min(max(s.Interval/4, minFastInterval), s.Interval)
	}
	if s.DownInterval <= 0 {
		s.DownInterval = s.Interval
	}
	if s.Timeout <= 0 {
		s.Timeout = min(defaultTimeout, s.Interval)
	}
	if s.Rise <= 0 {
		s.Rise = defaultRise
	}
	if s.Fall <= 0 {
		s.Fall = defaultFall
	}
	s.Jitter = min(max(s.Jitter, 0), 1)
	return s
}

// PassiveSpec configures passive health (outlier detection) for a target.
type PassiveSpec struct {
	// ConsecutiveFailures failures of live traffic in a row, with no
	// success between them, eject the target. 0 disables passive health.
	ConsecutiveFailures int
	// EjectFor is how long an ejected target stays down when there is no
	// active check to bring it back (default 10s).
	EjectFor time.Duration
}

// PassiveSpecFromConfig returns the passive settings of a balancer, with
// haven.yaml's defaults (5 failures, 10s).
func PassiveSpecFromConfig(p config.Passive) PassiveSpec {
	s := PassiveSpec{ConsecutiveFailures: defaultPassiveFailures, EjectFor: p.EjectFor.D()}
	if p.ConsecutiveFailures != nil {
		s.ConsecutiveFailures = *p.ConsecutiveFailures
	}
	return s.withDefaults()
}

func (s PassiveSpec) withDefaults() PassiveSpec {
	s.ConsecutiveFailures = max(s.ConsecutiveFailures, 0)
	if s.EjectFor <= 0 {
		s.EjectFor = defaultEjectFor
	}
	return s
}
