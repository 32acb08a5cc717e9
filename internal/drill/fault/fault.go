// Package fault injects faults on the node it runs on, for drills, and
// undoes each when its time is up: a role's process killed or paused,
// traffic to and from named peers dropped, the data directory's file
// system filled. The agent runs one Manager and serves it on its admin
// API when drills.enabled is set.
//
// A fault is undone by the Manager's timer, whatever happens to the drill's
// client. Dropped traffic is also undone by the kernel: the peers'
// addresses are nftables set elements with the fault's duration as their
// timeout, so even a killed agent leaves no rule behind. A fill file and a
// paused process outlive a killed agent; Manager.Recover, at the next
// start, removes the file.
package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Kind is what a fault does.
type Kind string

const (
	// Kill sends SIGKILL to a role's process (Spec.Target): the process's
	// supervisor recovers it; the duration is how long the fault is
	// listed.
	Kill Kind = "kill"
	// Pause sends SIGSTOP to a role's process and every process under it,
	// and SIGCONT when the fault ends: a frozen server that holds its sockets.
	Pause Kind = "pause"
	// Drop drops every packet to and from Spec.Peers until the fault ends.
	Drop Kind = "drop"
	// Fill fills the file system of the role's data directory to
	// Spec.Level percent with one file, removed when the fault ends.
	Fill Kind = "fill"
)

// Kinds lists the kinds, in the order the docs give them.
var Kinds = []Kind{Kill, Pause, Drop, Fill}

// Spec is a fault as a drill asks for it.
type Spec struct {
	Kind Kind `json:"kind"`
	// Target is the role whose process a kill or pause hits, or whose data
	// directory a fill fills ("postgres").
	Target string `json:"target,omitempty"`
	// Peers are the nodes a drop cuts this node off from.
	Peers []string `json:"peers,omitempty"`
	// Level is how full a fill leaves the file system, in percent.
	Level int `json:"level,omitempty"`
	// Duration is how long the fault lasts.
	Duration time.Duration `json:"duration"`
}

// Fault is an injected fault.
type Fault struct {
	ID      string    `json:"id"`
	Spec    Spec      `json:"spec"`
	Started time.Time `json:"started"`
	Until   time.Time `json:"until"`
	// Detail says what was done: the pid hit, the addresses dropped, the
	// file written.
	Detail string `json:"detail"`
}

// Env is what the Manager needs to know of its node.
type Env struct {
	// Process returns the pid of role's process, or why there is none.
	Process func(role string) (int, error)
	// DataDir returns the directory whose file system a fill of role
	// fills, or why there is none.
	DataDir func(role string) (string, error)
	// Address returns the addresses of a peer node, or why it is not one
	// (not in the configuration).
	Address func(node string) ([]netip.Addr, error)
	// Netns is the network namespace drops apply in (a file descriptor;
	// zero: the calling thread's).
	Netns int
	// MaxDuration bounds a fault's duration (default 10 minutes).
	MaxDuration time.Duration
	Logger      *slog.Logger
	// Injected and Undone, when set, are told of each fault (metrics).
	Injected, Undone func(Kind)
}

// DefaultMaxDuration bounds a fault's duration when Env.MaxDuration is 0;
// minDuration is the shortest (nftables counts timeouts in milliseconds).
const (
	DefaultMaxDuration = 10 * time.Minute
	minDuration        = 100 * time.Millisecond
)

// ErrUnknown reports an ID that names no active fault.
var ErrUnknown = errors.New("no such fault")

// undoer undoes one injected fault.
type undoer func() error

type active struct {
	Fault
	undo  undoer
	timer *time.Timer
}

// Manager injects faults and undoes them when their time is up, or at
// Stop or Close.
type Manager struct {
	env  Env
	log  *slog.Logger
	drop *dropTable

	mu     sync.Mutex
	faults map[string]*active
	next   int
	closed bool
}

// NewManager returns a Manager for env. It touches nothing; call Recover
// once at start to clear what a previous process left.
func NewManager(env Env) *Manager {
	if env.MaxDuration == 0 {
		env.MaxDuration = DefaultMaxDuration
	}
	log := env.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{env: env, log: log.With("component", "drill"), drop: &dropTable{netns: env.Netns}, faults: map[string]*active{}}
}

// Recover removes what a previous process of this node left behind: the
// drop table (its elements would expire by themselves) and the fill file
// in each of dirs.
func (m *Manager) Recover(dirs ...string) error {
	errs := []error{m.drop.remove()}
	for _, d := range dirs {
		errs = append(errs, removeFill(d))
	}
	return errors.Join(errs...)
}

