package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// dbName is the database's name in etcd: haven.yaml has one database.
const dbName = "main"

// dbRole is this node's part in the database cluster: its postgres and,
// once etcd answers, its keeper.
type dbRole struct {
	a        *Agent
	cfg      *config.Config // as the agent started: a change needs a restart
	srv      *pg.Server
	password string                        // the replication user's
	fence    *pg.WriteFence                // nil when database.write_fence is off
	keeper   atomic.Pointer[keeper.Keeper] // set once connected to etcd
	// global is the coordination of the global scope, in a database that
	// spans two regions (nil otherwise).
	global *coordination
}

// newDatabase checks and builds this node's postgres when haven.yaml makes
// it a database node, and returns nil otherwise. It starts nothing: the
// keeper starts once etcd answers (keep). A missing PostgreSQL, an
// unreadable password or a directory the postgres user cannot reach fails
// it.
func newDatabase(ctx context.Context, a *Agent, cfg *config.Config) (*dbRole, error) {
	db := cfg.Database
	if !cfg.IsDatabaseNode(a.opt.Node) {
		return nil, nil
	}
	if db.Engine == "galera" {
		return nil, nil // newGalera
	}
	password, err := replicationPassword(db)
	if err != nil {
		return nil, err
	}
	pc, err := serverConfig(cfg, a.opt.Node)
	if err != nil {
		return nil, err
	}
	if err := pg.CheckDirectories(pc); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pc.Logger = a.log
	srv, err := pg.New(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	r := &dbRole{a: a, cfg: cfg, srv: srv, password: password}
	switch {
	case !db.FenceWrites():
		a.log.Warn("database.write_fence is off: a primary whose agent freezes keeps taking connections past its lease")
	case os.Geteuid() != 0:
		a.log.Warn("not root: the database runs without its write fence (nftables needs root)")
	default:
		r.fence = pg.NewWriteFence(0, db.Port)
	}
	return r, nil
}

// serverConfig is database node node's postgres, as haven.yaml describes
// it.
func serverConfig(cfg *config.Config, node string) (pg.Config, error) {
	db := cfg.Database
	self, _ := cfg.Node(node)
	var hba []string
	peers := db.Nodes
	if db.DR != nil {
		// Either region's nodes replicate from, and rewind against, the
		// other's.
		peers = slices.Concat(db.Nodes, db.DR.Nodes)
	}
	for _, n := range peers {
		peer, _ := cfg.Node(n)
		addr, err := netip.ParseAddr(peer.Address)
		if err != nil {
			return pg.Config{}, fmt.Errorf("database node %s: address %q: %w", n, peer.Address, err)
		}
		hba = append(hba, pg.ReplicationHBA(db.Replication.User, netip.PrefixFrom(addr, addr.BitLen()).String())...)
	}
	hba = append(hba, db.HBA...)
	return pg.Config{
		Bindir:          db.Bindir,
		DataDir:         db.NodeDataDir(node),
		ListenAddresses: []string{self.Address},
		Name:            node,
		Port:            db.Port,
		User:            runAsUser(db),
		Settings:        databaseSettings(db),
		HBA:             hba,
	}, nil
}

// drWALKeep is the WAL a node of a database across two regions keeps
// beyond its checkpoints, unless database.settings says otherwise: a
// region that comes back after the other took over rewinds onto the new
// primary's history, and pg_rewind reads the node's WAL back to the
// checkpoint before the fork, which a checkpoint after it (the one the
// node writes when it stops) would otherwise recycle.
const drWALKeep = "256MB"

// databaseSettings are database.settings, with wal_keep_size for a
// database across two regions.
func databaseSettings(db *config.Database) map[string]string {
	if db.DR == nil {
		return db.Settings
	}
	if _, ok := db.Settings["wal_keep_size"]; ok {
		return db.Settings
	}
	s := maps.Clone(db.Settings)
	if s == nil {
		s = map[string]string{}
	}
	s["wal_keep_size"] = drWALKeep
	return s
}

// Preflight checks what would keep node's roles from starting on this
// machine, which the file alone does not tell: for a database node, the
// replication password and that the user postgres runs as can reach its
// directories (an existing directory above them that it cannot search is
// named, with the chmod that fixes it). `haven check -n NODE` runs it; the
// agent checks the same before it starts postgres.
func Preflight(cfg *config.Config, node string) error {
	if _, ok := cfg.Node(node); !ok {
		return fmt.Errorf("node %q is not in the configuration (nodes: %v)", node, cfg.NodeNames())
	}
	var errs []error
	if db := cfg.Database; cfg.IsDatabaseNode(node) {
		if _, err := replicationPassword(db); err != nil {
			errs = append(errs, err)
		}
		pc, err := serverConfig(cfg, node)
		if err == nil {
			err = pg.CheckDirectories(pc)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("database: %w", err))
		}
	}
	return errors.Join(errs...)
}

