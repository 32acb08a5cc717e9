package pg

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultHealthTimeout bounds the queries of one health check: a postgres
// that does not answer within it is reported down (503), so a hung server
// never hangs the load balancer's check.
const DefaultHealthTimeout = 2 * time.Second

// NodeState is what the health endpoints need to know of the cluster: the
// keeper provides it.
type NodeState interface {
	// Leader reports whether this node holds the cluster's leadership (the
	// database's ownership record). A writable postgres without it is
	// never reported as the primary.
	Leader() bool
}

// PrimaryLSNer is an optional interface of a NodeState: PrimaryLSN returns
// the leader's last known WAL position (as published in etcd) and whether
// it is known. The replica endpoints measure lag against it when it is
// ahead of what the replica's WAL receiver saw.
type PrimaryLSNer interface {
	PrimaryLSN() (LSN, bool)
}

// Tagger is an optional interface of a NodeState: Tags returns the node's
// tags, which /replica?tag_<key>=<value> filters on, as in Patroni. A true
// "noloadbalance" tag takes the node out of /replica and /read-only.
type Tagger interface {
	Tags() map[string]string
}

// HealthHandler answers Patroni's health-check endpoints for one node, so
// that a load balancer configured for Patroni (HAProxy's
// `option httpchk GET /primary`) can route to haven's PostgreSQL. See
// docs/pg.md, section "Health endpoints".
type HealthHandler struct {
	srv     *Server
	sup     *Supervisor
	node    NodeState
	timeout time.Duration
}

// NewHealthHandler returns the health endpoints of srv. sup may be nil;
// when set, postgres is running only in the supervisor's state running.
// node must not be nil. timeout bounds the queries of one check; zero means
// DefaultHealthTimeout.
func NewHealthHandler(srv *Server, sup *Supervisor, node NodeState, timeout time.Duration) *HealthHandler {
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	return &HealthHandler{srv: srv, sup: sup, node: node, timeout: timeout}
}

// HealthStatus is the JSON body of the health endpoints: a subset of
// Patroni's, with the same names and meanings.
type HealthStatus struct {
	// State is "running" when postgres answers; otherwise the supervisor's
	// state ("stopped", "starting", "restarting", "failed"), or "unknown"
	// when postgres did not answer in time.
	State string `json:"state"`
	// PostmasterStartTime is pg_postmaster_start_time().
	PostmasterStartTime string `json:"postmaster_start_time,omitempty"`
	// Role is "primary" or "replica" (from pg_is_in_recovery()); empty
	// when postgres does not answer.
	Role string `json:"role,omitempty"`
	// ServerVersion is server_version_num, e.g. 150004.
	ServerVersion int `json:"server_version,omitempty"`
	// Timeline is the timeline, as Server.Position reports it.
	Timeline uint32 `json:"timeline,omitempty"`
	// XLog holds the WAL positions, as byte offsets.
	XLog *HealthXLog `json:"xlog,omitempty"`
	// ReplicationState is, on a replica, "streaming" while its WAL receiver
	// streams and "in archive recovery" otherwise.
	ReplicationState string `json:"replication_state,omitempty"`
	// Replication lists, on a primary, the replicas streaming from it.
	Replication []HealthStandby `json:"replication,omitempty"`
	// Leader is haven's own field: whether the node holds the cluster's
	// leadership.
	Leader bool `json:"leader"`
}

// HealthXLog is the WAL position of a node: Location on a primary,
// ReceivedLocation, ReplayedLocation and Paused on a replica.
type HealthXLog struct {
	Location         *uint64 `json:"location,omitempty"`
	ReceivedLocation *uint64 `json:"received_location,omitempty"`
	ReplayedLocation *uint64 `json:"replayed_location,omitempty"`
	Paused           *bool   `json:"paused,omitempty"`
}

// HealthStandby is one row of pg_stat_replication, as Patroni shows it.
type HealthStandby struct {
	ApplicationName string `json:"application_name"`
	ClientAddr      string `json:"client_addr,omitempty"`
	State           string `json:"state"`
	SyncState       string `json:"sync_state"`
	SyncPriority    int    `json:"sync_priority"`
}

// probe is what one check learnt of the node.
type probe struct {
	status    HealthStatus
	running   bool
	replica   bool
	replayed  LSN
	latestEnd LSN // the primary's position as the WAL receiver last heard it
}

// healthExtraSQL reads what Position does not: the version, the start time,
// the WAL receiver and whether replay is paused.
const healthExtraSQL = `
SELECT current_setting('server_version_num')::int, pg_postmaster_start_time()::text,
  COALESCE((SELECT status FROM pg_stat_wal_receiver), ''),
  COALESCE((SELECT latest_end_lsn::text FROM pg_stat_wal_receiver), ''),
  CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END`

