package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/expire"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/web"
)

// backupRole takes the cluster's scheduled and requested base backups
// (internal/backup/base). Every database node's agent runs one; they agree
// through etcd and the repository:
//
//   - what is due is read from the repository (the newest complete
//     backup of each kind, base.List), so a restarted agent keeps the
//     schedule and a backup that was killed is simply due again;
//   - which node takes it is chosen from the states the keepers publish
//     (backupNode): the healthy replica least behind, or the primary;
//   - one backup runs at a time in the cluster: the node holds the key
//     backupLockKey on a lease for as long as it copies, and stops the
//     copy when it loses the lease;
//   - `haven backup run` writes backupRequestKey, which makes a backup
//     due at once; the outcome of every attempt goes to backupResultKey.
type backupRole struct {
	a     *Agent
	db    *dbRole
	cfg   *config.Config
	b     *config.Backup
	repo  repo.Repository
	sched backupSchedule
	claim *repoClaim
	arch  *archiveRole // nil when this node does not archive
	m     *backupMetrics
	rtm   *restoreTestMetrics
	log   *slog.Logger

	// check is how often the role looks whether a backup is due (it
	// wakes at once on a request); refresh how often it lists the
	// repository between backups (and at once when any node records a
	// backup's outcome); retry how long it waits after a scheduled backup
	// failed; lockTTL the lock's lease.
	check, refresh, retry time.Duration
	lockTTL               time.Duration

	wake chan struct{}

	mu       sync.Mutex
	listed   time.Time // when the repository was last listed
	newest   newestBackups
	last     map[string]*base.Manifest // the newest complete backup of each kind
	listErr  error
	failedAt time.Time // when a scheduled backup last failed here
	etcd     map[string]json.RawMessage
	taking   *BackupRunning // the backup this node takes now
}

// Keys under /haven/<cluster>/backup/.
const (
	backupLockKey    = "lock"
	backupRequestKey = "request"
	backupResultKey  = "result"
)

func backupPrefix(cluster string) string { return "/haven/" + cluster + "/backup/" }

// BackupRequest is what `haven backup run` leaves in etcd for the
// scheduler: a backup of Kind, due at once.
type BackupRequest struct {
	Kind      string    `json:"kind"`
	Requested time.Time `json:"requested"`
	// By is the node whose admin API took the request.
	By string `json:"by"`
}

// BackupRunning is the backup being taken, as its lock says.
type BackupRunning struct {
	Node    string    `json:"node"`
	Kind    string    `json:"kind"`
	Started time.Time `json:"started"`
}

// BackupResult is the outcome of the last backup attempt in the cluster.
type BackupResult struct {
	Node  string `json:"node"`
	Kind  string `json:"kind"`
	Label string `json:"label,omitempty"`
	Error string `json:"error,omitempty"`
	// Requested is the request's time when it answered one (zero for a
	// scheduled backup).
	Requested time.Time `json:"requested,omitzero"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Bytes     int64     `json:"bytes,omitempty"`
	Stored    int64     `json:"stored_bytes,omitempty"`
}

// BackupInfo describes one complete backup.
type BackupInfo struct {
	Label   string    `json:"label"`
	Kind    string    `json:"kind"`
	Started time.Time `json:"started"`
	Stopped time.Time `json:"stopped"`
	Bytes   int64     `json:"bytes"`
	Stored  int64     `json:"stored_bytes"`
}

// ArchiveStatus is the WAL archive as the node that runs it sees it.
type ArchiveStatus struct {
	Node       string  `json:"node"`
	Archiving  bool    `json:"archiving"`
	Timeline   uint32  `json:"timeline"`
	Position   string  `json:"position"`
	LagBytes   uint64  `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
}

