package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/web"
)

// The coordination group's operations for `haven coord`: the members and
// their health, a snapshot of the key space, defragmentation and the
// alarms. Any node connected to etcd answers for its scope; the
// operations go through its etcd client.

// EtcdMember is one member of the coordination group, as the member list
// and its own status say.
type EtcdMember struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	// Learner: added, not yet voting. Started is false for a member that
	// was added and has not joined yet.
	Learner bool `json:"learner,omitempty"`
	Started bool `json:"started"`
	// From the member's own status, when it answered.
	Healthy   bool   `json:"healthy"`
	Leader    bool   `json:"leader,omitempty"`
	Version   string `json:"version,omitempty"`
	DBSize    int64  `json:"db_size_bytes,omitempty"`
	DBInUse   int64  `json:"db_size_in_use_bytes,omitempty"`
	RaftTerm  uint64 `json:"raft_term,omitempty"`
	RaftIndex uint64 `json:"raft_index,omitempty"`
	Error     string `json:"error,omitempty"`
}

// EtcdGroup is the coordination group: its members and its alarms.
type EtcdGroup struct {
	Members []EtcdMember `json:"members"`
	// Alarms are etcd's raised alarms, as "MEMBER_ID: NOSPACE".
	Alarms []string `json:"alarms,omitempty"`
	// Leader is the leader's name, "" when no member reports one.
	Leader string `json:"leader"`
}

// coordOpsTimeout bounds the quick operations; a snapshot and a defrag
// get longer.
const coordOpsTimeout = 5 * time.Second

func (a *Agent) coordRoutes() {
	a.admin.HandleRead("GET /api/v1/coordination/members", a.coordMembers)
	a.admin.HandleMutating("GET /api/v1/coordination/snapshot", a.coordSnapshot)
	a.admin.HandleMutating("POST /api/v1/coordination/defrag", a.coordDefrag)
	a.admin.HandleMutating("POST /api/v1/coordination/alarms/disarm", a.coordDisarm)
	a.admin.HandleMutating("POST /api/v1/coordination/replace", a.coordReplace)
}

// keepsQuorum says why changing the group would leave it without a quorum
// of answering members at either step, or nil: first remove (a name, ""
// for none), then add members that have not started yet. Each step must
// leave a majority of the members it counts answering, so that the group
// never stops taking writes while it changes.
func keepsQuorum(g EtcdGroup, remove string, add int) error {
	members, answering := 0, 0
	removed := false
	for _, m := range g.Members {
		if m.Name == remove && remove != "" {
			removed = true
			continue
		}
		members++
		if m.Healthy {
			answering++
		}
	}
	if remove != "" && !removed {
		return fmt.Errorf("%s is not a member (members: %s)", remove, memberNames(g))
	}
	if answering < members/2+1 {
		now := "now"
		if remove != "" {
			now = "without " + remove
		}
		return fmt.Errorf("%s, %d of %d members answer: no majority; bring members back first (haven coord members)", now, answering, members)
	}
	if answering < (members+add)/2+1 {
		return fmt.Errorf("with %d new member(s) that have not started, %d of %d would answer: no majority; start it, or bring members back first", add, answering, members+add)
	}
	return nil
}

func memberNames(g EtcdGroup) string {
	var names []string
	for _, m := range g.Members {
		names = append(names, m.Name)
	}
	return fmt.Sprint(names)
}