// runAsUser is the user postgres runs as: database.user as root, the
// agent's own user otherwise (pg.Config's default).
func runAsUser(db *config.Database) string {
	if os.Geteuid() == 0 {
		return db.User
	}
	return ""
}

// replicationPassword reads database.replication.password_file; a single
// node needs none.
func replicationPassword(db *config.Database) (string, error) {
	f := db.Replication.PasswordFile
	if f == "" {
		return "", nil
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return "", fmt.Errorf("database.replication.password_file: %w", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("database.replication.password_file: %s is empty", f)
	}
	return p, nil
}

// keep runs the keeper until ctx ends (the coordination stops): it hands
// the primary over and stops postgres on the way out.
func (r *dbRole) keep(ctx context.Context, cl *etcdClients) {
	a, db := r.a, r.cfg.Database
	tag := db.Tags[a.opt.Node]
	priority := 100
	if tag.Priority != nil {
		priority = *tag.Priority
	}
	node, _ := r.cfg.Node(a.opt.Node)
	region, err := r.regionConfig(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("database keeper not started", "err", err)
		}
		return
	}
	k, err := keeper.New(keeper.Config{
		Server:           r.srv,
		Client:           cl.own,
		Alternates:       cl.others,
		Cluster:          r.cfg.Cluster,
		Name:             dbName,
		Node:             a.opt.Node,
		Nodes:            db.ClusterNodes(a.opt.Node),
		Host:             node.Address,
		Lease:            db.Lease.D(),
		Mode:             keeper.Mode(db.Replication.Mode),
		SyncStandbys:     db.Replication.SyncStandbys,
		MaxLagOnFailover: uint64(db.Replication.MaxLagOnFailover),
		Replication:      pg.Upstream{User: db.Replication.User, Password: r.password},
		SyncArchive:      syncArchive(r.cfg),
		Priority:         priority,
		NoFailover:       tag.NoFailover,
		RestoreBackup:    r.restoreBackup(db.Backup),
		Fence:            r.fence,
		Region:           region,
		Logger:           a.log,
		Registerer:       a.reg,
	})
	if err != nil {
		a.log.Error("database keeper not started", "err", err)
		return
	}
	r.keeper.Store(k)
	r.serveWAL(ctx, db.Backup)
	if err := k.Run(ctx); err != nil {
		a.log.Error("database keeper stopped", "err", err)
	}
}

// regionConfig is the keeper's part in a database that spans two regions
// (database.dr), once the global scope answers; nil for a database of one
// region.
func (r *dbRole) regionConfig(ctx context.Context) (*keeper.RegionConfig, error) {
	db := r.cfg.Database
	if db.DR == nil {
		return nil, nil
	}
	if r.global == nil {
		return nil, errors.New("database.dr needs coordination.global: the scope that holds the active-region record")
	}
	r.a.log.Info("waiting for the global scope's etcd")
	cl, err := r.global.waitClients(ctx)
	if err != nil {
		return nil, err
	}
	self, _ := r.cfg.Node(r.a.opt.Node)
	rc := &keeper.RegionConfig{
		Name:       self.Region,
		Regions:    r.cfg.DatabaseRegions(),
		Client:     cl.own,
		Alternates: cl.others,
		Lease:      db.DR.Lease.D(),
		Home:       slices.Contains(db.Nodes, r.a.opt.Node),
		Automatic:  db.DR.Failover == "automatic",
		MaxLag:     db.DR.MaxLag.D(),
		Sync:       db.DR.Mode == "sync",
	}
	if db.Backup != nil {
		if rc.RestoreCommand, err = r.restoreCommand(); err != nil {
			return nil, err
		}
	}
	return rc, nil
}

