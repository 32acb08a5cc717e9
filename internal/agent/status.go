package agent

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// CoordinationStatus is the coordination part of /api/v1/status.
type CoordinationStatus struct {
	Endpoints []string                    `json:"endpoints"`
	Connected bool                        `json:"connected"`
	Member    *MemberStatus               `json:"member,omitempty"`
	Etcd      []EndpointHealth            `json:"etcd,omitempty"`
	Members   map[string]coord.MemberInfo `json:"members"`
	VIPs      []VIPStatus                 `json:"vips"`
	Database  *DatabaseStatus             `json:"database,omitempty"`
}

// MemberStatus is this node's embedded etcd member.
type MemberStatus struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// EndpointHealth is one etcd member as its endpoint reports it.
type EndpointHealth struct {
	Endpoint string `json:"endpoint"`
	Healthy  bool   `json:"healthy"`
	Leader   bool   `json:"leader,omitempty"`
	RaftTerm uint64 `json:"raft_term,omitempty"`
	Error    string `json:"error,omitempty"`
}

// DatabaseStatus is the database part of /api/v1/status.
type DatabaseStatus struct {
	// Primary is the node that holds the primary's record, and Epoch its
	// fencing epoch.
	Primary string                        `json:"primary"`
	Epoch   int64                         `json:"epoch"`
	Members map[string]keeper.MemberState `json:"members"`
	Sync    keeper.SyncState              `json:"sync"`
	// Routes and Router, on a router node: where its pools send clients
	// now, and the pools' balancers.
	Routes *keeper.Routes `json:"routes,omitempty"`
	Router []lb.Status    `json:"router,omitempty"`
	// Backup, on a database node with backup repositories: the newest
	// backups, the one running, the WAL archive.
	Backup *BackupStatus `json:"backup,omitempty"`
	// Paused is the operator's pause record (haven pg pause): while it
	// exists no replica takes the lead. Nil when not paused.
	Paused *keeper.Pause `json:"paused,omitempty"`
	// Galera, for a database of engine galera, is its state; Primary is
	// then its writer.
	Galera *GaleraStatus `json:"galera,omitempty"`
}

// coordinationStatus reports the coordination section, asking every etcd
// member for its health.
func (rs roles) coordinationStatus(ctx context.Context) *CoordinationStatus {
	c := rs.coord
	if c == nil {
		return nil
	}
	s := &CoordinationStatus{Endpoints: c.endpoints(), Members: map[string]coord.MemberInfo{}}
	if c.ownMember() != nil {
		s.Member = &MemberStatus{Name: c.a.opt.Node, Ready: c.memberReady() == nil}
	}
	cli := c.etcd()
	c.mu.Lock()
	for k, v := range c.members {
		s.Members[k] = v
	}
	c.mu.Unlock()
	s.VIPs = rs.vips.statuses()
	s.Database = rs.databaseStatus()
	if cli == nil {
		return s
	}
	s.Connected = true
	// Ask every member at once: a dead one costs its timeout once, not
	// once per member.
	s.Etcd = make([]EndpointHealth, len(s.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range s.Endpoints {
		wg.Go(func() {
			h := EndpointHealth{Endpoint: ep}
			sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			st, err := cli.Status(sctx, ep)
			cancel()
			if err != nil {
				h.Error = err.Error()
			} else {
				h.Healthy = len(st.Errors) == 0
				h.Leader = st.Leader == st.Header.MemberId
				h.RaftTerm = st.RaftTerm
				if len(st.Errors) > 0 {
					h.Error = strings.Join(st.Errors, "; ")
				}
			}
			s.Etcd[i] = h
		})
	}
	wg.Wait()
	return s
}

func (rs roles) databaseStatus() *DatabaseStatus {
	if rs.db == nil && rs.galera == nil && rs.router == nil {
		return nil
	}
	st := &DatabaseStatus{Members: map[string]keeper.MemberState{}}
	if g := rs.galera.status(); g != nil {
		st.Galera, st.Primary, st.Epoch = g, g.Writer, g.Epoch
	}
	if rs.db != nil {
		if k := rs.db.keeper.Load(); k != nil {
			o := k.Owner().Status()
			st.Primary, st.Epoch, st.Members, st.Sync = o.Holder, o.Epoch, k.Members(), k.Sync()
			st.Paused = k.Paused()
		}
	}
	st.Backup = rs.backup.status()
	if rs.router != nil {
		rt := rs.router.Routes()
		st.Routes, st.Router = &rt, rs.router.statuses()
	}
	return st
}
