package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-semver/semver"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Defaults of MemberConfig.
const (
	// DefaultHeartbeatInterval and DefaultElectionTimeout suit a LAN: a
	// failed leader is replaced in well under a second. Across regions
	// raise both (etcd's guidance: heartbeat about the round-trip time,
	// election timeout 5-10 times that).
	DefaultHeartbeatInterval = 50 * time.Millisecond
	DefaultElectionTimeout   = 500 * time.Millisecond
	// DefaultJoinTimeout bounds how long Run waits for the member to reach
	// a quorum before it reports which peers it could not reach.
	DefaultJoinTimeout = 30 * time.Second
	// DefaultPeerPort and DefaultClientPort are used when a URL names no
	// port.
	DefaultPeerPort   = 2380
	DefaultClientPort = 2379

	// stopTimeout bounds a graceful stop (leadership transfer, draining
	// client requests).
	stopTimeout = 15 * time.Second
	// probeTimeout bounds one diagnostic request to a peer.
	probeTimeout = 2 * time.Second
	// compactionRetention keeps an hour of history for watchers that
	// resume after a disconnection.
	compactionRetention = "1h"
)

// MemberConfig configures an embedded etcd member.
type MemberConfig struct {
	// Name is the member's name: the haven node name.
	Name string
	// DataDir holds the member's data (etcd creates DataDir/member). When
	// it already holds a write-ahead log the member restarts from it
	// (initial-cluster-state existing) and InitialCluster is not used.
	DataDir string
	// PeerURL is where the other members reach this one, "ADDR:2380" or
	// "http(s)://ADDR:2380" (https when TLS is set). ADDR must be an IP
	// address: the member listens on it. Default: InitialCluster[Name].
	PeerURL string
	// ClientURL is where clients reach this member, "ADDR:2379" or a URL.
	// Default: the host of PeerURL, port 2379.
	ClientURL string
	// ListenLocalhost also serves clients on 127.0.0.1 at ClientURL's port,
	// so that the node's own agent keeps reaching its member when the
	// node's address is unreachable from outside. Off by default: two
	// members on one host with the same client port would collide.
	ListenLocalhost bool
	// InitialCluster maps every member's name to its peer URL; it must
	// include Name. Every member must be given the same map.
	InitialCluster map[string]string
	// ClusterToken keeps distinct etcd clusters apart (the haven cluster
	// name).
	ClusterToken string
	// TLS, when set, secures both the peer and the client port with
	// mutual TLS: every peer and every client must present a certificate
	// issued by TLS.CA (see package certs). All three files are required.
	TLS *TLSFiles
	// HeartbeatInterval and ElectionTimeout are raft's timing (defaults
	// DefaultHeartbeatInterval and DefaultElectionTimeout; whole
	// milliseconds; the election timeout at least 5 heartbeats).
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	// JoinTimeout bounds the wait for a quorum at start (default
	// DefaultJoinTimeout).
	JoinTimeout time.Duration
	// Logger receives the member's logs (component=coord) and etcd's own
	// (component=etcd), both with member=Name (default slog.Default()).
	Logger *slog.Logger
	// EtcdLogLevel is the lowest level of etcd's own messages that reach
	// Logger (default slog.LevelWarn).
	EtcdLogLevel slog.Leveler
	// ForceNewCluster restarts a member from its data as a cluster of one,
	// every other member removed (etcd's --force-new-cluster): for a scope
	// whose quorum is lost for good. Its data is kept. A removed member
	// that reaches it again is told it was removed and stops; it can come
	// back only as a new member, its data wiped. Run refuses it on an empty
	// data dir.
	ForceNewCluster bool
}

// Member is an embedded etcd member. Create it with NewMember, then Run it.
type Member struct {
	name        string
	dataDir     string
	peer        url.URL
	client      url.URL
	local       *url.URL
	initial     map[string]url.URL
	token       string
	tls         *TLSFiles
	tickMs      uint
	electionMs  uint
	joinTimeout time.Duration
	force       bool
	log         *slog.Logger
	etcdLog     *zap.Logger

	ready   chan struct{}
	started atomic.Bool
}