// BackupStatus is the backup part of the database's status.
type BackupStatus struct {
	Repository string      `json:"repository"`
	Newest     *BackupInfo `json:"newest,omitempty"`
	NewestFull *BackupInfo `json:"newest_full,omitempty"`
	// Next is when the next scheduled backup is due (zero: none is
	// scheduled; or one is due now).
	Next    time.Time      `json:"next,omitzero"`
	Running *BackupRunning `json:"running,omitempty"`
	Request *BackupRequest `json:"request,omitempty"`
	Last    *BackupResult  `json:"last,omitempty"`
	Archive *ArchiveStatus `json:"archive,omitempty"`
	// RestoreTest is the last restore test's outcome (verify_every).
	RestoreTest *RestoreTestResult `json:"restore_test,omitempty"`
	// Error is why this node cannot use the repository (it could not be
	// listed, or another cluster owns it).
	Error string `json:"error,omitempty"`
}

// newBackup returns the backup role of a database node whose haven.yaml
// has backup repositories, and nil otherwise.
func newBackup(a *Agent, cfg *config.Config, db *dbRole) (*backupRole, error) {
	if db == nil || cfg.Database.Backup == nil || len(cfg.Database.Backup.Repositories) == 0 {
		return nil, nil
	}
	b := cfg.Database.Backup
	r, err := repo.OpenNamed(b, "")
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	m, err := newBackupMetrics(a.reg)
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	rtm, err := newRestoreTestMetrics(a.reg)
	if err != nil {
		return nil, fmt.Errorf("database.backup: %w", err)
	}
	log := a.log.With("component", "backup", "repo", r.String())
	return &backupRole{
		a: a, db: db, cfg: cfg, b: b, repo: r,
		sched:   backupSchedule{base: b.BaseEvery.D(), incr: b.IncrementalEvery.D()},
		claim:   &repoClaim{r: r, cluster: cfg.Cluster, log: log},
		m:       m,
		rtm:     rtm,
		log:     log,
		check:   5 * time.Second,
		refresh: 10 * time.Minute,
		retry:   time.Minute,
		lockTTL: 10 * time.Second,
		wake:    make(chan struct{}, 1),
		etcd:    map[string]json.RawMessage{},
	}, nil
}

