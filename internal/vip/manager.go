package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// State is a node's role for one floating address, as keepalived names
// them for its notify scripts.
type State string

// The states a Manager reports.
const (
	// StateBackup: eligible, not holding.
	StateBackup State = "backup"
	// StateHolder: holds the address and answers for it.
	StateHolder State = "holder"
	// StateFault: not eligible (its tracked checks fail), or the address
	// could not be configured.
	StateFault State = "fault"
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	// Name is what the address belongs to (a balancer), for logs, metrics
	// and notify commands.
	Name   string
	Node   string
	Prefix netip.Prefix
	// Interface carries the address; "" finds the interface whose network
	// contains it.
	Interface string
	Notify    config.Notify
	// Fence is the node's fence, shared by all its floating addresses.
	Fence   *Fence
	Logger  *slog.Logger
	Metrics *Metrics
	// Burst is how many announcements go out on takeover (default 5,
	// keepalived's garp_master_repeat), Spacing the gap between them
	// (default 20ms), and Refresh the period of announcements while
	// holding (default 10s; keepalived's garp_master_refresh is off by
	// default, but switches forget).
	Burst   int
	Spacing time.Duration
	Refresh time.Duration
}

// Manager puts one floating address on this node while the node holds its
// ownership record, and keeps it silent otherwise. It is the coord.Guard of
// that record: Acquire opens the fence until the deadline, adds the address
// and announces it; Extend moves the fence's deadline; Release closes the
// fence first, then removes the address. Guard calls come from one
// goroutine; Status may be called from any.
//
// Its lifecycle: NewManager constructs, Prepare makes the node silent for
// the address (before any guard call), Run announces and runs the notify
// commands until its context ends and then removes the address.
type Manager struct {
	cfg   ManagerConfig
	log   *slog.Logger
	iface string

	mu       sync.Mutex
	state    State
	epoch    int64
	since    time.Time
	lastErr  string
	failedAt time.Time
	eligible bool

	announce chan struct{} // kicks a takeover burst
	notifyQ  chan notifyJob
}

// Status is what a Manager reports through the status API.
type Status struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Interface string    `json:"interface"`
	State     State     `json:"state"`
	Epoch     int64     `json:"epoch,omitempty"`
	Since     time.Time `json:"since"`
	Error     string    `json:"error,omitempty"`
}

type notifyJob struct {
	state State
	epoch int64
}

// NewManager checks cfg and fills its defaults; it touches nothing.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Fence == nil {
		return nil, fmt.Errorf("vip %s: no fence", cfg.Name)
	}
	if !cfg.Prefix.IsValid() {
		return nil, fmt.Errorf("vip %s: no address", cfg.Name)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 5
	}
	if cfg.Spacing <= 0 {
		cfg.Spacing = 20 * time.Millisecond
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Second
	}
	return &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With("vip", cfg.Prefix.String(), "balancer", cfg.Name),
		state:    StateFault,
		since:    time.Now(),
		announce: make(chan struct{}, 1),
		notifyQ:  make(chan notifyJob, 16),
	}, nil
}

// Prepare finds the interface and makes the node silent for the address:
// the fence is closed for it and a stale copy, left by an agent that
// crashed, is removed. It must run before the first guard call; the fence
// must be installed.
func (m *Manager) Prepare() error {
	iface, err := FindInterface(m.cfg.Prefix.Addr(), m.cfg.Interface)
	if err != nil {
		return fmt.Errorf("vip %s: %w", m.cfg.Name, err)
	}
	// Announcements leave through a packet socket, which the arp family's
	// output hook does not see: the interface's egress hook does.
	if err := m.cfg.Fence.Guard(iface); err != nil {
		return fmt.Errorf("vip %s: %w", m.cfg.Name, err)
	}
	if err := m.cfg.Fence.Close(m.cfg.Prefix.Addr()); err != nil {
		return fmt.Errorf("vip %s: %w", m.cfg.Name, err)
	}
	if err := RemoveAddress(iface, m.cfg.Prefix); err != nil {
		return fmt.Errorf("vip %s: remove the stale address: %w", m.cfg.Name, err)
	}
	m.mu.Lock()
	m.iface = iface
	m.mu.Unlock()
	m.cfg.Metrics.set(m.cfg.Name, StateFault, 0)
	return nil
}