// NewMember checks cfg and fills its defaults. It starts nothing.
func NewMember(cfg MemberConfig) (*Member, error) {
	fail := func(format string, args ...any) (*Member, error) {
		return nil, fmt.Errorf("coord: member %s: "+format, append([]any{cfg.Name}, args...)...)
	}
	if cfg.Name == "" {
		return nil, errors.New("coord: member: name is empty")
	}
	if cfg.DataDir == "" {
		return fail("data dir is empty")
	}
	if cfg.ClusterToken == "" {
		return fail("cluster token is empty")
	}
	if t := cfg.TLS; t != nil && (t.CA == "" || t.Cert == "" || t.Key == "") {
		return fail("TLS needs a CA, a certificate and a key (got CA %q, cert %q, key %q)", t.CA, t.Cert, t.Key)
	}
	secure := cfg.TLS != nil

	if _, ok := cfg.InitialCluster[cfg.Name]; !ok {
		return fail("initial cluster %s does not include the member itself", clusterString(cfg.InitialCluster))
	}
	initial := make(map[string]url.URL, len(cfg.InitialCluster))
	for name, raw := range cfg.InitialCluster {
		u, err := parseURL(raw, secure, DefaultPeerPort)
		if err != nil {
			return fail("initial cluster: %s: %v", name, err)
		}
		initial[name] = u
	}
	peer := initial[cfg.Name]
	if cfg.PeerURL != "" {
		u, err := parseURL(cfg.PeerURL, secure, DefaultPeerPort)
		if err != nil {
			return fail("peer URL: %v", err)
		}
		if u != peer {
			return fail("peer URL %s differs from the initial cluster's %s", u.String(), peer.String())
		}
	}
	if net.ParseIP(peer.Hostname()) == nil {
		return fail("peer URL %s: the host must be an IP address to listen on", peer.String())
	}
	clientRaw := cfg.ClientURL
	if clientRaw == "" {
		clientRaw = net.JoinHostPort(peer.Hostname(), strconv.Itoa(DefaultClientPort))
	}
	client, err := parseURL(clientRaw, secure, DefaultClientPort)
	if err != nil {
		return fail("client URL: %v", err)
	}
	if net.ParseIP(client.Hostname()) == nil {
		return fail("client URL %s: the host must be an IP address to listen on", client.String())
	}
	var local *url.URL
	if cfg.ListenLocalhost && !isLoopback(client.Hostname()) {
		l := client
		l.Host = net.JoinHostPort("127.0.0.1", client.Port())
		local = &l
	}

	heartbeat, election := cfg.HeartbeatInterval, cfg.ElectionTimeout
	if heartbeat == 0 {
		heartbeat = DefaultHeartbeatInterval
	}
	if election == 0 {
		election = max(DefaultElectionTimeout, 10*heartbeat)
	}
	switch {
	case heartbeat < time.Millisecond || heartbeat%time.Millisecond != 0:
		return fail("heartbeat interval %v is not a positive whole number of milliseconds", heartbeat)
	case election%time.Millisecond != 0:
		return fail("election timeout %v is not a whole number of milliseconds", election)
	case election < 5*heartbeat:
		return fail("election timeout %v must be at least 5 heartbeat intervals (%v)", election, 5*heartbeat)
	case election > 50*time.Second:
		return fail("election timeout %v is longer than etcd's limit of 50s", election)
	}
	join := cfg.JoinTimeout
	if join == 0 {
		join = DefaultJoinTimeout
	}
	if join < 0 {
		return fail("join timeout %v is negative", join)
	}

	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	level := cfg.EtcdLogLevel
	if level == nil {
		level = slog.LevelWarn
	}
	return &Member{
		name:        cfg.Name,
		dataDir:     cfg.DataDir,
		peer:        peer,
		client:      client,
		local:       local,
		initial:     initial,
		token:       cfg.ClusterToken,
		tls:         cfg.TLS,
		tickMs:      uint(heartbeat / time.Millisecond),
		electionMs:  uint(election / time.Millisecond),
		joinTimeout: join,
		force:       cfg.ForceNewCluster,
		log:         log.With("component", "coord", "member", cfg.Name),
		etcdLog:     newZapLogger(log.With("component", "etcd", "member", cfg.Name), level),
		ready:       make(chan struct{}),
	}, nil
}

// Ready is closed once the member has joined its cluster (a quorum
// accepted it) and serves clients. It is never closed if Run fails first.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Endpoints returns the client URLs this member serves: its client URL,
// then the loopback URL when ListenLocalhost is set.
func (m *Member) Endpoints() []string {
	eps := []string{m.client.String()}
	if m.local != nil {
		eps = append(eps, m.local.String())
	}
	return eps
}

