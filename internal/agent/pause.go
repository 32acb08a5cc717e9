package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// pauseWait bounds the etcd calls of a pause or resume, and the wait for
// this node's keeper to see the change.
const pauseWait = 5 * time.Second

// databaseEtcd is what the database's operator calls need: etcd, and the
// configuration's cluster name. It writes the error for the caller when
// either is missing.
func (a *Agent) databaseEtcd(w http.ResponseWriter) (rs roles, ok bool) {
	rs = a.current()
	switch {
	case rs.coord == nil:
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
	case rs.coord.cfg.Database == nil:
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no database section"))
	case rs.coord.etcd() == nil:
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd: the database's records live there"))
	default:
		return rs, true
	}
	return rs, false
}

// pause serves POST /api/v1/database/pause?for=D&reason=R: it writes the
// pause record (owner from X-Haven-Operator), and waits until this node's
// keeper sees it when the node is a database node.
func (a *Agent) pause(w http.ResponseWriter, r *http.Request) {
	rs, ok := a.databaseEtcd(w)
	if !ok {
		return
	}
	p := keeper.Pause{Owner: r.Header.Get("X-Haven-Operator"), Reason: r.URL.Query().Get("reason"), Set: time.Now()}
	if p.Owner == "" {
		p.Owner = "admin API from " + r.RemoteAddr
	}
	if d := r.URL.Query().Get("for"); d != "" {
		dur, err := time.ParseDuration(d)
		if err != nil || dur < time.Second {
			web.WriteError(w, http.StatusBadRequest, fmt.Errorf("for=%q is not a duration of a second or more, such as 30m", d))
			return
		}
		p.Until = p.Set.Add(dur)
	}
	ctx, cancel := context.WithTimeout(r.Context(), pauseWait)
	defer cancel()
	if err := keeper.SetPause(ctx, rs.coord.etcd(), rs.coord.cfg.Cluster, dbName, p); err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	a.log.Warn("database paused: no automatic failover until resumed", "event", "database", "owner", p.Owner, "reason", p.Reason, "until", p.Until)
	a.answerPause(ctx, w, rs, true)
}

// resume serves DELETE /api/v1/database/pause.
func (a *Agent) resume(w http.ResponseWriter, r *http.Request) {
	rs, ok := a.databaseEtcd(w)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pauseWait)
	defer cancel()
	was, err := keeper.Resume(ctx, rs.coord.etcd(), rs.coord.cfg.Cluster, dbName)
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if was {
		a.log.Warn("database resumed: automatic failover again", "event", "database", "owner", r.Header.Get("X-Haven-Operator"))
	}
	a.answerPause(ctx, w, rs, false)
}

// answerPause waits, up to ctx, until this node's keeper (on a database
// node) sees the database paused or not as written, and answers with the
// record it sees: 200 once it does, 202 when it has not yet.
func (a *Agent) answerPause(ctx context.Context, w http.ResponseWriter, rs roles, paused bool) {
	var k *keeper.Keeper
	if rs.db != nil {
		k = rs.db.keeper.Load()
	}
	if k == nil {
		web.WriteJSON(w, http.StatusAccepted, map[string]any{"paused": paused, "result": "recorded in etcd"})
		return
	}
	for (k.Paused() != nil) != paused {
		select {
		case <-ctx.Done():
			web.WriteJSON(w, http.StatusAccepted, map[string]any{"paused": paused, "result": "recorded in etcd; this node's keeper has not seen it yet"})
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	web.WriteJSON(w, http.StatusOK, map[string]any{"paused": paused, "record": k.Paused()})
}