// run schedules backups until ctx ends; a backup this node takes is
// stopped with it (and is not complete: see base.Take).
func (r *backupRole) run(ctx context.Context, cl *etcdClients) {
	cli := cl.all
	go func() {
		_ = coord.WatchPrefix(ctx, cli, backupPrefix(r.cfg.Cluster), func(m map[string]json.RawMessage) {
			r.mu.Lock()
			if string(m[backupResultKey]) != string(r.etcd[backupResultKey]) {
				r.listed = time.Time{} // a node took a backup: list again
			}
			r.etcd = m
			r.mu.Unlock()
			r.poke()
		})
	}()
	t := time.NewTicker(r.check)
	defer t.Stop()
	for {
		r.step(ctx, cli)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

func (r *backupRole) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// request returns the pending request, and its value as stored.
func (r *backupRole) request() (*BackupRequest, json.RawMessage) {
	r.mu.Lock()
	raw := r.etcd[backupRequestKey]
	r.mu.Unlock()
	if raw == nil {
		return nil, nil
	}
	var req BackupRequest
	if json.Unmarshal(raw, &req) != nil || (req.Kind != kindFull && req.Kind != kindIncremental) {
		return nil, raw
	}
	return &req, raw
}

// step takes a backup when one is due and this node is the one to take
// it.
func (r *backupRole) step(ctx context.Context, cli *clientv3.Client) {
	r.scheduleRestoreTest(ctx, cli)
	now := time.Now()
	if r.listedAt().IsZero() || now.Sub(r.listedAt()) >= r.refresh || r.listFailed() {
		r.list(ctx) // a failed listing (expiry removing a manifest meanwhile, say) is retried at the next check
	}
	req, _ := r.request()
	kind := r.plan(req, now)
	if kind == "" {
		return
	}
	if req == nil && now.Sub(r.failedAtTime()) < r.retry {
		return // a scheduled backup failed here a moment ago
	}
	k := r.db.keeper.Load()
	if k == nil {
		return
	}
	node := backupNode(r.b.From, k.Owner().Status().Holder, k.Members())
	if node != r.a.opt.Node {
		return
	}
	r.takeLocked(ctx, cli, kind)
}

// plan answers what is due now, and notes when the next is.
func (r *backupRole) plan(req *BackupRequest, now time.Time) string {
	var asked string
	if req != nil {
		asked = req.Kind
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.listErr != nil {
		return "" // the repository does not answer: nothing to decide on
	}
	kind, _ := r.sched.due(r.newest, asked, now)
	return kind
}

// takeLocked takes the lock, checks again with a fresh listing that the
// backup is still due (another node may have just taken it), takes it
// and records the outcome.
func (r *backupRole) takeLocked(ctx context.Context, cli *clientv3.Client, kind string) {
	granted := time.Now()
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lease, err := cli.Grant(gctx, int64(r.lockTTL/time.Second))
	cancel()
	if err != nil {
		return // etcd is away: try again at the next check
	}
	kctx, stopRenewing := context.WithCancel(ctx)
	defer func() {
		// Revoking the lease deletes the lock; also when ctx ended (the
		// agent stops), so that the next holder need not wait it out.
		stopRenewing()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = cli.Revoke(rctx, lease.ID)
	}()
	renewals, err := cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return
	}
	started := time.Now().UTC()
	lock, _ := json.Marshal(BackupRunning{Node: r.a.opt.Node, Kind: kind, Started: started})
	key := backupPrefix(r.cfg.Cluster) + backupLockKey
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(lock), clientv3.WithLease(lease.ID))).Commit()
	cancel()
	if err != nil || !resp.Succeeded {
		return // another node takes a backup
	}
	r.list(ctx)
	req, reqRaw := r.request()
	if kind = r.plan(req, time.Now()); kind == "" {
		return
	}
	// The lease keeps the lock while this node copies; when renewals stop
	// being answered the copy stops, before the next holder can run
	// beside it (holdLease).
	bctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go holdLease(bctx, renewals, granted, r.lockTTL*6/10, stop)
	r.mu.Lock()
	r.taking = &BackupRunning{Node: r.a.opt.Node, Kind: kind, Started: started}
	r.mu.Unlock()
	m, err := r.take(bctx, kind)
	if cause := context.Cause(bctx); err != nil && cause != nil {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	r.mu.Lock()
	r.taking = nil
	r.mu.Unlock()
	if ctx.Err() != nil && err != nil {
		r.log.Info("backup stopped: the agent stops; it is not complete and will be taken again", "kind", kind)
		return // the agent stops: the backup is due again at the next start
	}
	res := BackupResult{Node: r.a.opt.Node, Kind: kind, Started: started, Finished: time.Now().UTC()}
	if req != nil {
		res.Requested = req.Requested
	}
	if err != nil {
		res.Error = err.Error()
		r.m.failures.WithLabelValues(failureReason(err)).Inc()
		r.mu.Lock()
		r.failedAt = time.Now()
		r.mu.Unlock()
		r.log.Error("backup failed", "kind", kind, "err", err, "retry_in", r.retry)
	} else {
		res.Kind, res.Label, res.Bytes, res.Stored = m.Kind, m.Label, m.Bytes, m.Stored
		r.list(ctx)
	}
	r.putResult(ctx, cli, res, reqRaw)
	if err == nil && m.Kind == kindFull {
		r.afterFullBackup(ctx)
	}
}

// holdLease follows the lock's lease renewals (clientv3 renews every
// third of the lease) until ctx ends, and calls lost when none has been
// answered for within, counted from since and then from each answer. etcd
// expires the lease a whole lease after the last renewal it received,
// which it received before its answer came back: with within at 6/10 of
// the lease (two renewals missed), the holder stops its copy at least 4 s
// (of a 10 s lease) before another node can take the lock, on its own
// clock, as long as a renewal's round trip takes less.
func holdLease(ctx context.Context, renewals <-chan *clientv3.LeaseKeepAliveResponse, since time.Time, within time.Duration, lost func(error)) {
	t := time.NewTimer(time.Until(since.Add(within)))
	defer t.Stop()
	for {
		select {
		case a, ok := <-renewals:
			if !ok || a == nil {
				lost(errLockLost) // the lease expired, or renewing ended
				return
			}
			t.Reset(within)
		case <-t.C:
			lost(errLockLost)
			return
		case <-ctx.Done():
			return
		}
	}
}

var (
	errLockLost = errors.New("the backup lock's lease was lost (etcd unreachable): stopped so that no other node runs a backup beside this one")
	errNoSystem = errors.New("postgres has not published its system identifier yet")
)

// take claims the repository and takes one backup of this node's
// postgres.
func (r *backupRole) take(ctx context.Context, kind string) (*base.Manifest, error) {
	k := r.db.keeper.Load()
	sys := k.State().SystemID
	if sys == 0 {
		return nil, errNoSystem
	}
	if err := r.claim.claim(ctx, sys); err != nil {
		return nil, err
	}
	cc, err := r.db.srv.ConnConfig()
	if err != nil {
		return nil, err
	}
	// A backup is no fast path: a postgres slow to answer (busy, or just
	// started) is waited for rather than failed.
	cc.ConnectTimeout = 30 * time.Second
	r.log.Info("taking a backup", "kind", kind, "from", r.b.From)
	t0 := time.Now()
	m, err := base.Take(ctx, base.Config{
		Conn:        cc,
		DataDir:     r.cfg.Database.NodeDataDir(r.a.opt.Node),
		Repo:        r.repo,
		Cluster:     r.cfg.Cluster,
		Compression: base.Compression(r.b.Compression),
		Workers:     r.b.Parallel,
		Incremental: kind == kindIncremental,
		Logger:      r.a.log,
	})
	if err != nil {
		return nil, err
	}
	r.log.Info("backup complete", "label", m.Label, "kind", m.Kind, "bytes", m.Bytes, "stored_bytes", m.Stored, "took", time.Since(t0).Round(time.Millisecond))
	return m, nil
}

// afterFullBackup runs expiry (database.backup.retain and retain_count,
// internal/backup/expire) after a successful full backup, still holding
// the lock, so that no backup of another node is being written meanwhile.
// A failure is logged and counted; the backup stands.
func (r *backupRole) afterFullBackup(ctx context.Context) {
	p, err := expire.Run(ctx, expire.Config{
		Repo:    r.repo,
		Cluster: r.cfg.Cluster,
		Policy:  expire.Policy{Retain: r.b.Retain.D(), RetainCount: r.b.RetainCount},
		Logger:  r.a.log,
	})
	if err != nil {
		r.m.expireFailures.Inc()
		r.log.Error("expiry after the full backup failed; the backup stands", "err", err)
		return
	}
	if len(p.Expire) > 0 || len(p.Incomplete) > 0 || len(p.WAL) > 0 {
		r.log.Info("expired", "backups", len(p.Expire), "incomplete", len(p.Incomplete), "objects", p.Objects, "bytes", p.Bytes, "wal", len(p.WAL), "wal_bytes", p.WALBytes)
		r.list(ctx)
	}
}

// failureReason sorts a failed backup for haven_backup_failures_total.
func failureReason(err error) string {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	switch {
	case errors.Is(err, errLockLost):
		return "lock_lost"
	case errors.Is(err, errNotOurs):
		return "claim"
	case errors.Is(err, errNoSystem), errors.As(err, &pgErr), errors.As(err, &connErr):
		return "postgres"
	case repo.IsNotExist(err):
		return "wal_missing" // the archive does not hold the backup's WAL
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "other"
}

// putResult records the outcome of an attempt and removes the request it
// answered, unless a newer one replaced it meanwhile.
func (r *backupRole) putResult(ctx context.Context, cli *clientv3.Client, res BackupResult, reqRaw json.RawMessage) {
	b, _ := json.Marshal(res)
	p := backupPrefix(r.cfg.Cluster)
	ops := []clientv3.Op{clientv3.OpPut(p+backupResultKey, string(b))}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	if reqRaw != nil {
		_, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(p+backupRequestKey), "=", string(reqRaw))).
			Then(append(ops, clientv3.OpDelete(p+backupRequestKey))...).Else(ops...).Commit()
	} else {
		_, err = cli.Txn(ctx).Then(ops...).Commit()
	}
	if err != nil {
		r.log.Warn("could not record the backup's outcome in etcd", "err", err)
	}
}