// prepareDataDir creates the member's data directory with mode 0700, the
// mode etcd wants (it warns about any other), and every missing directory
// above it with mode 0711: others may pass through, not list. etcd alone
// would create them all 0700 (os.MkdirAll with its own mode), and then no
// other user could reach a sibling: PostgreSQL, which runs as the postgres
// user, could not reach /var/lib/haven/{node}/pg beside
// /var/lib/haven/{node}/etcd. Existing directories are left as they are.
func prepareDataDir(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d, mode := missing[i], fs.FileMode(0o711)
		if i == 0 {
			mode = 0o700
		}
		if err := os.Mkdir(d, mode); errors.Is(err, fs.ErrExist) {
			continue // created meanwhile by someone else, who chose its mode
		} else if err != nil {
			return err
		}
		// Mkdir's mode went through the umask.
		if err := os.Chmod(d, mode); err != nil {
			return err
		}
	}
	return nil
}

// HasData reports whether dataDir holds an etcd member's write-ahead log,
// in which case a member restarts from it instead of bootstrapping.
func HasData(dataDir string) bool {
	return wal.Exist(filepath.Join(dataDir, "member", "wal"))
}

// Run starts etcd, waits for it to join a quorum (at most the join
// timeout), serves until ctx ends, then stops etcd gracefully within a
// bounded time. It returns nil when ctx ended, and an error that says what
// to check when the member cannot start or join, or when etcd stops on its
// own. Run may be called once.
func (m *Member) Run(ctx context.Context) (err error) {
	if !m.started.CompareAndSwap(false, true) {
		return fmt.Errorf("coord: member %s: Run called twice", m.name)
	}
	if err := prepareDataDir(m.dataDir); err != nil {
		return fmt.Errorf("coord: member %s: data dir %s: %w", m.name, m.dataDir, err)
	}
	if err := m.checkNotRemoved(); err != nil {
		return err
	}
	cfg, existing := m.embedConfig()
	if m.force && !existing {
		return fmt.Errorf("coord: member %s: cannot force a new cluster: data dir %s holds no member data to keep", m.name, m.dataDir)
	}
	if !existing {
		running, err := m.runningCluster(ctx)
		if err != nil {
			return fmt.Errorf("coord: member %s: %w", m.name, err)
		}
		if running != nil {
			if err := m.awaitClusterVersion(ctx, running); err != nil {
				return fmt.Errorf("coord: member %s: %w", m.name, err)
			}
			cfg.ClusterState = embed.ClusterStateFlagExisting
			cfg.InitialCluster = clusterString(running)
			m.log.Info("joining the running etcd cluster", "members", cfg.InitialCluster)
		}
	}
	m.log.Info("starting etcd member", "peer_url", m.peer.String(), "client_urls", m.Endpoints(),
		"data_dir", m.dataDir, "restart", existing, "heartbeat_ms", m.tickMs, "election_ms", m.electionMs)
	if m.force {
		m.log.Warn("forcing a new cluster of this member alone: every other member is removed and stays out until added back as a new member")
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return m.startError(err)
	}
	defer func() {
		if serr := m.stop(e); serr != nil {
			err = errors.Join(err, serr)
		}
	}()

	join := time.NewTimer(m.joinTimeout)
	defer join.Stop()
	select {
	case <-e.Server.ReadyNotify():
		close(m.ready)
		m.log.Info("etcd member ready", "member_id", e.Server.MemberID().String(),
			"cluster_id", e.Server.Cluster().ID().String(), "leader", e.Server.Leader().String())
	case <-join.C:
		return m.diagnose(ctx, e)
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return m.stopped(fmt.Errorf("coord: member %s: etcd: %w", m.name, err))
	case <-e.Server.StopNotify():
		return m.stopped(fmt.Errorf("coord: member %s: etcd stopped before it joined the cluster (see etcd's log above)", m.name))
	}

	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return m.stopped(fmt.Errorf("coord: member %s: etcd: %w", m.name, err))
	case <-e.Server.StopNotify():
		return m.stopped(fmt.Errorf("coord: member %s: etcd stopped on its own (see etcd's log above)", m.name))
	}
}