// servesPrimary reports whether this node holds the database's primary
// record and its postgres runs as the primary.
func (r *dbRole) servesPrimary() bool {
	k := r.keeper.Load()
	if k == nil || !k.Owner().Status().Acting {
		return false
	}
	return k.Members()[r.a.opt.Node].Role == keeper.RolePrimary
}

// patroniPaths are the Patroni-compatible health endpoints served on the
// admin port (not "/", which Patroni also answers as /primary: here it is
// the admin API's).
var patroniPaths = []string{"/primary", "/master", "/leader", "/read-write", "/replica", "/read-only", "/health"}

// databaseRoutes mounts the health endpoints; they answer 503 until the
// keeper runs, and 404 on a node that is not a database node.
func (a *Agent) databaseRoutes() {
	var (
		once sync.Once
		h    http.Handler
	)
	serve := func(w http.ResponseWriter, r *http.Request) {
		rs := a.current()
		if rs.coord != nil && rs.galera != nil {
			rs.galera.health(w, r)
			return
		}
		if rs.coord == nil || rs.db == nil {
			if rs.coord != nil {
				web.WriteError(w, http.StatusNotFound, errors.New("this node is not a database node"))
			} else {
				web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
			}
			return
		}
		k := rs.db.keeper.Load()
		if k == nil {
			web.WriteError(w, http.StatusServiceUnavailable, errors.New("the database keeper is not running yet (waiting for etcd)"))
			return
		}
		once.Do(func() { h = k.HealthHandler() })
		h.ServeHTTP(w, r)
	}
	for _, p := range patroniPaths {
		a.admin.HandleProbe(p, serve)
	}
}

// database serves GET /api/v1/database: the database part of the status,
// from memory (what the keeper and the router last read from etcd), so
// that it answers at once whatever etcd and the other nodes do.
func (a *Agent) database(w http.ResponseWriter, r *http.Request) {
	rs := a.current()
	switch st := rs.databaseStatus(); {
	case st != nil:
		web.WriteJSON(w, http.StatusOK, st)
	case rs.coord == nil && a.config().Coordination != nil:
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
	default:
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s is neither a database node nor a router", a.opt.Node))
	}
}

// switchover serves POST /api/v1/database/switchover?to=NODE.
func (a *Agent) switchover(w http.ResponseWriter, r *http.Request) {
	rs := a.current()
	if rs.coord == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
		return
	}
	cfg := rs.coord.cfg
	if cfg.Database == nil {
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no database section"))
		return
	}
	to := r.URL.Query().Get("to")
	if to != "" && !slices.Contains(cfg.Database.Nodes, to) {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("%q is not a database node (database.nodes: %v)", to, cfg.Database.Nodes))
		return
	}
	cli := rs.coord.etcd()
	if cli == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*cfg.Database.Lease.D()+5*time.Second)
	defer cancel()
	var k *keeper.Keeper
	if rs.db != nil {
		k = rs.db.keeper.Load()
	}
	var old string
	if k != nil {
		old = k.Owner().Status().Holder
	}
	if p, err := keeper.ReadPause(ctx, cli, cfg.Cluster, dbName); err != nil || p != nil {
		// No replica may take the lead while paused: the handover would
		// wait for one in vain.
		if err == nil {
			err = fmt.Errorf("the database is %s: no replica may take the lead; haven pg resume first", p)
		}
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	if err := keeper.Switchover(ctx, cli, cfg.Cluster, dbName, to); err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	a.log.Info("switchover requested", "event", "switchover", "from", old, "to", to, "operator", r.Header.Get("X-Haven-Operator"))
	if k == nil {
		// Not a database node: nothing here sees the record change.
		web.WriteJSON(w, http.StatusAccepted, map[string]string{"requested": to})
		return
	}
	var holder string
	err := k.Owner().WaitFor(ctx, func(s coord.OwnerStatus) bool {
		holder = s.Holder
		return s.Holder != "" && s.Holder != old && (to == "" || s.Holder == to)
	})
	if err != nil {
		a.log.Warn("switchover: no new primary in time", "event", "switchover", "holder", holder, "err", err)
		web.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("switchover requested; no new primary yet (holder %q): %w", holder, err))
		return
	}
	a.log.Info("switchover done", "event", "switchover", "from", old, "to", holder)
	web.WriteJSON(w, http.StatusOK, map[string]string{"primary": holder})
}