// list reads the repository's complete backups and sets the metrics from
// them, so that every database node exports the same.
func (r *backupRole) list(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ms, err := base.List(lctx, r.repo, r.cfg.Cluster)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listed = time.Now()
	if err != nil {
		if r.listErr == nil || r.listErr.Error() != err.Error() {
			r.log.Warn("cannot list the backups in the repository", "err", err)
		}
		r.listErr = err
		return
	}
	r.listErr = nil
	r.newest = newest(ms)
	r.last = map[string]*base.Manifest{}
	for _, m := range ms {
		r.last[m.Kind] = m // oldest first: the last one stays
	}
	for kind, m := range r.last {
		r.m.lastSuccess.WithLabelValues(kind).Set(float64(m.StopTime.UnixNano()) / 1e9)
		r.m.lastSize.WithLabelValues(kind).Set(float64(m.Bytes))
		r.m.lastStored.WithLabelValues(kind).Set(float64(m.Stored))
		r.m.lastDuration.WithLabelValues(kind).Set(m.StopTime.Sub(m.StartTime).Seconds())
	}
}

func (r *backupRole) listedAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listed
}

func (r *backupRole) listFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listErr != nil
}

func (r *backupRole) failedAtTime() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failedAt
}

func info(m *base.Manifest) *BackupInfo {
	if m == nil {
		return nil
	}
	return &BackupInfo{Label: m.Label, Kind: m.Kind, Started: m.StartTime, Stopped: m.StopTime, Bytes: m.Bytes, Stored: m.Stored}
}