// stopped explains why etcd stopped by itself: when a peer's membership no
// longer lists this member, it was removed (a forced new cluster
// elsewhere, or a member removal); Run then leaves a mark in the data dir
// (RemovedMark) and refuses to start the member again. Otherwise err.
func (m *Member) stopped(err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	for _, p := range m.probePeers(ctx) {
		if p.err == nil && p.members != nil && !slices.Contains(p.members, m.name) {
			why := fmt.Sprintf("%s lists only %s (a forced new cluster, or a member removed by hand), at %s",
				p.name, strings.Join(p.members, ", "), time.Now().UTC().Format(time.RFC3339))
			if werr := os.WriteFile(filepath.Join(m.dataDir, RemovedMark), []byte(why+"\n"), 0o600); werr != nil {
				m.log.Error("cannot mark the removed member's data dir", "err", werr)
			}
			return fmt.Errorf("coord: member %s %w: %s. Its data in %s is stale: "+
				"it will not start again until it is added back as a new member: %w", m.name, ErrRemoved, why, m.dataDir, err)
		}
	}
	return err
}

// RemovedMark is the file a member leaves in its data dir when it finds
// that it was removed from its cluster: with it there, Run refuses to
// start, so that two removed members restarted together never form the
// old cluster's quorum again behind the back of the one that removed them.
const RemovedMark = "removed"

// ErrRemoved is in the error of a Run that stopped, or did not start,
// because the member was removed from its cluster.
var ErrRemoved = errors.New("was removed from its cluster")

// Removed reports whether the member whose data is in dataDir was removed
// from its cluster (RemovedMark).
func Removed(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, RemovedMark))
	return err == nil
}

// checkNotRemoved refuses a data dir that RemovedMark marks.
func (m *Member) checkNotRemoved() error {
	why, err := os.ReadFile(filepath.Join(m.dataDir, RemovedMark))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("coord: member %s: %w", m.name, err)
	}
	return fmt.Errorf("coord: member %s %w (%s) and does not start on its stale data in %s; "+
		"it can come back only as a new member, added through the cluster that removed it", m.name, ErrRemoved, strings.TrimSpace(string(why)), m.dataDir)
}

// Delays between the runs of Keep.
const (
	keepRetry    = time.Second
	keepRetryMax = 30 * time.Second
)

// Keep runs the member cfg describes until ctx ends, and starts it again,
// after a pause (from a second, doubling up to 30s), when it could not
// join its cluster within the join timeout or stopped on its own: a
// member left out for good weakens its cluster's quorum for good (a
// member of three that failed to join on a loaded machine left its
// cluster one failure from losing its quorum). It returns nil when ctx
// ends, and an error wrapping ErrRemoved when the member was removed from
// its cluster, or one that says what is wrong with cfg. Each member is
// passed to started before it runs. A forced new cluster
// (cfg.ForceNewCluster) is forced until a run becomes ready, not after.
func Keep(ctx context.Context, cfg MemberConfig, started func(*Member)) error {
	wait := keepRetry
	for {
		m, err := NewMember(cfg)
		if err != nil {
			return err
		}
		started(m)
		err = m.Run(ctx)
		select {
		case <-m.Ready():
			cfg.ForceNewCluster = false
			wait = keepRetry
		default:
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrRemoved):
			return err
		}
		m.log.Error("etcd member stopped; starting it again", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, keepRetryMax)
	}
}

// embedConfig translates the member's settings into etcd's. existing tells
// whether the data dir already holds a member.
func (m *Member) embedConfig() (cfg *embed.Config, existing bool) {
	cfg = embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dataDir
	cfg.ListenPeerUrls = []url.URL{m.peer}
	cfg.AdvertisePeerUrls = []url.URL{m.peer}
	cfg.ListenClientUrls = []url.URL{m.client}
	if m.local != nil {
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, *m.local)
	}
	cfg.AdvertiseClientUrls = []url.URL{m.client}
	cfg.InitialCluster = clusterString(m.initialStrings())
	cfg.InitialClusterToken = m.token
	existing = HasData(m.dataDir)
	cfg.ClusterState = embed.ClusterStateFlagNew
	if existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.ForceNewCluster = m.force
	cfg.TickMs = m.tickMs
	cfg.ElectionMs = m.electionMs
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = compactionRetention
	// Clients ping every few seconds to notice a dead member quickly
	// (see NewClient); etcd's default would answer them with GOAWAY.
	cfg.GRPCKeepAliveMinTime = time.Second
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(m.etcdLog)
	if m.tls != nil {
		info := transport.TLSInfo{
			CertFile:       m.tls.Cert,
			KeyFile:        m.tls.Key,
			TrustedCAFile:  m.tls.CA,
			ClientCertAuth: true,
		}
		cfg.PeerTLSInfo = info
		cfg.ClientTLSInfo = info
	}
	return cfg, existing
}

