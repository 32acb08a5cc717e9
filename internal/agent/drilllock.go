package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/web"
)

// The drill lock: one drill at a time, cluster-wide. A scheduled drill's
// agent takes it (runLocked); haven drill run takes it through POST
// /api/v1/drill/lock on an agent of the top-level scope and gives it back
// with DELETE when it ends. Its lease covers the drill's whole bound and is
// never renewed: the drill may freeze the agent that took it, and a drill
// whose client died leaves a lock that lapses by itself.

// DrillLock is who holds the drill lock, for what, and until when at the
// latest.
type DrillLock struct {
	// Token gives the lock back (DELETE /api/v1/drill/lock/TOKEN); only
	// its taker sees it.
	Token    string    `json:"token,omitempty"`
	Node     string    `json:"node"`
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Until    time.Time `json:"until"`
}

// drillLockedError is the lock held by another drill.
type drillLockedError struct{ held DrillLock }

func (e *drillLockedError) Error() string {
	h := e.held
	return fmt.Sprintf("another drill runs: %s, taken through %s at %s; its lock lapses at %s at the latest (haven drill run --no-lock runs beside it)",
		h.Scenario, h.Node, h.Started.Format(time.TimeOnly), h.Until.Format(time.TimeOnly))
}

// drillLockTimeout bounds each call to etcd about the lock.
const drillLockTimeout = 5 * time.Second

// takeDrillLock takes the cluster's drill lock for scenario, on node's
// behalf, for bound and a minute more; the error is a *drillLockedError
// when another drill holds it.
func takeDrillLock(ctx context.Context, cli *clientv3.Client, cluster, node, scenario string, bound time.Duration) (DrillLock, error) {
	ctx, cancel := context.WithTimeout(ctx, drillLockTimeout)
	defer cancel()
	ttl := bound + time.Minute
	lease, err := cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return DrillLock{}, fmt.Errorf("the drill lock's lease: %w", err)
	}
	now := time.Now().UTC()
	l := DrillLock{Node: node, Scenario: scenario, Started: now, Until: now.Add(ttl)}
	value, _ := json.Marshal(l)
	key := drillsPrefix(cluster) + drillLockKey
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(key)).Commit()
	if err == nil && resp.Succeeded {
		l.Token = strconv.FormatInt(int64(lease.ID), 16)
		return l, nil
	}
	_, _ = cli.Revoke(context.WithoutCancel(ctx), lease.ID)
	if err != nil {
		return DrillLock{}, fmt.Errorf("take the drill lock: %w", err)
	}
	var held DrillLock
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		_ = json.Unmarshal(kvs[0].Value, &held)
	}
	return DrillLock{}, &drillLockedError{held}
}

// errNotTheLock is a token that is not the drill lock's (any more).
var errNotTheLock = errors.New("no drill holds the lock with this token: it lapsed, or was given back")

// releaseDrillLock gives the lock back: it revokes the token's lease, but
// only while that lease holds the lock (a token is any lease's id).
func releaseDrillLock(ctx context.Context, cli *clientv3.Client, cluster, token string) error {
	id, err := strconv.ParseInt(token, 16, 64)
	if err != nil {
		return errNotTheLock
	}
	ctx, cancel := context.WithTimeout(ctx, drillLockTimeout)
	defer cancel()
	key := drillsPrefix(cluster) + drillLockKey
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(key), "=", clientv3.LeaseID(id))).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("give the drill lock back: %w", err)
	}
	if !resp.Succeeded {
		return errNotTheLock
	}
	_, _ = cli.Revoke(ctx, clientv3.LeaseID(id))
	return nil
}

// drillLockRequest is POST /api/v1/drill/lock's body: the scenario, and
// how long its faults last (the lock covers that and drillSlack).
type drillLockRequest struct {
	Scenario string `json:"scenario"`
	For      string `json:"for"` // a Go duration, such as "10s"
}

// drillLockRoutes mounts POST /api/v1/drill/lock and DELETE
// /api/v1/drill/lock/{token}.
func (a *Agent) drillLockRoutes() {
	a.admin.HandleMutating("POST /api/v1/drill/lock", func(w http.ResponseWriter, r *http.Request) {
		cli, cluster, ok := a.drillLockClient(w, r)
		if !ok {
			return
		}
		var req drillLockRequest
		err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req)
		faults, perr := time.ParseDuration(req.For)
		if err != nil || perr != nil || req.Scenario == "" || faults < 0 {
			web.WriteError(w, http.StatusBadRequest, fmt.Errorf(`the body is not {"scenario": NAME, "for": DURATION}: %v`, errors.Join(err, perr)))
			return
		}
		l, err := takeDrillLock(r.Context(), cli, cluster, a.opt.Node, req.Scenario, faults+drillSlack)
		var held *drillLockedError
		switch {
		case errors.As(err, &held):
			web.WriteError(w, http.StatusConflict, err)
		case err != nil:
			web.WriteError(w, http.StatusServiceUnavailable, err)
		default:
			a.log.Warn("drill lock taken", "scenario", l.Scenario, "until", l.Until)
			web.WriteJSON(w, http.StatusCreated, l)
		}
	})
	a.admin.HandleMutating("DELETE /api/v1/drill/lock/{token}", func(w http.ResponseWriter, r *http.Request) {
		cli, cluster, ok := a.drillLockClient(w, r)
		if !ok {
			return
		}
		switch err := releaseDrillLock(r.Context(), cli, cluster, r.PathValue("token")); {
		case errors.Is(err, errNotTheLock):
			web.WriteError(w, http.StatusNotFound, err)
		case err != nil:
			web.WriteError(w, http.StatusServiceUnavailable, err)
		default:
			a.log.Info("drill lock given back")
			web.WriteJSON(w, http.StatusOK, map[string]string{"result": "released"})
		}
	})
}

// drillLockClient returns the etcd client of the top-level scope, where
// the lock lives, or writes why this agent cannot reach it.
func (a *Agent) drillLockClient(w http.ResponseWriter, r *http.Request) (*clientv3.Client, string, bool) {
	if _, ok := a.drillsOn(w); !ok {
		return nil, "", false
	}
	cfg := a.config()
	co := a.current().coord
	if cfg.Coordination == nil || co == nil || cfg.CoordinationOf(a.opt.Node) != cfg.Coordination {
		var nodes []string
		for _, n := range cfg.NodeNames() {
			if cfg.Coordination != nil && cfg.CoordinationOf(n) == cfg.Coordination {
				nodes = append(nodes, n)
			}
		}
		web.WriteError(w, http.StatusMisdirectedRequest, fmt.Errorf("node %s does not coordinate through the top-level scope, where the drill lock is: ask one of its nodes (%s)", a.opt.Node, strings.Join(nodes, ", ")))
		return nil, "", false
	}
	ctx, cancel := context.WithTimeout(r.Context(), drillLockTimeout)
	defer cancel()
	cl, err := co.waitClients(ctx)
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("etcd has not answered this agent yet: %w", err))
		return nil, "", false
	}
	return cl.all, cfg.Cluster, true
}
