package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/galera"
	"github.com/haven-ha/haven/internal/web"
)

// galeraRole is this node's part in a Galera database: its mariadbd and,
// once etcd answers, the Node that supervises it.
type galeraRole struct {
	a    *Agent
	cfg  *config.Config // as the agent started: a change needs a restart
	srv  *galera.Server
	node atomic.Pointer[galera.Node] // set once connected to etcd
}

// newGalera builds this node's server when haven.yaml makes it a node of a
// Galera database, and returns nil otherwise. It starts nothing; a missing
// MariaDB or galera provider fails it.
func newGalera(a *Agent, cfg *config.Config) (*galeraRole, error) {
	db := cfg.Database
	if db == nil || db.Engine != "galera" || !cfg.IsDatabaseNode(a.opt.Node) {
		return nil, nil
	}
	gc, err := galeraServerConfig(cfg, a.opt.Node)
	if err != nil {
		return nil, err
	}
	gc.Logger = a.log
	srv, err := galera.New(gc)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if err := srv.Prepare(); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return &galeraRole{a: a, cfg: cfg, srv: srv}, nil
}

// galeraServerConfig is node's server, as haven.yaml describes it.
func galeraServerConfig(cfg *config.Config, node string) (galera.Config, error) {
	db, g := cfg.Database, cfg.Database.Galera
	self, _ := cfg.Node(node)
	var peers []string
	for _, n := range db.Nodes {
		p, ok := cfg.Node(n)
		if !ok {
			return galera.Config{}, fmt.Errorf("database node %s is not a node of regions", n)
		}
		peers = append(peers, p.Address)
	}
	return galera.Config{
		Name: node, Address: self.Address, Port: db.Port,
		GroupPort: g.GroupPort, ISTPort: g.ISTPort, SSTPort: g.SSTPort,
		Peers: peers, ClusterName: g.ClusterName, BaseDir: db.NodeDataDir(node), User: runAsUser(db),
		SSTMethod: g.SSTMethod, GCacheSize: int64(g.GCacheSize), FailureDetection: g.FailureDetection.D(),
		ProviderOptions: g.ProviderOptions, Settings: db.Settings,
	}, nil
}

// run takes part in the cluster until ctx ends (the coordination's
// connection: etcd answers).
func (r *galeraRole) run(ctx context.Context, cl *etcdClients) {
	a, db := r.a, r.cfg.Database
	g := db.Galera
	priority := 100
	if t := db.Tags[a.opt.Node]; t != nil && t.Priority != nil {
		priority = *t.Priority
	}
	self, _ := r.cfg.Node(a.opt.Node)
	groupAddrs := map[string]string{}
	for _, name := range db.Nodes {
		if p, ok := r.cfg.Node(name); ok {
			groupAddrs[name] = net.JoinHostPort(p.Address, strconv.Itoa(g.GroupPort))
		}
	}
	n, err := galera.NewNode(galera.NodeConfig{
		Client:     cl.own,
		Alternates: cl.others,
		Cluster:    r.cfg.Cluster,
		Name:       dbName,
		Node:       a.opt.Node,
		Nodes:      db.Nodes,
		Server:     r.srv,
		Host:       self.Address,
		Port:       db.Port,
		GroupAddrs: groupAddrs,
		// A running node outside a primary component for this long
		// counts as down: several failure detections, so that a view
		// being installed or a partition healing is left to Galera.
		Grace:         4 * g.FailureDetection.D(),
		CheckInterval: g.CheckInterval.D(),
		DonorServes:   g.DonorServes,
		Writer:        g.Writers == "one",
		Lease:         db.Lease.D(),
		Priority:      priority,
		Logger:        a.log,
		Registerer:    a.reg,
	})
	if err != nil {
		a.log.Error("galera node not started", "err", err)
		return
	}
	r.node.Store(n)
	if err := n.Run(ctx); err != nil {
		a.log.Error("galera node stopped", "err", err)
	}
}