func (m *Member) initialStrings() map[string]string {
	s := make(map[string]string, len(m.initial))
	for name, u := range m.initial {
		s[name] = u.String()
	}
	return s
}

// stop closes etcd, waiting at most stopTimeout.
func (m *Member) stop(e *embed.Etcd) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-e.Server.ReadyNotify():
			// Not HardStop first, even without a leader, whose requests in
			// flight hold the graceful stop for etcd's request timeout:
			// the server would close its backend under the client
			// handlers still running (a Maintenance Status then panics
			// in bbolt).
		default:
			// embed.Etcd.Close waits for its client servers, which wait
			// for the server to be ready or stopping: stop it first
			// (etcd-io/etcd#9533).
			e.Server.Stop()
		}
		e.Close()
	}()
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
		m.log.Info("etcd member stopped")
		return nil
	case <-t.C:
		return fmt.Errorf("coord: member %s: etcd did not stop within %v", m.name, stopTimeout)
	}
}

// startError explains the failures of embed.StartEtcd that a user can fix.
func (m *Member) startError(err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "has already been bootstrapped"):
		return fmt.Errorf("coord: member %s: the other members already know this member, but its data dir %s is empty: its data was lost. "+
			"Restore the data dir, or run `haven coord replace %s --with %s` (the member is removed and added back), then start it again: %w",
			m.name, m.dataDir, m.name, m.name, err)
	case strings.Contains(msg, "address already in use"):
		return fmt.Errorf("coord: member %s: a port is taken (peer %s, client %s); is another etcd or haven agent running here? %w",
			m.name, m.peer.Host, m.client.Host, err)
	case strings.Contains(msg, "cannot assign requested address"):
		return fmt.Errorf("coord: member %s: this machine has no address %s; check the node's address in haven.yaml: %w",
			m.name, m.peer.Hostname(), err)
	}
	return fmt.Errorf("coord: member %s: start etcd: %w", m.name, err)
}

// peerProbe is what one peer answered to GET /members.
type peerProbe struct {
	name, url string
	clusterID string       // the peer's cluster ID, when it answered
	members   []string     // the members' names it lists, when it answered
	list      []peerMember // and the members themselves
	err       error
}