// Run sends the announcements and runs the notify commands until ctx
// ends; then it silences and removes the address. The ownership record
// must be released (its owner stopped) before ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.announcer(ctx) })
	wg.Go(func() { m.notifier(ctx) })
	wg.Wait()
	_ = m.cfg.Fence.Close(m.cfg.Prefix.Addr())
	if err := RemoveAddress(m.iface, m.cfg.Prefix); err != nil {
		return fmt.Errorf("vip %s: remove the address: %w", m.cfg.Name, err)
	}
	return nil
}

// Acquire implements coord.Guard: the fence opens until deadline, the
// address goes on the interface and is announced.
func (m *Manager) Acquire(epoch int64, deadline time.Time) {
	addr := m.cfg.Prefix.Addr()
	if err := m.cfg.Fence.Open(addr, time.Until(deadline)); err != nil {
		m.fail("open the fence", err)
		return
	}
	if err := AddAddress(m.iface, m.cfg.Prefix); err != nil {
		_ = m.cfg.Fence.Close(addr)
		m.fail("add the address", err)
		return
	}
	m.log.Info("holding the floating address", "event", "vip", "epoch", epoch, "interface", m.iface)
	// The announcer sends only while the state is holder: set it first.
	m.transition(StateHolder, epoch)
	select {
	case m.announce <- struct{}{}:
	default:
	}
}

// Extend implements coord.Guard: the fence's deadline moves. When that
// fails the node stops answering at once (the address goes) and reports
// itself unhealthy, so that its owner hands over: a holder without a
// working fence would not go silent by itself if it froze.
func (m *Manager) Extend(deadline time.Time) {
	err := m.cfg.Fence.OpenUntil(m.cfg.Prefix.Addr(), deadline)
	if err == nil {
		return
	}
	if rerr := m.cfg.Fence.Repair(); rerr == nil {
		// The tables were gone (a ruleset flush): reopen on the new ones.
		if err = m.cfg.Fence.OpenUntil(m.cfg.Prefix.Addr(), deadline); err == nil {
			m.log.Warn("the fence's nftables tables were removed from outside haven; installed them again")
			return
		}
	}
	m.fail("extend the fence", err)
	if rerr := RemoveAddress(m.iface, m.cfg.Prefix); rerr != nil {
		m.log.Error("remove the address", "err", rerr)
	}
}

// Release implements coord.Guard: the fence closes at once, then the
// address is removed.
func (m *Manager) Release(reason string) {
	if err := m.cfg.Fence.Close(m.cfg.Prefix.Addr()); err != nil {
		m.log.Error("close the fence; it expires at the deadline by itself", "err", err)
	}
	if err := RemoveAddress(m.iface, m.cfg.Prefix); err != nil {
		m.log.Error("remove the address; the fence keeps it silent", "err", err)
	}
	m.log.Info("released the floating address", "event", "vip", "reason", reason)
	m.mu.Lock()
	next := StateBackup
	if !m.eligible {
		next = StateFault
	}
	m.mu.Unlock()
	m.transition(next, 0)
}

// SetEligible records whether the node's tracked checks pass, for the
// fault state; the caller tells the ownership record too.
func (m *Manager) SetEligible(ok bool) {
	m.mu.Lock()
	m.eligible = ok
	st := m.state
	m.mu.Unlock()
	switch {
	case !ok && st == StateBackup:
		m.transition(StateFault, 0)
	case ok && st == StateFault:
		m.transition(StateBackup, 0)
	}
}

