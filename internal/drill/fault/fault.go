// Package fault injects faults on the node it runs on, for drills, and
// undoes each when its time is up: a process killed, paused or stopped
// (postgres, a process the configuration names, the agent itself),
// traffic to and from named peers dropped or thinned out, the data
// directory's file system filled. The agent runs one Manager and serves it
// on its admin API when drills.enabled is set.
//
// A fault is undone by the Manager's timer, whatever happens to the drill's
// client. Dropped and lost traffic is also undone by the kernel: the
// peers' addresses are nftables set elements with the fault's duration as
// their timeout, so even a killed agent leaves no rule behind. The agent
// cannot wake itself: its own pause is held by a helper process in a
// session of its own (Hold), which outlives it. A fill file, a paused
// process and a stopped unit outlive a killed agent; Manager.Recover, at
// the next start, removes the file.
package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
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
	// Loss drops Spec.Level percent of the packets to and from Spec.Peers,
	// each at random, until the fault ends.
	Loss Kind = "loss"
	// Fill fills the file system of the role's data directory to
	// Spec.Level percent with one file, removed when the fault ends.
	Fill Kind = "fill"
	// Stop stops a named process's systemd unit (systemctl stop) and
	// starts it again when the fault ends.
	Stop Kind = "stop"
)

// Kinds lists the kinds, in the order the docs give them.
var Kinds = []Kind{Kill, Pause, Stop, Drop, Loss, Fill}

// The targets besides a role's name (postgres).
const (
	// TargetAgent is the agent itself: a kill is SIGKILL to it (its
	// supervisor starts it again), a pause stops it and every process
	// under it, held by a helper process (Hold).
	TargetAgent = "agent"
	// ProcessPrefix starts a target that names a process of Env.Processes
	// (drills.processes): "process:app".
	ProcessPrefix = "process:"
)

