package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// dbName is the database's name in etcd: haven.yaml has one database.
const dbName = "main"

// dbRole is this node's part in the database cluster: its postgres and
// keeper.
type dbRole struct {
	srv    *pg.Server
	fence  *pg.WriteFence                // nil when database.write_fence is off
	keeper atomic.Pointer[keeper.Keeper] // set once connected to etcd
	done   sync.WaitGroup
}

// prepareDatabase checks and builds this node's postgres when haven.yaml
// makes it a database node. It starts nothing: the keeper starts once etcd
// answers. A missing PostgreSQL or an unreadable password fails the start.
func (c *coordination) prepareDatabase(ctx context.Context) error {
	db := c.cfg.Database
	if db == nil || !slices.Contains(db.Nodes, c.a.opt.Node) {
		return nil
	}
	node, _ := c.cfg.Node(c.a.opt.Node)
	password, err := c.replicationPassword()
	if err != nil {
		return err
	}
	var hba []string
	for _, n := range db.Nodes {
		peer, _ := c.cfg.Node(n)
		addr, err := netip.ParseAddr(peer.Address)
		if err != nil {
			return fmt.Errorf("database node %s: address %q: %w", n, peer.Address, err)
		}
		hba = append(hba, pg.ReplicationHBA(db.Replication.User, netip.PrefixFrom(addr, addr.BitLen()).String())...)
	}
	hba = append(hba, db.HBA...)
	srv, err := pg.New(ctx, pg.Config{
		Bindir:          db.Bindir,
		DataDir:         db.NodeDataDir(c.a.opt.Node),
		ListenAddresses: []string{node.Address},
		Name:            c.a.opt.Node,
		Port:            db.Port,
		User:            c.runAsUser(),
		Settings:        db.Settings,
		HBA:             hba,
		Logger:          c.a.log,
	})
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	c.db = &dbRole{srv: srv}
	c.dbPassword = password
	switch {
	case !db.FenceWrites():
		c.a.log.Warn("database.write_fence is off: a primary whose agent freezes keeps taking connections past its lease")
	case os.Geteuid() != 0:
		c.a.log.Warn("not root: the database runs without its write fence (nftables needs root)")
	default:
		c.db.fence = pg.NewWriteFence(0, db.Port)
	}
	return nil
}

// runAsUser is the user postgres runs as: database.user as root, the
// agent's own user otherwise (pg.Config's default).
func (c *coordination) runAsUser() string {
	if os.Geteuid() == 0 {
		return c.cfg.Database.User
	}
	return ""
}

// replicationPassword reads database.replication.password_file; a single
// node needs none.
func (c *coordination) replicationPassword() (string, error) {
	f := c.cfg.Database.Replication.PasswordFile
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

// startKeeper runs the keeper until ctx ends (the coordination stops): it
// hands the primary over and stops postgres on the way out.
func (c *coordination) startKeeper(ctx context.Context) {
	db := c.cfg.Database
	tag := db.Tags[c.a.opt.Node]
	priority := 100
	if tag.Priority != nil {
		priority = *tag.Priority
	}
	node, _ := c.cfg.Node(c.a.opt.Node)
	k, err := keeper.New(keeper.Config{
		Server:           c.db.srv,
		Client:           c.ownerClient,
		Alternates:       c.alternates,
		Cluster:          c.cfg.Cluster,
		Name:             dbName,
		Node:             c.a.opt.Node,
		Nodes:            db.Nodes,
		Host:             node.Address,
		Lease:            db.Lease.D(),
		Mode:             keeper.Mode(db.Replication.Mode),
		SyncStandbys:     db.Replication.SyncStandbys,
		MaxLagOnFailover: uint64(db.Replication.MaxLagOnFailover),
		Replication:      pg.Upstream{User: db.Replication.User, Password: c.dbPassword},
		Priority:         priority,
		NoFailover:       tag.NoFailover,
		Fence:            c.db.fence,
		Logger:           c.a.log,
		Registerer:       c.a.reg,
	})
	if err != nil {
		c.a.log.Error("database keeper not started", "err", err)
		return
	}
	c.db.keeper.Store(k)
	c.db.done.Go(func() {
		if err := k.Run(ctx); err != nil {
			c.a.log.Error("database keeper stopped", "err", err)
		}
	})
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
}

func (c *coordination) databaseStatus() *DatabaseStatus {
	if c.db == nil && c.router == nil {
		return nil
	}
	st := &DatabaseStatus{Members: map[string]keeper.MemberState{}}
	if c.db != nil {
		if k := c.db.keeper.Load(); k != nil {
			o := k.Owner().Status()
			st.Primary, st.Epoch, st.Members, st.Sync = o.Holder, o.Epoch, k.Members(), k.Sync()
		}
	}
	if c.router != nil {
		rt := c.router.Routes()
		st.Routes, st.Router = &rt, c.router.statuses()
	}
	return st
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
		co := a.coordination()
		if co == nil || co.db == nil {
			if co != nil {
				web.WriteError(w, http.StatusNotFound, errors.New("this node is not a database node"))
			} else {
				web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
			}
			return
		}
		k := co.db.keeper.Load()
		if k == nil {
			web.WriteError(w, http.StatusServiceUnavailable, errors.New("the database keeper is not running yet (waiting for etcd)"))
			return
		}
		once.Do(func() { h = k.HealthHandler() })
		h.ServeHTTP(w, r)
	}
	for _, p := range patroniPaths {
		a.admin.HandleRead(p, serve)
	}
}

// switchover serves POST /api/v1/database/switchover?to=NODE.
func (c *coordination) switchover(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Database == nil {
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no database section"))
		return
	}
	to := r.URL.Query().Get("to")
	if to != "" && !slices.Contains(c.cfg.Database.Nodes, to) {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("%q is not a database node (database.nodes: %v)", to, c.cfg.Database.Nodes))
		return
	}
	cli := c.etcd()
	if cli == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*c.cfg.Database.Lease.D()+5*time.Second)
	defer cancel()
	var k *keeper.Keeper
	if c.db != nil {
		k = c.db.keeper.Load()
	}
	var old string
	if k != nil {
		old = k.Owner().Status().Holder
	}
	if err := keeper.Switchover(ctx, cli, c.cfg.Cluster, dbName, to); err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
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
		web.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("switchover requested; no new primary yet (holder %q): %w", holder, err))
		return
	}
	web.WriteJSON(w, http.StatusOK, map[string]string{"primary": holder})
}