// status reports the backups from memory: the repository as last listed,
// the keys in etcd as last watched, the archiver's position.
func (r *backupRole) status() *BackupStatus {
	if r == nil {
		return nil
	}
	st := &BackupStatus{Repository: r.repo.String()}
	r.mu.Lock()
	var newest *base.Manifest
	for _, m := range r.last {
		if newest == nil || m.Label > newest.Label {
			newest = m
		}
	}
	st.Newest, st.NewestFull = info(newest), info(r.last[kindFull])
	if r.listErr != nil {
		st.Error = r.listErr.Error()
	} else {
		_, st.Next = r.sched.due(r.newest, "", time.Now())
	}
	decode := func(key string, v any) bool { raw := r.etcd[key]; return raw != nil && json.Unmarshal(raw, v) == nil }
	var run BackupRunning
	if decode(backupLockKey, &run) {
		st.Running = &run
	}
	var req BackupRequest
	if decode(backupRequestKey, &req) {
		st.Request = &req
	}
	var res BackupResult
	if decode(backupResultKey, &res) {
		st.Last = &res
	}
	r.mu.Unlock()
	if err := r.claim.failure(); err != nil {
		st.Error = err.Error()
	}
	st.RestoreTest = r.lastRestoreTest()
	if r.arch != nil {
		tli, pos := r.arch.arch.Archived()
		if tli != 0 {
			lagB, lagS := r.arch.arch.Lag()
			st.Archive = &ArchiveStatus{Node: r.a.opt.Node, Archiving: r.db.servesPrimary(), Timeline: tli, Position: pos.String(), LagBytes: lagB, LagSeconds: lagS.Seconds()}
		}
	}
	return st
}

// backupRoutes mounts the backup API: its status, and the request for a
// backup now.
func (a *Agent) backupRoutes() {
	a.admin.HandleRead("GET /api/v1/backup", func(w http.ResponseWriter, _ *http.Request) {
		rs := a.current()
		if rs.backup == nil {
			web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s takes no backups: it is not a database node, or haven.yaml has no database.backup", a.opt.Node))
			return
		}
		web.WriteJSON(w, http.StatusOK, rs.backup.status())
	})
	a.admin.HandleMutating("POST /api/v1/backup/run", a.backupRun)
}

