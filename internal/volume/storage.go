package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Brick is one server's brick of a volume.
type Brick struct {
	Node    string `json:"node"`
	Address string `json:"address"`
	Path    string `json:"path"`
	// Arbiter holds names and metadata only.
	Arbiter bool `json:"arbiter,omitempty"`
}

// Spec returns the brick as gluster names it, HOST:PATH.
func (b Brick) Spec() string { return b.Address + ":" + b.Path }

// StorageConfig is one volume as its storage nodes run it.
type StorageConfig struct {
	Volume string
	// Node is this node; Bricks are every server's, in replica order
	// (an arbiter last).
	Node   string
	Bricks []Brick
	// PingTimeout is network.ping-timeout, rounded up to seconds.
	PingTimeout time.Duration
	// Allow are the addresses that may mount the volume (auth.allow):
	// the servers and the mount nodes.
	Allow []string
	// Settings are the operator's options, set after haven's.
	Settings map[string]string
	// CLI talks to this node's glusterd; RunDir is where it keeps its
	// daemons' pid files.
	CLI    *CLI
	RunDir string
	// Lock serialises the volume's creation across the servers: two
	// servers probing each other at once would make two pools. It
	// returns the unlock.
	Lock func(ctx context.Context) (func(), error)
	// Every is the time between two reconciliations (default 5s).
	Every  time.Duration
	Logger *slog.Logger
}

// Storage keeps one volume as haven.yaml describes it, from one of its
// storage nodes: the pool probed, the volume created, haven's settings in
// force, the volume started, and this node's brick running (GlusterFS
// does not restart a brick that died; haven does, with `volume start
// force`). Every server runs one; they agree through glusterd's own
// cluster lock and, for the creation, Lock.
type Storage struct {
	cfg  StorageConfig
	log  *slog.Logger
	self Brick

	mu      sync.Mutex
	lock    func(ctx context.Context) (func(), error)
	status  Status
	problem string // the last reconciliation's, "" when all is as configured
	// splitCounted is when split-brain entries were last counted,
	// healWoken when the last heal was started (Run's goroutine only).
	splitCounted time.Time
	healWoken    time.Time
	restarts     int
}

// NewStorage checks cfg; it starts nothing.
func NewStorage(cfg StorageConfig) (*Storage, error) {
	if cfg.Volume == "" || cfg.CLI == nil || cfg.Lock == nil {
		return nil, errors.New("volume: storage needs a volume name, a CLI and a lock")
	}
	i := slices.IndexFunc(cfg.Bricks, func(b Brick) bool { return b.Node == cfg.Node })
	if i < 0 {
		return nil, fmt.Errorf("volume %s: node %s has no brick", cfg.Volume, cfg.Node)
	}
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Storage{cfg: cfg, self: cfg.Bricks[i], log: cfg.Logger.With("component", "volume", "volume", cfg.Volume)}
	s.status.Volume = cfg.Volume
	s.lock = cfg.Lock
	return s, nil
}

// SetLock replaces the creation lock (the agent's etcd client changes when
// etcd comes back).
func (s *Storage) SetLock(lock func(ctx context.Context) (func(), error)) {
	s.mu.Lock()
	s.lock = lock
	s.mu.Unlock()
}

// Options are the volume options haven sets, then the operator's (which
// replace haven's defaults of the same name; validation refuses the ones
// haven owns); each is explained in docs/volume.md.
func (s *Storage) Options() [][2]string {
	secs := int(math.Ceil(s.cfg.PingTimeout.Seconds()))
	if secs < 1 {
		secs = 2
	}
	opts := [][2]string{
		// A client stops waiting for a silent server after this long and
		// goes on with the other two (GlusterFS's default, 42s, is a
		// 42-second stall of every writer when a server dies).
		{"network.ping-timeout", strconv.Itoa(secs)},
		// Client quorum: a client writes only while it reaches a
		// majority of the bricks; a minority side turns read-only
		// instead of writing what the majority does not see.
		{"cluster.quorum-type", "auto"},
		// Server quorum: a glusterd that loses the majority of its pool
		// stops its bricks.
		{"cluster.server-quorum-type", "server"},
		{"cluster.self-heal-daemon", "on"},
		// The self-heal daemons look at their indexes this often even
		// when nothing woke them (the default is 10 minutes): a server
		// cut off for less than a ping timeout while the daemons were
		// idle comes back without their noticing.
		{"cluster.heal-timeout", "30"},
		{"auth.allow", strings.Join(s.cfg.Allow, ",")},
	}
	for _, k := range sortedKeys(s.cfg.Settings) {
		v := s.cfg.Settings[k]
		if i := slices.IndexFunc(opts, func(o [2]string) bool { return o[0] == k }); i >= 0 {
			opts[i][1] = v
			continue
		}
		opts = append(opts, [2]string{k, v})
	}
	return opts
}