// GaleraStatus is a Galera database's part of /api/v1/database.
type GaleraStatus struct {
	// Writer holds the writer record (writers: one), Epoch its epoch.
	Writer string `json:"writer"`
	Epoch  int64  `json:"epoch"`
	// Members are the states every node published, as this node sees
	// them.
	Members map[string]galera.MemberState `json:"members"`
	// Plan is this node's agent's last decision about its server.
	Plan string `json:"plan,omitempty"`
}

func (r *galeraRole) status() *GaleraStatus {
	if r == nil {
		return nil
	}
	n := r.node.Load()
	if n == nil {
		return &GaleraStatus{Plan: "waiting for etcd"}
	}
	w := n.WriterStatus()
	d := n.Decision()
	plan := d.Action.String()
	if d.Reason != "" {
		plan += ": " + d.Reason
	}
	return &GaleraStatus{Writer: w.Holder, Epoch: w.Epoch, Members: n.Members(), Plan: plan}
}

// serves reports whether this node is the database's writer and serves
// (for traffic targets that follow the database).
func (r *galeraRole) serves() bool {
	n := r.node.Load()
	return n != nil && n.Writer() && n.State().Serving
}

func (r *galeraRole) what() string { return "the database's writer record" }

func (r *galeraRole) holding() bool {
	n := r.node.Load()
	return n != nil && n.Writer()
}

func (r *galeraRole) cleanSince(endpoint string) time.Time {
	if n := r.node.Load(); n != nil {
		return n.WriterCleanSince(endpoint)
	}
	return time.Time{}
}

// health answers the Patroni-style endpoints for a Galera node: /primary
// (and /master, /leader) on the writer while it serves; /replica and
// /read-only on every serving node; /read-write on a node that takes
// writes (the writer, or every serving node with writers: all); /health
// while mariadbd answers. 503 otherwise, with the reason.
func (r *galeraRole) health(w http.ResponseWriter, req *http.Request) {
	n := r.node.Load()
	if n == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the galera node is not running yet (waiting for etcd)"))
		return
	}
	st := n.State()
	all := r.cfg.Database.Galera.Writers == "all"
	var ok bool
	why := st.Why
	switch req.URL.Path {
	case "/health":
		ok = st.Server == galera.ServerRunning
	case "/primary", "/master", "/leader":
		ok = st.Serving && n.Writer()
		if st.Serving && !ok {
			why = "serving, not the writer"
		}
	case "/read-write":
		ok = st.Serving && (all || n.Writer())
		if st.Serving && !ok {
			why = "serving, not the writer"
		}
	default: // /replica, /read-only
		ok = st.Serving
	}
	body := map[string]any{"node": r.a.opt.Node, "server": st.Server, "serving": st.Serving, "writer": n.Writer(),
		"cluster_status": st.Status.ClusterStatus, "local_state": st.Status.LocalStateComment, "cluster_size": st.Status.ClusterSize}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
		body["why"] = why
	}
	web.WriteJSON(w, code, body)
}

// galeraBootstrap serves POST /api/v1/database/bootstrap: an operator's
// bootstrap of the Galera cluster from this node, without every node's
// position (haven db bootstrap NODE sends it to NODE).
func (a *Agent) galeraBootstrap(w http.ResponseWriter, req *http.Request) {
	rs := a.current()
	if rs.galera == nil {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s is not a node of a Galera database", a.opt.Node))
		return
	}
	n := rs.galera.node.Load()
	if n == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the galera node is not running yet (waiting for etcd)"))
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 15*time.Second)
	defer cancel()
	if err := n.ForceBootstrap(ctx); err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	a.log.Warn("bootstrap forced by an operator: the cluster starts from this node", "event", "database", "operator", req.Header.Get("X-Haven-Operator"))
	web.WriteJSON(w, http.StatusOK, map[string]string{"node": a.opt.Node, "bootstrap": "claimed: the node starts the cluster from its data"})
}