// backupRun serves POST /api/v1/backup/run?kind=full|incremental: it
// leaves a request in etcd, which the scheduler of the node that takes
// backups serves at once. A request already pending is answered instead
// (202 either way), so that two callers wait for the same backup.
func (a *Agent) backupRun(w http.ResponseWriter, r *http.Request) {
	rs := a.current()
	if rs.coord == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
		return
	}
	cfg := rs.coord.cfg
	if cfg.Database == nil || cfg.Database.Backup == nil || len(cfg.Database.Backup.Repositories) == 0 {
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no database.backup.repositories: nowhere to keep a backup"))
		return
	}
	kind := r.URL.Query().Get("kind")
	if kind == "" {
		kind = kindFull
	}
	if kind != kindFull && kind != kindIncremental {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("kind %q is not full or incremental", kind))
		return
	}
	cli := rs.coord.etcd()
	if cli == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd"))
		return
	}
	req := BackupRequest{Kind: kind, Requested: time.Now().UTC(), By: a.opt.Node}
	b, _ := json.Marshal(req)
	key := backupPrefix(cfg.Cluster) + backupRequestKey
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("write the request to etcd: %w", err))
		return
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || json.Unmarshal(kvs[0].Value, &req) != nil {
			web.WriteError(w, http.StatusConflict, errors.New("a backup request is pending and cannot be read: try again"))
			return
		}
	}
	web.WriteJSON(w, http.StatusAccepted, req)
}

// repoClaim claims the repository for this cluster (repo.Claim) once per
// system identifier, before the archiver or a backup writes to it: two
// clusters pointed at one repository and cluster name are refused, the
// second one told whose it is. A refusal is kept for claimRetry before
// the repository is asked again.
type repoClaim struct {
	r       repo.Repository
	cluster string
	log     *slog.Logger

	mu      sync.Mutex
	claimed uint64
	err     error
	at      time.Time
}

const claimRetry = 30 * time.Second

// errNotOurs marks a refused claim.
var errNotOurs = errors.New("the repository is another cluster's")

func (c *repoClaim) claim(ctx context.Context, system uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed == system {
		return nil
	}
	if c.err != nil && time.Since(c.at) < claimRetry {
		return c.err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := repo.Claim(ctx, c.r, c.cluster, repo.Owner{Cluster: c.cluster, SystemID: system})
	c.at = time.Now()
	if errors.Is(err, repo.ErrClaimed) {
		err = fmt.Errorf("%w: %w", errNotOurs, err)
	}
	if err != nil {
		if c.err == nil || c.err.Error() != err.Error() {
			c.log.Error("not writing to the backup repository", "err", err)
		}
		c.err = err
		return err
	}
	c.claimed, c.err = system, nil
	return nil
}

// failure is why the last claim failed, nil once one succeeded.
func (c *repoClaim) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// backupMetrics are the backup role's metrics. The last-backup gauges come
// from the repository, so every database node exports the same; failures
// are counted on the node that took the backup.
type backupMetrics struct {
	lastSuccess, lastSize, lastStored, lastDuration *prometheus.GaugeVec
	failures                                        *prometheus.CounterVec
	expireFailures                                  prometheus.Counter
}

// failureReasons are the values of haven_backup_failures_total's reason.
var failureReasons = []string{"postgres", "wal_missing", "claim", "lock_lost", "cancelled", "other"}

func newBackupMetrics(reg prometheus.Registerer) (*backupMetrics, error) {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"kind"})
	}
	m := &backupMetrics{
		lastSuccess:  gauge("haven_backup_last_success_timestamp_seconds", "When the newest complete base backup of each kind (full, incremental) in the repository ended, in seconds since 1970."),
		lastSize:     gauge("haven_backup_last_size_bytes", "The size of the data directory the newest complete base backup of each kind holds."),
		lastStored:   gauge("haven_backup_last_stored_bytes", "What the newest complete base backup of each kind stored in the repository (compressed; an incremental one only what changed)."),
		lastDuration: gauge("haven_backup_last_duration_seconds", "How long the newest complete base backup of each kind took, from pg_backup_start to its manifest."),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_backup_failures_total",
			Help: "Base backups this node started that did not complete, by reason: postgres, wal_missing (the archive did not hold the backup's WAL in time), claim (the repository is another cluster's), lock_lost, cancelled, other.",
		}, []string{"reason"}),
		expireFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_backup_expire_failures_total",
			Help: "Expiry runs (retain, retain_count) after a full backup on this node that failed.",
		}),
	}
	for _, r := range failureReasons {
		m.failures.WithLabelValues(r)
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.lastSuccess, m.lastSize, m.lastStored, m.lastDuration, m.failures, m.expireFailures} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