// Inject checks spec, injects the fault and schedules its undoing.
func (m *Manager) Inject(spec Spec) (Fault, error) {
	if err := m.check(spec); err != nil {
		return Fault{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Fault{}, errors.New("drill: the fault manager is stopping")
	}
	if err := m.conflict(spec); err != nil {
		return Fault{}, err
	}
	var (
		detail string
		undo   undoer
		err    error
	)
	switch spec.Kind {
	case Kill:
		detail, undo, err = m.kill(spec)
	case Pause:
		detail, undo, err = m.pause(spec)
	case Drop:
		detail, undo, err = m.dropPeers(spec)
	case Fill:
		detail, undo, err = m.fill(spec)
	}
	if err != nil {
		return Fault{}, fmt.Errorf("drill: %s: %w", spec.Kind, err)
	}
	m.next++
	now := time.Now()
	a := &active{Fault: Fault{ID: strconv.Itoa(m.next), Spec: spec, Started: now, Until: now.Add(spec.Duration), Detail: detail}, undo: undo}
	a.timer = time.AfterFunc(spec.Duration, func() { _ = m.end(a.ID, "its time is up") })
	m.faults[a.ID] = a
	m.log.Warn("fault injected", "id", a.ID, "kind", spec.Kind, "target", spec.Target, "peers", spec.Peers, "level", spec.Level, "duration", spec.Duration, "detail", detail)
	if m.env.Injected != nil {
		m.env.Injected(spec.Kind)
	}
	return a.Fault, nil
}

// check refuses a spec that is not whole, before anything is touched.
func (m *Manager) check(spec Spec) error {
	switch {
	case !slices.Contains(Kinds, spec.Kind):
		return fmt.Errorf("drill: kind %q is not one of %v", spec.Kind, Kinds)
	case spec.Duration < minDuration || spec.Duration > m.env.MaxDuration:
		return fmt.Errorf("drill: duration %v: give one from %v to %v", spec.Duration, minDuration, m.env.MaxDuration)
	case spec.Kind == Drop && len(spec.Peers) == 0:
		return errors.New("drill: drop: name the peers to cut this node off from")
	case spec.Kind != Drop && spec.Target == "":
		return fmt.Errorf("drill: %s: name the target role (postgres)", spec.Kind)
	case spec.Kind == Fill && (spec.Level < 1 || spec.Level > 100):
		return fmt.Errorf("drill: fill: level %d: give a percentage from 1 to 100", spec.Level)
	}
	return nil
}

// conflict refuses a fault that overlaps an active one on the same thing:
// undoing either would undo part of the other.
func (m *Manager) conflict(spec Spec) error {
	for _, a := range m.faults {
		s := a.Spec
		switch {
		case spec.Kind == Drop && s.Kind == Drop:
			for _, p := range spec.Peers {
				if slices.Contains(s.Peers, p) {
					return fmt.Errorf("drill: %s is dropped already by fault %s until %s", p, a.ID, a.Until.Format(time.RFC3339))
				}
			}
		case spec.Kind != Drop && spec.Kind != Kill && s.Kind == spec.Kind && s.Target == spec.Target:
			return fmt.Errorf("drill: %s of %s is active already: fault %s until %s", s.Kind, s.Target, a.ID, a.Until.Format(time.RFC3339))
		}
	}
	return nil
}

// List returns the active faults, oldest first.
func (m *Manager) List() []Fault {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Fault, 0, len(m.faults))
	for _, a := range m.faults {
		out = append(out, a.Fault)
	}
	slices.SortFunc(out, func(a, b Fault) int { return a.Started.Compare(b.Started) })
	return out
}

// Stop undoes fault id now.
func (m *Manager) Stop(id string) error { return m.end(id, "stopped") }

func (m *Manager) end(id, why string) error {
	m.mu.Lock()
	a, ok := m.faults[id]
	if ok {
		delete(m.faults, id)
		a.timer.Stop()
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	err := a.undo()
	if err != nil {
		m.log.Error("fault not undone", "id", id, "kind", a.Spec.Kind, "err", err)
	} else {
		m.log.Info("fault undone", "id", id, "kind", a.Spec.Kind, "why", why)
	}
	if m.env.Undone != nil {
		m.env.Undone(a.Spec.Kind)
	}
	return err
}

// Close undoes every active fault and refuses new ones.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ids := make([]string, 0, len(m.faults))
	for id := range m.faults {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if err := m.end(id, "the agent stops"); err != nil && !errors.Is(err, ErrUnknown) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// specJSON is Spec on the wire, its duration as Go writes durations
// ("10s").
type specJSON struct {
	Kind     Kind     `json:"kind"`
	Target   string   `json:"target,omitempty"`
	Peers    []string `json:"peers,omitempty"`
	Level    int      `json:"level,omitempty"`
	Duration string   `json:"duration"`
}

// MarshalJSON writes the duration as "10s".
func (s Spec) MarshalJSON() ([]byte, error) {
	return json.Marshal(specJSON{s.Kind, s.Target, s.Peers, s.Level, s.Duration.String()})
}

// UnmarshalJSON reads the duration as "10s".
func (s *Spec) UnmarshalJSON(b []byte) error {
	var j specJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d, err := time.ParseDuration(j.Duration)
	if err != nil {
		return fmt.Errorf("duration %q: %w", j.Duration, err)
	}
	*s = Spec{Kind: j.Kind, Target: j.Target, Peers: j.Peers, Level: j.Level, Duration: d}
	return nil
}