// coordReplace serves POST /api/v1/coordination/replace?old=NAME&new=NAME&peer=URL:
// old (a member lost for good, or one to retire; "" for none) is removed,
// then new ("" for none) is added with its peer URL, not started: its agent, started
// next with an empty data dir, joins the running group. Either step that
// would leave no majority answering is refused before anything changes.
func (a *Agent) coordReplace(w http.ResponseWriter, r *http.Request) {
	cli := a.coordClient(w)
	if cli == nil {
		return
	}
	q := r.URL.Query()
	old, name, peer := q.Get("old"), q.Get("new"), q.Get("peer")
	if (name == "" && old == "") || (name != "") != (peer != "") {
		web.WriteError(w, http.StatusBadRequest, errors.New("give old=NAME to remove a member, new=NAME and peer=URL to add one, or both"))
		return
	}
	adding := 0
	if name != "" {
		adding = 1
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	g, err := group(ctx, cli)
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	for _, m := range g.Members {
		if m.Name == name && name != old {
			web.WriteError(w, http.StatusConflict, fmt.Errorf("%s is a member already", name))
			return
		}
	}
	if err := keepsQuorum(g, old, adding); err != nil {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("refused, nothing changed: %w", err))
		return
	}
	if old != "" {
		var id uint64
		for _, m := range g.Members {
			if m.Name == old {
				fmt.Sscanf(m.ID, "%x", &id)
			}
		}
		if _, err := cli.MemberRemove(ctx, id); err != nil {
			// 500, not 503: the removal may have happened; the caller
			// must look (haven coord members), not ask another node.
			web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("remove %s: %w; haven coord members shows whether it happened", old, err))
			return
		}
		a.log.Warn("etcd member removed", "member", old, "operator", r.Header.Get("X-Haven-Operator"))
	}
	if name == "" {
		web.WriteJSON(w, http.StatusOK, map[string]string{"removed": old})
		return
	}
	resp, err := addMember(ctx, cli, peer)
	if err != nil {
		web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("%s removed, but adding %s at %s failed: %w; add it with haven coord add %s", old, name, peer, err, name))
		return
	}
	a.log.Warn("etcd member added, to start", "member", name, "peer_url", peer, "id", fmt.Sprintf("%x", resp.Member.ID), "operator", r.Header.Get("X-Haven-Operator"))
	web.WriteJSON(w, http.StatusOK, map[string]string{"removed": old, "added": name, "id": fmt.Sprintf("%x", resp.Member.ID), "peer_url": peer})
}

// coordClient is the etcd client of this node's scope, or an answer that
// says why there is none.
func (a *Agent) coordClient(w http.ResponseWriter) *clientv3.Client {
	c := a.current().coord
	if c == nil {
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no coordination section"))
		return nil
	}
	cli := c.etcd()
	if cli == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd yet; another node may answer"))
		return nil
	}
	return cli
}

// Group reads the members and asks each for its status, all at once.
func group(ctx context.Context, cli *clientv3.Client) (EtcdGroup, error) {
	var g EtcdGroup
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return g, fmt.Errorf("etcd member list: %w", err)
	}
	g.Members = make([]EtcdMember, len(ml.Members))
	var wg sync.WaitGroup
	for i, m := range ml.Members {
		em := EtcdMember{Name: m.Name, ID: fmt.Sprintf("%x", m.ID), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner, Started: len(m.ClientURLs) > 0}
		g.Members[i] = em
		if !em.Started {
			g.Members[i].Error = "added, not started: its node has not joined yet"
			continue
		}
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := cli.Status(sctx, m.ClientURLs[0])
			if err != nil {
				g.Members[i].Error = err.Error()
				return
			}
			em := &g.Members[i]
			em.Healthy = len(st.Errors) == 0
			em.Leader = st.Leader == m.ID
			em.Version, em.DBSize, em.DBInUse = st.Version, st.DbSize, st.DbSizeInUse
			em.RaftTerm, em.RaftIndex = st.RaftTerm, st.RaftIndex
			if len(st.Errors) > 0 {
				em.Error = fmt.Sprint(st.Errors)
			}
		})
	}
	wg.Wait()
	sort.Slice(g.Members, func(i, j int) bool { return g.Members[i].Name < g.Members[j].Name })
	for _, m := range g.Members {
		if m.Leader {
			g.Leader = m.Name
		}
	}
	al, err := cli.AlarmList(ctx)
	if err != nil {
		return g, fmt.Errorf("etcd alarm list: %w", err)
	}
	for _, am := range al.Alarms {
		g.Alarms = append(g.Alarms, fmt.Sprintf("%x: %s", am.MemberID, am.Alarm))
	}
	return g, nil
}

func (a *Agent) coordMembers(w http.ResponseWriter, r *http.Request) {
	cli := a.coordClient(w)
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), coordOpsTimeout)
	defer cancel()
	g, err := group(ctx, cli)
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	web.WriteJSON(w, http.StatusOK, g)
}