// Run reconciles until ctx ends.
func (s *Storage) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := s.reconcile(ctx)
		s.gather(ctx)
		s.note(err)
		t.Reset(s.cfg.Every)
	}
}

// note logs a change of the reconciliation's outcome, once.
func (s *Storage) note(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.mu.Lock()
	prev := s.problem
	s.problem = msg
	s.status.Problem = msg
	s.mu.Unlock()
	switch {
	case msg == prev:
	case msg == "":
		s.log.Info("volume is as configured", "event", "volume")
	default:
		s.log.Warn("volume is not as configured", "event", "volume", "problem", msg)
	}
}

// reconcile takes one step towards the configured volume.
func (s *Storage) reconcile(ctx context.Context) error {
	info, err := s.cfg.CLI.VolumeInfo(ctx, s.cfg.Volume)
	if errors.Is(err, errNoVolume) {
		if err := s.create(ctx); err != nil {
			return err
		}
		info, err = s.cfg.CLI.VolumeInfo(ctx, s.cfg.Volume)
	}
	if err != nil {
		return err
	}
	if want := specs(s.cfg.Bricks); !slices.Equal(info.Bricks, want) {
		// haven does not move bricks: replacing one is an operator's
		// decision (gluster volume replace-brick), then haven.yaml's.
		return fmt.Errorf("the volume's bricks are %s, haven.yaml says %s: replace bricks with gluster volume replace-brick, then change haven.yaml", strings.Join(info.Bricks, " "), strings.Join(want, " "))
	}
	for _, o := range s.Options() {
		if info.Options[o[0]] == o[1] {
			continue
		}
		if err := s.cfg.CLI.Set(ctx, s.cfg.Volume, o[0], o[1]); err != nil {
			return err
		}
		s.log.Info("volume option set", "option", o[0], "value", o[1])
	}
	if info.Status != "Started" {
		if err := s.cfg.CLI.Start(ctx, s.cfg.Volume, false); err != nil {
			return err
		}
		s.log.Info("volume started", "event", "volume")
	}
	return s.keepBrick(ctx)
}

// keepBrick starts this node's brick when it does not run while glusterd
// does: a brick process that died (killed, out of memory) stays dead in
// GlusterFS until someone runs start force. The check reads the brick's
// pid file; only a restart takes glusterd's cluster-wide lock.
func (s *Storage) keepBrick(ctx context.Context) error {
	if brickPID(s.cfg.RunDir, s.self.Path) != 0 {
		return nil
	}
	pool, err := s.cfg.CLI.Pool(ctx)
	if err != nil {
		return err
	}
	connected := 0
	for _, p := range pool {
		if p.Connected {
			connected++
		}
	}
	if 2*connected <= len(pool) {
		return fmt.Errorf("this server reaches %d of the pool's %d glusterds: its brick stays stopped (server quorum) until it reaches a majority", connected, len(pool))
	}
	if err := s.cfg.CLI.Start(ctx, s.cfg.Volume, true); err != nil {
		return fmt.Errorf("restart this node's brick: %w", err)
	}
	s.mu.Lock()
	s.restarts++
	s.mu.Unlock()
	s.log.Warn("brick was not running: started it again", "event", "volume", "brick", s.self.Spec())
	return nil
}

