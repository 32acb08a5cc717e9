package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/backup/check"
)

// The restore test (database.backup.verify_every): the node that takes
// backups restores the newest one into a scratch directory beside its
// data directory, starts PostgreSQL on it, replays the archive and runs a
// query (internal/backup/check), then records the outcome under
// backupVerifiedKey, so that every node knows when the next is due and
// exports the same metrics.

// backupVerifiedKey holds the last restore test's RestoreTestResult.
const backupVerifiedKey = "verified"

// RestoreTestResult is the outcome of the last restore test.
type RestoreTestResult struct {
	Node  string    `json:"node"`
	Label string    `json:"label"`
	At    time.Time `json:"at"` // when it ended
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	// Seconds is how long restore, recovery and query took.
	Seconds float64 `json:"seconds"`
	// RecoveredLSN is how far recovery replayed the archive.
	RecoveredLSN string `json:"recovered_lsn,omitempty"`
}

// restoreTestMetrics are the last restore test's, from etcd.
type restoreTestMetrics struct {
	last, ok, seconds prometheus.Gauge
}

func newRestoreTestMetrics(reg prometheus.Registerer) (*restoreTestMetrics, error) {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &restoreTestMetrics{
		last:    gauge("haven_backup_restore_test_timestamp_seconds", "When the last restore test of the newest base backup (verify_every, haven backup check) ended, in seconds since 1970; 0: none yet."),
		ok:      gauge("haven_backup_restore_test_success", "1 when the last restore test restored, recovered and queried the newest backup; 0 when it failed (its error is in haven status)."),
		seconds: gauge("haven_backup_restore_test_duration_seconds", "How long the last restore test took: restore, recovery from the archive, query."),
	}
	for _, c := range []prometheus.Collector{m.last, m.ok, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// lastRestoreTest returns the last restore test's result, nil when none.
func (r *backupRole) lastRestoreTest() *RestoreTestResult {
	r.mu.Lock()
	raw := r.etcd[backupVerifiedKey]
	r.mu.Unlock()
	var res RestoreTestResult
	if raw == nil || json.Unmarshal(raw, &res) != nil {
		return nil
	}
	return &res
}

// scheduleRestoreTest runs the restore test when verify_every says one is
// due and this node is the one that takes backups; it blocks the backup
// schedule while it runs, so that the two do not compete for the disk.
func (r *backupRole) scheduleRestoreTest(ctx context.Context, cli *clientv3.Client) {
	last := r.lastRestoreTest()
	if last != nil && r.rtm != nil {
		r.rtm.last.Set(float64(last.At.Unix()))
		r.rtm.seconds.Set(last.Seconds)
		r.rtm.ok.Set(0)
		if last.OK {
			r.rtm.ok.Set(1)
		}
	}
	every := r.b.VerifyEvery.D()
	if every == 0 || (last != nil && time.Since(last.At) < every) {
		return
	}
	r.mu.Lock()
	haveBackup := len(r.last) > 0
	r.mu.Unlock()
	k := r.db.keeper.Load()
	if !haveBackup || k == nil || backupNode(r.b.From, k.Owner().Status().Holder, k.Members()) != r.a.opt.Node {
		return
	}
	res := r.restoreTest(ctx)
	if ctx.Err() != nil {
		return
	}
	b, _ := json.Marshal(res)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Put(pctx, backupPrefix(r.cfg.Cluster)+backupVerifiedKey, string(b)); err != nil {
		r.log.Warn("could not record the restore test's outcome in etcd: it runs again", "err", err)
	}
}

// restoreTest runs one restore test of the newest backup.
func (r *backupRole) restoreTest(ctx context.Context) RestoreTestResult {
	db := r.cfg.Database
	user := ""
	if os.Geteuid() == 0 {
		user = db.User
	}
	r.log.Info("restore test: restoring the newest backup into a scratch directory")
	start := time.Now()
	got, err := check.Run(ctx, check.Config{Repo: r.repo, Cluster: r.cfg.Cluster,
		ScratchDir: filepath.Join(filepath.Dir(r.db.srv.DataDir()), "restore-test"),
		BinDir:     db.Bindir, User: user, Settings: db.Settings, Workers: r.b.Parallel, Logger: r.log})
	res := RestoreTestResult{Node: r.a.opt.Node, Label: got.Label, At: time.Now(), OK: err == nil,
		Seconds: time.Since(start).Seconds()}
	if err != nil {
		res.Error = err.Error()
		r.log.Error("restore test failed: the newest backup could not be restored, recovered and queried", "label", got.Label, "err", err)
		return res
	}
	res.RecoveredLSN = got.RecoveredLSN.String()
	r.log.Info("restore test passed", "label", got.Label, "recovered_lsn", got.RecoveredLSN, "answer", got.Answer,
		"took", got.Duration.Round(time.Millisecond))
	return res
}