// coordSnapshot streams a snapshot of the key space (etcd's backend
// file, as `etcdctl snapshot save` gets it) from the member this node's
// client reaches. The write token guards it: it holds every record.
func (a *Agent) coordSnapshot(w http.ResponseWriter, r *http.Request) {
	cli := a.coordClient(w)
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("etcd snapshot: %w", err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	n, err := io.Copy(w, rc)
	if err != nil {
		// The status is sent: a broken stream is all the client sees, and
		// its size and checksum will not match.
		a.log.Error("etcd snapshot: the stream broke", "after_bytes", n, "err", err)
		return
	}
	a.log.Info("etcd snapshot sent", "bytes", n, "remote", r.RemoteAddr, "operator", r.Header.Get("X-Haven-Operator"))
}

// DefragResult is one member's defragmentation.
type DefragResult struct {
	Name   string `json:"name"`
	Before int64  `json:"db_size_before_bytes"`
	After  int64  `json:"db_size_after_bytes"`
	Took   string `json:"took"`
	Error  string `json:"error,omitempty"`
}

// coordDefrag defragments every member, one at a time, the leader last
// (a member does not answer while it defragments: one at a time keeps the
// quorum).
func (a *Agent) coordDefrag(w http.ResponseWriter, r *http.Request) {
	cli := a.coordClient(w)
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
	defer cancel()
	gctx, gcancel := context.WithTimeout(ctx, coordOpsTimeout)
	g, err := group(gctx, cli)
	gcancel()
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	sort.SliceStable(g.Members, func(i, j int) bool { return !g.Members[i].Leader && g.Members[j].Leader })
	var out []DefragResult
	for _, m := range g.Members {
		res := DefragResult{Name: m.Name, Before: m.DBSize}
		if !m.Started || m.Error != "" {
			res.Error = "skipped: " + m.Error
			out = append(out, res)
			continue
		}
		start := time.Now()
		if _, err := cli.Defragment(ctx, m.ClientURLs[0]); err != nil {
			res.Error = err.Error()
			out = append(out, res)
			break // the others wait for the operator to look
		}
		res.Took = time.Since(start).Round(time.Millisecond).String()
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		if st, err := cli.Status(sctx, m.ClientURLs[0]); err == nil {
			res.After = st.DbSize
		}
		scancel()
		a.log.Info("etcd member defragmented", "member", m.Name, "before", res.Before, "after", res.After, "took", res.Took)
		out = append(out, res)
	}
	web.WriteJSON(w, http.StatusOK, out)
}

// coordDisarm clears every raised alarm (after the space was freed: a
// NOSPACE alarm stops every write until it is cleared).
func (a *Agent) coordDisarm(w http.ResponseWriter, r *http.Request) {
	cli := a.coordClient(w)
	if cli == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), coordOpsTimeout)
	defer cancel()
	resp, err := cli.AlarmDisarm(ctx, &clientv3.AlarmMember{})
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("etcd alarm disarm: %w", err))
		return
	}
	var cleared []string
	for _, am := range resp.Alarms {
		cleared = append(cleared, fmt.Sprintf("%x: %s", am.MemberID, am.Alarm))
	}
	a.log.Warn("etcd alarms disarmed", "cleared", cleared, "operator", r.Header.Get("X-Haven-Operator"))
	web.WriteJSON(w, http.StatusOK, map[string]any{"cleared": cleared})
}

// addMember adds a member at peer. Right after a removal etcd refuses a
// change for a moment ("unhealthy cluster": its strict reconfiguration
// check counts the members connected to the leader in the last few
// seconds): it is asked again, until ctx ends.
func addMember(ctx context.Context, cli *clientv3.Client, peer string) (*clientv3.MemberAddResponse, error) {
	for {
		resp, err := cli.MemberAdd(ctx, []string{peer})
		if err == nil || !errors.Is(err, rpctypes.ErrUnhealthy) {
			return resp, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// CoordinationMember is what RestoreCoordination needs to know of node's
// etcd member: its data directory and client URL, and the members of its
// scope. ok is false when node is no member of the scope (the global one
// with global).
func CoordinationMember(cfg *config.Config, node string, global bool) (m coord.MemberConfig, ok bool) {
	a := &Agent{opt: Options{Node: node}, log: slog.New(slog.DiscardHandler)}
	c := newCoordination(a, cfg)
	if global {
		c = &coordination{a: a, cfg: cfg, scope: cfg.GlobalCoordination(), global: true}
	}
	if c.scope == nil || !slices.Contains(c.scope.Members, node) {
		return coord.MemberConfig{}, false
	}
	return c.memberConfig(), true
}