// Spec is a fault as a drill asks for it.
type Spec struct {
	Kind Kind `json:"kind"`
	// Target is what a kill, pause or stop hits: a role ("postgres"),
	// TargetAgent or ProcessPrefix and a name; for a fill, the role whose
	// data directory it fills.
	Target string `json:"target,omitempty"`
	// Peers are what a drop or a loss cuts this node off from: node names
	// or backends' addresses, as Env.Address resolves them. A pause of
	// the agent may name peers too: their traffic is dropped at the moment
	// the agent stops, and until it wakes, by the helper that holds it
	// (the loss of a node: it neither acts nor answers, and had no warning).
	Peers []string `json:"peers,omitempty"`
	// Level is a percentage: how full a fill leaves the file system, how
	// many packets a loss drops.
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
	// Address returns the addresses of a peer (a node, or a backend by its
	// address), or why it is not one (not in the configuration).
	Address func(peer string) ([]netip.Addr, error)
	// Processes returns the process a target "process:NAME" names, or
	// why there is none.
	Processes func(name string) (Process, error)
	// Self is the pid TargetAgent hits (0: this process's).
	Self int
	// HoldCommand runs Hold in a process of its own: the agent's binary
	// and the subcommand that calls Hold; the Manager adds --pid, --after
	// and --for. Without it the agent cannot be paused.
	HoldCommand []string
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

// ErrAlreadyFull is a fill refused because the file system is already at
// or above the level asked for: nothing was injected. The admin API
// answers it with 409 Conflict, so that a client tells it from a failure.
var ErrAlreadyFull = errors.New("the file system is already that full")

// undoer undoes one injected fault.
type undoer func() error

type active struct {
	Fault
	undo  undoer
	timer *time.Timer
	// addrs are the addresses a drop or loss hits.
	addrs []netip.Addr
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
	if env.Self == 0 {
		env.Self = os.Getpid()
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
	// Peers are resolved before the lock: a backend's host name may take
	// a DNS lookup.
	var peers []peer
	if len(spec.Peers) > 0 {
		var err error
		if peers, err = m.resolve(spec.Peers); err != nil {
			return Fault{}, fmt.Errorf("drill: %s: %w", spec.Kind, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Fault{}, errors.New("drill: the fault manager is stopping")
	}
	if err := m.conflict(spec, peers); err != nil {
		return Fault{}, err
	}
	var (
		detail string
		undo   undoer
		err    error
		// late is how long after the answer the fault begins.
		late time.Duration
	)
	switch spec.Kind {
	case Kill:
		detail, undo, err = m.kill(spec)
	case Pause:
		if spec.Target == TargetAgent {
			late = selfDelay
			detail, undo, err = m.pauseSelf(spec, peers)
		} else {
			detail, undo, err = m.pause(spec)
		}
	case Stop:
		detail, undo, err = m.stop(spec)
	case Drop, Loss:
		late = cutDelay
		detail, undo, err = m.cut(spec, peers)
	case Fill:
		detail, undo, err = m.fill(spec)
	}
	if err != nil {
		return Fault{}, fmt.Errorf("drill: %s: %w", spec.Kind, err)
	}
	m.next++
	now := time.Now()
	a := &active{Fault: Fault{ID: strconv.Itoa(m.next), Spec: spec, Started: now, Until: now.Add(late + spec.Duration), Detail: detail}, undo: undo}
	for _, p := range peers {
		a.addrs = append(a.addrs, p.addrs...)
	}
	a.timer = time.AfterFunc(late+spec.Duration, func() { _ = m.end(a.ID, "its time is up") })
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
	case cuts(spec.Kind) && len(spec.Peers) == 0:
		return fmt.Errorf("drill: %s: name the peers to cut this node off from", spec.Kind)
	case !cuts(spec.Kind) && len(spec.Peers) > 0 && (spec.Kind != Pause || spec.Target != TargetAgent):
		return fmt.Errorf("drill: %s of %q: peers go with a drop, a loss or a pause of the agent (a node's loss)", spec.Kind, spec.Target)
	case !cuts(spec.Kind) && spec.Target == "":
		return fmt.Errorf("drill: %s: name the target (postgres, agent or process:NAME)", spec.Kind)
	case (spec.Kind == Fill || spec.Kind == Loss) && (spec.Level < 1 || spec.Level > 100):
		return fmt.Errorf("drill: %s: level %d: give a percentage from 1 to 100", spec.Kind, spec.Level)
	case spec.Kind == Stop && !strings.HasPrefix(spec.Target, ProcessPrefix):
		return fmt.Errorf("drill: stop: target %q: a stop hits a process:NAME of drills.processes that has a unit", spec.Target)
	case spec.Kind == Fill && (spec.Target == TargetAgent || strings.HasPrefix(spec.Target, ProcessPrefix)):
		return fmt.Errorf("drill: fill: target %q: a fill fills a role's data directory (postgres)", spec.Target)
	}
	return nil
}

// cuts says whether a kind acts on the traffic to and from peers.
func cuts(k Kind) bool { return k == Drop || k == Loss }

// cutOf is the set a fault puts its peers' addresses in: a drop's, a
// loss's, or the drop of a pause of the agent; "" for none.
func cutOf(s Spec) Kind {
	switch {
	case cuts(s.Kind):
		return s.Kind
	case len(s.Peers) > 0:
		return Drop
	}
	return ""
}

// conflict refuses a fault that overlaps an active one on the same thing:
// undoing either would undo part of the other. A drop and a loss of one
// peer may overlap: each has its own set.
func (m *Manager) conflict(spec Spec, peers []peer) error {
	for _, a := range m.faults {
		s := a.Spec
		if k := cutOf(spec); k != "" && cutOf(s) == k {
			for _, p := range peers {
				for _, addr := range p.addrs {
					if slices.Contains(a.addrs, addr) {
						return fmt.Errorf("drill: %s (%s) is under a %s already: fault %s until %s", p.name, addr, s.Kind, a.ID, a.Until.Format(time.RFC3339))
					}
				}
			}
		}
		if !cuts(spec.Kind) && s.Target == spec.Target && (s.Kind == spec.Kind && spec.Kind != Kill || holds(s.Kind) && holds(spec.Kind)) {
			return fmt.Errorf("drill: %s of %s is active already: fault %s until %s", s.Kind, s.Target, a.ID, a.Until.Format(time.RFC3339))
		}
	}
	return nil
}

// holds says whether a kind keeps its target's process from running until
// it ends: a pause and a stop of one process would undo each other.
func holds(k Kind) bool { return k == Pause || k == Stop }

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