// create probes the other servers into this node's pool and creates the
// volume, under Lock. It fails, to be tried again, while a server's
// glusterd does not answer: the volume is made whole or not at all.
func (s *Storage) create(ctx context.Context) error {
	s.mu.Lock()
	lock := s.lock
	s.mu.Unlock()
	unlock, err := lock(ctx)
	if err != nil {
		return fmt.Errorf("lock the volume's creation: %w", err)
	}
	defer unlock()
	// Another server may have made it while this one waited.
	if _, err := s.cfg.CLI.VolumeInfo(ctx, s.cfg.Volume); !errors.Is(err, errNoVolume) {
		return err
	}
	pool, err := s.cfg.CLI.Pool(ctx)
	if err != nil {
		return err
	}
	for _, b := range s.cfg.Bricks {
		if b.Node == s.cfg.Node || slices.ContainsFunc(pool, func(p Peer) bool { return p.Hostname == b.Address }) {
			continue
		}
		if err := s.cfg.CLI.Probe(ctx, b.Address); err != nil {
			return fmt.Errorf("waiting for server %s (%s) to join the pool: %w", b.Node, b.Address, err)
		}
		s.log.Info("server joined the pool", "event", "volume", "server", b.Node, "address", b.Address)
	}
	if err := os.MkdirAll(s.self.Path, 0o755); err != nil {
		return fmt.Errorf("brick: %w", err)
	}
	arbiter := len(s.cfg.Bricks) > 0 && s.cfg.Bricks[len(s.cfg.Bricks)-1].Arbiter
	if err := s.cfg.CLI.Create(ctx, s.cfg.Volume, specs(s.cfg.Bricks), arbiter); err != nil {
		return err
	}
	s.log.Info("volume created", "event", "volume", "bricks", strings.Join(specs(s.cfg.Bricks), " "), "arbiter", arbiter)
	return nil
}

func specs(bricks []Brick) []string {
	out := make([]string, len(bricks))
	for i, b := range bricks {
		out[i] = b.Spec()
	}
	return out
}

// healWakeEvery spaces the heals the reporter starts.
const healWakeEvery = 15 * time.Second

// wakeHeal starts an index heal when entries wait, every brick is online
// and the count has not gone down since the last look: the self-heal
// daemons heal when a brick comes back, but only if they saw it go (a
// daemon with nothing to send notices a silent server no sooner than
// a client does), and otherwise wait for their next crawl.
func (s *Storage) wakeHeal(ctx context.Context, st, prev Status) {
	if !st.Reporter || st.SplitBrain >= st.HealPending || time.Since(s.healWoken) < healWakeEvery {
		return
	}
	for _, b := range st.Bricks {
		if !b.Online {
			return
		}
	}
	if prev.HealPending > 0 && st.HealPending < prev.HealPending {
		return // healing
	}
	s.healWoken = time.Now()
	if err := s.cfg.CLI.Heal(ctx, s.cfg.Volume, false); err != nil {
		s.log.Warn("could not start a heal", "err", err, "pending", st.HealPending)
		return
	}
	s.log.Info("heal started: entries wait and none healed since the last look", "event", "volume", "pending", st.HealPending)
}

// Status returns the volume's state as last gathered.
func (s *Storage) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Bricks = slices.Clone(st.Bricks)
	st.Peers = slices.Clone(st.Peers)
	st.BrickRestarts = s.restarts
	return st
}

// Heal starts a heal now (the self-heal daemons also heal by themselves):
// the pending entries, or with full every file.
func (s *Storage) Heal(ctx context.Context, full bool) error {
	return s.cfg.CLI.Heal(ctx, s.cfg.Volume, full)
}

// splitBrainEvery spaces the split-brain counts: glfsheal looks at every
// pending entry through a client of its own, too costly for every
// reconciliation while thousands of files wait for a heal.
const splitBrainEvery = 30 * time.Second

// gather reads the volume's state for Status and the metrics. Split-brain
// entries are counted only while something is pending (an entry in
// split-brain stays pending), at most every splitBrainEvery; between two
// counts the last one stands.
func (s *Storage) gather(ctx context.Context) {
	st := gatherStatus(ctx, s.cfg.CLI, s.cfg.Volume, s.self.Address, s.cfg.RunDir, s.cfg.Bricks)
	s.mu.Lock()
	prev, counted := s.status, s.splitCounted
	s.mu.Unlock()
	if st.HealPending > 0 {
		if time.Since(counted) >= splitBrainEvery {
			if st.countSplitBrain(ctx, s.cfg.CLI) {
				counted = time.Now()
			}
		} else {
			st.SplitBrain = prev.SplitBrain
			for i := range st.Bricks {
				if b := prev.brick(st.Bricks[i].Spec()); b != nil {
					st.Bricks[i].SplitBrain = b.SplitBrain
				}
			}
		}
		s.wakeHeal(ctx, st, prev)
	}
	s.mu.Lock()
	st.Problem = s.problem
	s.status, s.splitCounted = st, counted
	s.mu.Unlock()
}