// peerMember is a member as a peer's /members lists it. A member that has
// not started yet (in the initial cluster, or added) has no client URLs.
type peerMember struct {
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

// clusterProbeTimeout bounds one look for a running cluster before a
// member's first start; clusterProbeWait bounds the looks again while a
// peer is slow to answer (within the join timeout).
const (
	clusterProbeTimeout = 2 * time.Second
	clusterProbeWait    = 20 * time.Second
	clusterProbeAgain   = 500 * time.Millisecond
)

// runningCluster asks the other members' peer ports, before this member's
// first start (an empty data dir), whether they already run a cluster: one
// in which some member has started (published its client URLs). It
// returns nil when none does, and the members bootstrap the cluster
// together (initial-cluster-state new) as on a first start. When one does:
//   - this member's peer URL is listed and has not started (added by
//     `haven coord add` or `replace`, or a member of the initial cluster
//     that starts late): it joins the running cluster (state existing),
//     with the running cluster's members as its initial cluster;
//   - it is listed and has started: this member lost its data, and coming
//     back under the same identity with an empty log could vote twice in
//     a term: an error says to replace it (remove it and add it back);
//   - it is not listed: an error says to add it first.
//
// A peer that refuses the connection runs no member; one that accepts it
// but does not answer in time (a loaded machine) might run one, so it is
// asked again, for up to clusterProbeWait (at most the join timeout),
// rather than taken for absent: bootstrapping beside a running cluster
// would be refused, or worse, with its data lost, vote a second time.
func (m *Member) runningCluster(ctx context.Context) (map[string]string, error) {
	deadline := time.Now().Add(min(clusterProbeWait, m.joinTimeout))
	for {
		pctx, cancel := context.WithTimeout(ctx, clusterProbeTimeout)
		probes := m.probePeers(pctx)
		cancel()
		initial, slow, err := m.judgeProbes(probes)
		if initial != nil || err != nil || len(slow) == 0 {
			return initial, err
		}
		if ctx.Err() != nil || time.Now().Add(clusterProbeAgain).After(deadline) {
			m.log.Warn("peers did not answer whether they run a cluster; starting as if they do not",
				"slow", strings.Join(slow, ", "), "waited", min(clusterProbeWait, m.joinTimeout))
			return nil, nil
		}
		m.log.Info("peers slow to answer whether they run a cluster; asking again", "slow", strings.Join(slow, ", "))
		select {
		case <-ctx.Done():
		case <-time.After(clusterProbeAgain):
		}
	}
}

// judgeProbes decides from the peers' answers as runningCluster says; slow
// names the peers that took a connection but did not answer in time, when
// no peer showed a running cluster.
func (m *Member) judgeProbes(probes []peerProbe) (map[string]string, []string, error) {
	var slow []string
	for _, p := range probes {
		if p.err != nil && timedOut(p.err) {
			slow = append(slow, p.name)
		}
		if p.err != nil || !slices.ContainsFunc(p.list, func(pm peerMember) bool { return len(pm.ClientURLs) > 0 }) {
			continue
		}
		initial := map[string]string{}
		found := false
		for _, pm := range p.list {
			if len(pm.PeerURLs) == 0 {
				continue
			}
			if slices.Contains(pm.PeerURLs, m.peer.String()) {
				if len(pm.ClientURLs) > 0 {
					return nil, nil, fmt.Errorf("the running cluster (as %s lists it) has this member started already, but its data dir %s is empty: "+
						"its data was lost, and it must not come back under its old identity: run `haven coord replace %s --with %s` "+
						"(the member is removed and added back), then start it again", p.name, m.dataDir, m.name, m.name)
				}
				initial[m.name] = m.peer.String()
				found = true
				continue
			}
			name := pm.Name
			if name == "" {
				name = pm.PeerURLs[0] // added, not started, not this one
			}
			initial[name] = pm.PeerURLs[0]
		}
		if !found {
			return nil, nil, fmt.Errorf("a running cluster (as %s lists it: %s) does not have this member (%s): add it first with `haven coord add %s` "+
				"(or `haven coord replace OLD --with %s` for a member lost for good)", p.name, clusterString(initial), m.peer.String(), m.name, m.name)
		}
		return initial, nil, nil
	}
	return nil, slow, nil
}

// timedOut reports whether a probe failed for want of an answer in time,
// rather than because nothing listens there.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// diagnose probes the peers after the member failed to join a quorum in
// time and returns an error that names them and says what to check.
func (m *Member) diagnose(ctx context.Context, e *embed.Etcd) error {
	localID := e.Server.Cluster().ID().String()
	probes := m.probePeers(ctx)

	var unreachable, foreign, fine []string
	for _, p := range probes {
		switch {
		case p.err != nil:
			unreachable = append(unreachable, fmt.Sprintf("%s (%s: %v)", p.name, p.url, explainTLS(p.err)))
		case p.clusterID != localID:
			foreign = append(foreign, fmt.Sprintf("%s (cluster ID %s)", p.name, p.clusterID))
		default:
			fine = append(fine, p.name)
		}
	}
	prefix := fmt.Sprintf("coord: member %s could not join a quorum within %v", m.name, m.joinTimeout)
	if len(foreign) > 0 {
		return fmt.Errorf("%s: the data in %s belongs to etcd cluster %s, but peers %s belong to another. "+
			"If this member's data is stale, stop it, remove %s and start it again; otherwise make coordination.members "+
			"(the initial cluster) and the cluster name the same on every node", prefix, m.dataDir, localID, strings.Join(foreign, ", "), m.dataDir)
	}
	if len(unreachable) > 0 {
		names := make([]string, 0, len(unreachable))
		for _, p := range probes {
			if p.err != nil {
				names = append(names, p.name)
			}
		}
		return fmt.Errorf("%s: cannot reach peers %s. Check that haven agents run on %s, that the peer addresses and port in haven.yaml are right "+
			"and open in firewalls between the nodes, and, with TLS, that every node's certificate comes from the same CA",
			prefix, strings.Join(unreachable, ", "), strings.Join(names, ", "))
	}
	if len(probes) == 0 {
		return fmt.Errorf("%s (a one-member cluster should always join: see etcd's log above)", prefix)
	}
	return fmt.Errorf("%s: peers %s answer but no quorum formed; check their logs, and that every node lists the same coordination.members",
		prefix, strings.Join(fine, ", "))
}

// probePeers asks every other member of the initial cluster for its
// membership, concurrently, each within probeTimeout.
func (m *Member) probePeers(ctx context.Context) []peerProbe {
	hc, err := m.peerClient()
	if err != nil {
		return []peerProbe{{name: m.name, url: m.peer.String(), err: err}}
	}
	defer hc.CloseIdleConnections()

	names := make([]string, 0, len(m.initial))
	for name := range m.initial {
		if name != m.name {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	probes := make([]peerProbe, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		u := m.initial[name]
		probes[i] = peerProbe{name: name, url: u.String()}
		wg.Go(func() {
			resp, err := peerGet(ctx, hc, u.String()+"/members")
			if err != nil {
				probes[i].err = err
				return
			}
			defer resp.Body.Close()
			probes[i].clusterID = resp.Header.Get("X-Etcd-Cluster-ID")
			if probes[i].clusterID == "" {
				probes[i].err = fmt.Errorf("answered %s without a cluster ID: is this an etcd peer port?", resp.Status)
				return
			}
			var members []peerMember
			if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&members) == nil {
				probes[i].members = []string{}
				for _, mb := range members {
					probes[i].members = append(probes[i].members, mb.Name)
				}
				probes[i].list = members
			}
		})
	}
	wg.Wait()
	return probes
}

// peerClient is an HTTP client for the other members' peer ports, with
// the member's TLS when it has one. Close its idle connections when done.
func (m *Member) peerClient() (*http.Client, error) {
	hc := &http.Client{Timeout: probeTimeout, Transport: &http.Transport{}}
	if m.tls != nil {
		tc, err := m.tls.config()
		if err != nil {
			return nil, err
		}
		hc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	return hc, nil
}

// peerGet asks a member's peer port for url; close the body.
func peerGet(ctx context.Context, hc *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return hc.Do(req)
}

// clusterVersionAgain is how often awaitClusterVersion asks again.
const clusterVersionAgain = 200 * time.Millisecond

// awaitClusterVersion waits, at most the join timeout, until a member of
// the running cluster reports the cluster's version. etcd refuses to join
// a cluster none of whose members reports one ("incompatible with current
// running cluster"), and a cluster that has just formed reports
// "not_decided" until its leader's first commit sets it: a member that
// starts a moment after the others are ready (a slow member of the
// initial cluster) would otherwise fail to start.
func (m *Member) awaitClusterVersion(ctx context.Context, running map[string]string) error {
	hc, err := m.peerClient()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(m.joinTimeout)
	var seen []string
	for waited := false; ; waited = true {
		seen = seen[:0]
		for _, name := range slices.Sorted(maps.Keys(running)) {
			if name == m.name {
				continue
			}
			v, err := peerClusterVersion(ctx, hc, running[name])
			if err == nil && v != "" {
				if waited {
					m.log.Info("the running cluster decided its version", "peer", name, "cluster_version", v)
				}
				return nil
			}
			why := "not decided"
			if err != nil {
				why = err.Error()
			}
			seen = append(seen, name+": "+why)
		}
		if !waited {
			m.log.Info("waiting for the running cluster to decide its version before joining", "peers", strings.Join(seen, "; "))
		}
		if time.Now().Add(clusterVersionAgain).After(deadline) {
			return fmt.Errorf("no member of the running cluster reported the cluster's version within %v (%s), "+
				"and etcd joins no cluster without one: check that the cluster has a leader (`haven coord members` names one)",
				m.joinTimeout, strings.Join(seen, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(clusterVersionAgain):
		}
	}
}

// peerClusterVersion asks a member's peer port for the cluster version
// (GET /version, what etcd itself asks when it joins): "" while the
// cluster has not decided it.
func peerClusterVersion(ctx context.Context, hc *http.Client, peerURL string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := peerGet(ctx, hc, peerURL+"/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("answered %s", resp.Status)
	}
	var v struct {
		Cluster string `json:"etcdcluster"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&v); err != nil {
		return "", fmt.Errorf("unreadable version: %w", err)
	}
	if _, err := semver.NewVersion(v.Cluster); err != nil {
		return "", nil // "not_decided"
	}
	return v.Cluster, nil
}

func clusterString(members map[string]string) string {
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = name + "=" + members[name]
	}
	return strings.Join(parts, ",")
}

// parseURL accepts "HOST", "HOST:PORT" or "SCHEME://HOST:PORT" and returns
// an http or https URL (https when secure) with a port.
func parseURL(raw string, secure bool, defaultPort int) (url.URL, error) {
	want := "http"
	if secure {
		want = "https"
	}
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "://") {
		s = want + "://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return url.URL{}, fmt.Errorf("%q: %w", raw, err)
	}
	if u.Scheme != want {
		return url.URL{}, fmt.Errorf("%q: scheme %s, want %s (TLS %s)", raw, u.Scheme, want, map[bool]string{true: "set", false: "not set"}[secure])
	}
	if u.Hostname() == "" {
		return url.URL{}, fmt.Errorf("%q has no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return url.URL{}, fmt.Errorf("%q: want only a scheme, a host and a port", raw)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(defaultPort))
	} else if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
		return url.URL{}, fmt.Errorf("%q: port %s is not between 1 and 65535", raw, u.Port())
	}
	return url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// quietMessages are etcd warnings that haven's setup triggers by design;
// they are logged at debug level.
var quietMessages = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true, // haven does not use etcd auth
}

// closedErrors mark etcd's complaints that its own listeners closed, which
// they do on every stop; such entries are logged at debug level.
var closedErrors = []string{"use of closed network connection", "server closed", "listener closed"}

func stopNoise(fields []zapcore.Field) bool {
	for _, f := range fields {
		if err, ok := f.Interface.(error); ok && f.Type == zapcore.ErrorType {
			msg := strings.ToLower(err.Error())
			for _, s := range closedErrors {
				if strings.Contains(msg, s) {
					return true
				}
			}
		}
	}
	return false
}

// slogCore is a zapcore.Core that writes zap entries (etcd's logs) to a
// slog.Logger, so that the agent's log stays in one format.
type slogCore struct {
	log   *slog.Logger
	min   slog.Leveler
	attrs []slog.Attr
}

// newZapLogger returns a zap logger that writes entries at min and above
// to log.
func newZapLogger(log *slog.Logger, min slog.Leveler) *zap.Logger {
	return zap.New(&slogCore{log: log, min: min})
}

func (c *slogCore) level(ent zapcore.Entry) slog.Level {
	if quietMessages[ent.Message] {
		return slog.LevelDebug
	}
	switch {
	case ent.Level >= zapcore.ErrorLevel:
		return slog.LevelError
	case ent.Level == zapcore.WarnLevel:
		return slog.LevelWarn
	case ent.Level == zapcore.InfoLevel:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// Enabled reports whether any entry at l could be written.
func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.level(zapcore.Entry{Level: l}) >= c.min.Level()
}

// With returns a core that adds fields to every entry.
func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, min: c.min, attrs: append(slices.Clip(c.attrs), fieldAttrs(fields)...)}
}

// Check adds the core to ce when the entry is to be written.
func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	l := c.level(ent)
	if l < c.min.Level() || !c.log.Enabled(context.Background(), l) {
		return ce
	}
	return ce.AddCore(ent, c)
}

// Write logs the entry.
func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	l := c.level(ent)
	if stopNoise(fields) {
		l = slog.LevelDebug
		if l < c.min.Level() || !c.log.Enabled(context.Background(), l) {
			return nil
		}
	}
	attrs := append(slices.Clip(c.attrs), fieldAttrs(fields)...)
	if ent.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", ent.LoggerName))
	}
	c.log.LogAttrs(context.Background(), l, ent.Message, attrs...)
	return nil
}

// Sync does nothing: slog handlers write through.
func (c *slogCore) Sync() error { return nil }

func fieldAttrs(fields []zapcore.Field) []slog.Attr {
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		keys := make([]string, 0, len(enc.Fields))
		for k := range enc.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			attrs = append(attrs, slog.Any(k, enc.Fields[k]))
		}
	}
	return attrs
}
