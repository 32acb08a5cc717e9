package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/backup/base"
)

// backupRun is `haven backup run`: it asks the first database node that
// answers to request a backup (the request is kept in etcd, so the node
// that takes it need not be the one asked), and with wait, waits until
// the outcome is recorded, then reads the backup's manifest from the
// repository. waitFor bounds the wait (0: none).
func backupRun(cfgPath string, incremental, wait bool, waitFor time.Duration, stdout io.Writer) error {
	ac, err := newAdminClient(cfgPath)
	if err != nil {
		return err
	}
	db := ac.cfg.Database
	if db == nil || db.Backup == nil || len(db.Backup.Repositories) == 0 {
		return fmt.Errorf("%s has no database.backup.repositories: nowhere to keep a backup", cfgPath)
	}
	kind := "full"
	if incremental {
		kind = "incremental"
	}
	var req agent.BackupRequest
	// Only an unreachable node is passed over: one that took the request
	// and failed could run it twice if another were asked.
	by, err := askNodes(ac, db.Nodes, "POST", "/api/v1/backup/run?kind="+url.QueryEscape(kind), &req, false)
	if err != nil {
		return err
	}
	if req.Kind != kind {
		fmt.Fprintf(stdout, "a %s backup requested at %s is pending: it is the one that runs\n", req.Kind, req.Requested.Local().Format(time.DateTime))
	}
	if !wait {
		fmt.Fprintf(stdout, "%s backup requested (through %s); haven status shows it running, then as the newest backup\n", req.Kind, by)
		return nil
	}
	ctx := context.Background()
	if waitFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, waitFor)
		defer cancel()
	}
	res, err := waitBackup(ctx, ac, append([]string{by}, slices.DeleteFunc(slices.Clone(db.Nodes), func(n string) bool { return n == by })...), req)
	if err != nil {
		return err
	}
	if res.Error != "" {
		return fmt.Errorf("the %s backup on %s failed: %s", res.Kind, res.Node, res.Error)
	}
	r, err := openRepository(ac.cfg, "")
	if err != nil {
		return err
	}
	m, err := base.Load(context.Background(), r, ac.cfg.Cluster, res.Label)
	if err != nil {
		return fmt.Errorf("the agent on %s reports backup %s complete, but the repository does not list it: %w", res.Node, res.Label, err)
	}
	fmt.Fprintf(stdout, "%s  %s  %s (stored %s)  from %s, %s\n", m.Label, m.Kind, size(m.Bytes), size(m.Stored), res.Node, m.StopTime.Sub(m.StartTime).Round(time.Millisecond))
	return nil
}

// waitBackup polls the database nodes, those first that answered last,
// until one of them reports the outcome of req.
func waitBackup(ctx context.Context, ac *adminClient, nodes []string, req agent.BackupRequest) (agent.BackupResult, error) {
	var last error
	for {
		for _, n := range nodes {
			var st agent.BackupStatus
			if err := ac.doContext(ctx, "GET", n, "/api/v1/backup", &st); err != nil {
				last = err
				continue
			}
			if st.Last != nil && st.Last.Requested.Equal(req.Requested) {
				return *st.Last, nil
			}
			break // it answered: the others see the same etcd
		}
		select {
		case <-ctx.Done():
			return agent.BackupResult{}, fmt.Errorf("no outcome of the %s backup requested at %s yet (last error: %v): %w", req.Kind, req.Requested.Local().Format(time.DateTime), last, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