func (m *Manager) fail(what string, err error) {
	m.log.Error("floating address: "+what, "err", err)
	m.cfg.Metrics.failed(m.cfg.Name)
	m.mu.Lock()
	m.lastErr = fmt.Sprintf("%s: %v", what, err)
	m.failedAt = time.Now()
	m.mu.Unlock()
}

// failHold is how long a node whose fence or address failed stays
// ineligible, so that another node takes over and this one does not take
// the address straight back.
const failHold = 10 * time.Second

// Healthy reports an error while the node should not hold the address:
// for failHold after its fence or address could not be set up.
func (m *Manager) Healthy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.failedAt.IsZero() && time.Since(m.failedAt) < failHold {
		return errors.New(m.lastErr)
	}
	return nil
}

func (m *Manager) transition(st State, epoch int64) {
	m.mu.Lock()
	if m.state == st && m.epoch == epoch {
		m.mu.Unlock()
		return
	}
	m.state, m.epoch, m.since = st, epoch, time.Now()
	if st == StateHolder {
		m.lastErr = ""
	}
	m.mu.Unlock()
	m.cfg.Metrics.set(m.cfg.Name, st, epoch)
	select {
	case m.notifyQ <- notifyJob{state: st, epoch: epoch}:
	default:
		m.log.Warn("notify queue full; a transition's command is skipped", "state", st)
	}
}

// Status reports the address's state on this node.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{
		Name: m.cfg.Name, Address: m.cfg.Prefix.String(), Interface: m.iface,
		State: m.state, Epoch: m.epoch, Since: m.since, Error: m.lastErr,
	}
}

// announcer sends a burst of announcements after each takeover and one
// every Refresh while holding. A fenced address's announcements are
// dropped by the fence (its egress hook on the interface), so a late one
// cannot mislead a neighbour.
func (m *Manager) announcer(ctx context.Context) {
	refresh := time.NewTicker(m.cfg.Refresh)
	defer refresh.Stop()
	for {
		n := 0
		select {
		case <-ctx.Done():
			return
		case <-m.announce:
			n = m.cfg.Burst
		case <-refresh.C:
			n = 1
		}
		for i := range n {
			if m.Status().State != StateHolder {
				break
			}
			if err := Announce(m.iface, m.cfg.Prefix.Addr()); err != nil {
				m.log.Warn("announce the floating address", "err", err)
			}
			if i < n-1 {
				select {
				case <-time.After(m.cfg.Spacing):
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// notifier runs the notify command of each transition, in order, one at a
// time, each bounded by the notify timeout, until ctx ends.
func (m *Manager) notifier(ctx context.Context) {
	for {
		var job notifyJob
		select {
		case job = <-m.notifyQ:
		case <-ctx.Done():
			return
		}
		var cmd []string
		switch job.state {
		case StateHolder:
			cmd = m.cfg.Notify.Holder
		case StateBackup:
			cmd = m.cfg.Notify.Backup
		case StateFault:
			cmd = m.cfg.Notify.Fault
		}
		if len(cmd) == 0 {
			continue
		}
		m.run(cmd, job)
	}
}

func (m *Manager) run(argv []string, job notifyJob) {
	timeout := m.cfg.Notify.Timeout.D()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = append(os.Environ(),
		"HAVEN_VIP="+m.cfg.Prefix.String(),
		"HAVEN_VIP_NAME="+m.cfg.Name,
		"HAVEN_STATE="+string(job.state),
		"HAVEN_NODE="+m.cfg.Node,
		"HAVEN_EPOCH="+strconv.FormatInt(job.epoch, 10),
		"HAVEN_INTERFACE="+m.iface,
	)
	out, err := c.CombinedOutput()
	if err != nil {
		m.log.Warn("notify command failed", "state", job.state, "command", argv, "err", err, "output", string(out))
		return
	}
	m.log.Debug("notify command ran", "state", job.state, "command", argv)
}