// probe asks postgres, within the handler's timeout.
func (h *HealthHandler) probe(ctx context.Context) probe {
	var p probe
	p.status.Leader = h.node.Leader()
	if h.sup != nil {
		if st := h.sup.Status().State; st != StateRunning {
			p.status.State = st.String()
			return p
		}
	}
	if h.srv.PID() == 0 {
		p.status.State = StateStopped.String()
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	p.status.State = "unknown"
	pos, err := h.srv.Position(ctx)
	if err != nil {
		return p
	}
	var (
		receiver, latestEnd string
		paused              bool
	)
	err = h.srv.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, healthExtraSQL).Scan(&p.status.ServerVersion, &p.status.PostmasterStartTime,
			&receiver, &latestEnd, &paused)
	})
	if err != nil || parseOptLSN(latestEnd, &p.latestEnd) != nil {
		return p
	}
	p.running = true
	p.status.State = "running"
	p.status.Timeline = pos.Timeline
	if !pos.InRecovery {
		p.status.Role = "primary"
		loc := uint64(pos.Current)
		p.status.XLog = &HealthXLog{Location: &loc}
		if sts, err := h.srv.Replication(ctx); err == nil {
			for _, st := range sts {
				p.status.Replication = append(p.status.Replication, HealthStandby{
					ApplicationName: st.Name, ClientAddr: st.ClientAddr, State: st.State,
					SyncState: st.SyncState, SyncPriority: st.SyncPriority,
				})
			}
		}
		return p
	}
	p.replica = true
	p.replayed = pos.Replayed
	p.status.Role = "replica"
	recv, repl := uint64(pos.Received), uint64(pos.Replayed)
	p.status.XLog = &HealthXLog{ReceivedLocation: &recv, ReplayedLocation: &repl, Paused: &paused}
	p.status.ReplicationState = "in archive recovery"
	if receiver == "streaming" {
		p.status.ReplicationState = "streaming"
	}
	return p
}

// ServeHTTP answers GET, HEAD and OPTIONS on the health endpoints: 200 when
// the node is what the path asks for, 503 when it is not, 404 for an
// unknown path, 400 for a lag that does not parse. GET has the JSON
// HealthStatus as its body, whatever the code; HEAD and OPTIONS none.
func (h *HealthHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var check func(p probe) bool
	q := r.URL.Query()
	switch r.URL.Path {
	case "/", "/primary", "/master", "/leader", "/read-write":
		check = h.isPrimary
	case "/replica", "/read-only":
		maxLag := uint64(math.MaxUint64)
		if v := q.Get("lag"); v != "" {
			var err error
			if maxLag, err = ParseLag(v); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		replica := func(p probe) bool { return h.isReplica(p, maxLag, q) }
		check = replica
		if r.URL.Path == "/read-only" {
			check = func(p probe) bool { return h.isPrimary(p) || replica(p) }
		}
	case "/health":
		check = func(p probe) bool { return p.running }
	default:
		http.NotFound(w, r)
		return
	}
	p := h.probe(r.Context())
	code := http.StatusServiceUnavailable
	if check(p) {
		code = http.StatusOK
	}
	if r.Method != http.MethodGet {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(p.status)
}

// isPrimary: postgres runs, is not in recovery, and the node leads.
func (h *HealthHandler) isPrimary(p probe) bool {
	return p.running && !p.replica && p.status.Leader
}

// isReplica applies Patroni's replica conditions: a running replica, no
// noloadbalance tag, the asked replication_state and tags, and no more
// than maxLag bytes of replay behind the primary's last known position.
func (h *HealthHandler) isReplica(p probe, maxLag uint64, q map[string][]string) bool {
	if !p.running || !p.replica {
		return false
	}
	var tags map[string]string
	if t, ok := h.node.(Tagger); ok {
		tags = t.Tags()
	}
	if v, _ := strconv.ParseBool(tags["noloadbalance"]); v {
		return false
	}
	for k, vs := range q {
		switch {
		case k == "replication_state":
			if len(vs) > 0 && vs[0] != p.status.ReplicationState {
				return false
			}
		case strings.HasPrefix(k, "tag_"):
			if v, ok := tags[strings.TrimPrefix(k, "tag_")]; !ok || len(vs) == 0 || v != vs[0] {
				return false
			}
		}
	}
	leader := p.latestEnd
	if pl, ok := h.node.(PrimaryLSNer); ok {
		if l, known := pl.PrimaryLSN(); known && l > leader {
			leader = l
		}
	}
	return leader <= p.replayed || uint64(leader-p.replayed) <= maxLag
}

// lagUnits are the units ParseLag accepts, as PostgreSQL and Patroni spell
// them.
var lagUnits = map[string]uint64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}

// ParseLag parses the lag of /replica?lag=: a number of bytes, optionally
// followed by a unit B, kB, MB, GB or TB (powers of 1024, case as in
// PostgreSQL): "1048576", "1024kB", "16MB".
func ParseLag(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("pg: lag %q: want bytes, optionally with a unit B, kB, MB, GB or TB, as in 16MB", s)
	}
	n, err := strconv.ParseUint(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pg: lag %q: %w", s, err)
	}
	mult := uint64(1)
	if unit := strings.TrimSpace(t[i:]); unit != "" {
		var ok bool
		if mult, ok = lagUnits[unit]; !ok {
			return 0, fmt.Errorf("pg: lag %q: unit %q is not one of B, kB, MB, GB, TB", s, unit)
		}
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("pg: lag %q: too large", s)
	}
	return n * mult, nil
}
