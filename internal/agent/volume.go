package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/volume"
	"github.com/haven-ha/haven/internal/web"
)

// volumeRole is this node's part in the volumes of haven.yaml: glusterd
// and a Storage per volume on a storage node, a Mount per volume on an
// application node. A change to volumes needs a restart.
type volumeRole struct {
	a        *Agent
	glusterd *volume.Glusterd
	storages map[string]*volume.Storage
	mounts   map[string]*volume.Mount
	copiers  map[string]*volume.Copier
	bricks   map[string][]volume.Brick
}

// newVolumes builds the node's volume roles, or returns nil when it has
// none. It starts nothing; a missing GlusterFS fails it.
func newVolumes(a *Agent, cfg *config.Config) (*volumeRole, error) {
	r := &volumeRole{a: a, storages: map[string]*volume.Storage{}, mounts: map[string]*volume.Mount{},
		copiers: map[string]*volume.Copier{}, bricks: map[string][]volume.Brick{}}
	node := a.opt.Node
	for _, name := range slices.Sorted(maps.Keys(cfg.Volumes)) {
		v := cfg.Volumes[name]
		bricks, addrs := volumeBricks(cfg, v)
		r.bricks[name] = bricks
		if slices.Contains(v.Servers, node) {
			if r.glusterd == nil {
				g, err := volume.NewGlusterd(config.NodePath(v.GlusterdDir, node), a.log)
				if err != nil {
					return nil, err
				}
				r.glusterd = g
			}
			allow := slices.Clone(addrs)
			if v.Mount != nil {
				for _, n := range v.Mount.Nodes {
					if p, ok := cfg.Node(n); ok {
						allow = append(allow, p.Address)
					}
				}
			}
			s, err := volume.NewStorage(volume.StorageConfig{
				Volume: name, Node: node, Bricks: bricks, PingTimeout: v.PingTimeout.D(),
				Allow: allow, Settings: v.Settings, CLI: r.glusterd.CLI(), RunDir: r.glusterd.RunDir(), Logger: a.log,
				// Set when etcd answers (run).
				Lock: func(context.Context) (func(), error) { return nil, errors.New("waiting for etcd") },
			})
			if err != nil {
				return nil, err
			}
			r.storages[name] = s
		}
		if v.Mount != nil && slices.Contains(v.Mount.Nodes, node) {
			logFile := ""
			if r.glusterd != nil {
				logFile = filepath.Join(r.glusterd.LogDir(), "mount-"+name+".log")
			}
			m, err := volume.NewMount(volume.MountConfig{Volume: name, Node: node, Path: v.Mount.Path, Servers: addrs, LogFile: logFile, Logger: a.log})
			if err != nil {
				return nil, err
			}
			r.mounts[name] = m
			if v.Copy != nil {
				store, err := repo.Open(v.Copy.Repository)
				if err != nil {
					return nil, fmt.Errorf("volume %s: copy: %w", name, err)
				}
				c, err := volume.NewCopier(volume.CopyConfig{Volume: name, Dir: v.Mount.Path, Store: store,
					Prefix: volume.CopyPrefix(cfg.Cluster, name), Every: v.Copy.Every.D(), Mounted: m.Mounted, Logger: a.log})
				if err != nil {
					return nil, err
				}
				r.copiers[name] = c
			}
		}
	}
	if r.glusterd == nil && len(r.mounts) == 0 {
		return nil, nil
	}
	return r, nil
}

// volumeBricks are the volume's bricks in replica order, the arbiter
// last, and the servers' addresses in the order of servers.
func volumeBricks(cfg *config.Config, v *config.Volume) ([]volume.Brick, []string) {
	var bricks []volume.Brick
	var arbiter *volume.Brick
	var addrs []string
	for _, n := range v.Servers {
		p, ok := cfg.Node(n)
		if !ok {
			continue
		}
		addrs = append(addrs, p.Address)
		b := volume.Brick{Node: n, Address: p.Address, Path: config.NodePath(v.Brick, n)}
		if n == v.Arbiter {
			b.Arbiter = true
			arbiter = &b
			continue
		}
		bricks = append(bricks, b)
	}
	if arbiter != nil {
		bricks = append(bricks, *arbiter)
	}
	return bricks, addrs
}

// start runs glusterd and the mounts, which need no etcd; the storages
// start once etcd answers. The returned stop ends them: glusterd stops
// with the node's bricks, mounts stay (see volume.Mount.Run).
func (r *volumeRole) start(c *coordination) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n := 0
	run := func(what string, f func(context.Context) error) {
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			if err := f(ctx); err != nil {
				r.a.log.Error(what+" stopped", "err", err)
			}
		}()
	}
	if r.glusterd != nil {
		run("glusterd", r.glusterd.Run)
	}
	for _, name := range slices.Sorted(maps.Keys(r.mounts)) {
		run("mount of volume "+name, r.mounts[name].Run)
	}
	if len(r.storages) > 0 {
		c.onConnected(r.runStorages)
	}
	if len(r.copiers) > 0 {
		c.onConnected(r.runCopiers)
	}
	reg := r.a.reg
	if err := reg.Register(volume.NewCollector(mapValues(r.storages), mapValues(r.mounts), mapValues(r.copiers))); err != nil {
		r.a.log.Warn("volume metrics not registered", "err", err)
	}
	return func() {
		cancel()
		for range n {
			<-done
		}
	}
}

// runStorages keeps each volume of this storage node until ctx ends (etcd
// lost, or the agent stops).
func (r *volumeRole) runStorages(ctx context.Context, cl *etcdClients) {
	cluster := r.a.config().Cluster
	eachVolume(r.storages, func(name string, s *volume.Storage) {
		s.SetLock(func(ctx context.Context) (func(), error) {
			return etcdLock(ctx, cl, "/haven/"+cluster+"/volumes/"+name+"/create")
		})
		if err := s.Run(ctx); err != nil {
			r.a.log.Error("volume stopped", "volume", name, "err", err)
		}
	})
}

// runCopiers makes each volume's copy while this node holds its lock: one
// mount node at a time copies; when it goes (its session's lease
// expires), another takes over.
func (r *volumeRole) runCopiers(ctx context.Context, cl *etcdClients) {
	cluster := r.a.config().Cluster
	eachVolume(r.copiers, func(name string, c *volume.Copier) {
		key := "/haven/" + cluster + "/volumes/" + name + "/copy"
		for ctx.Err() == nil {
			if err := r.copyWhileHeld(ctx, cl, key, c); err != nil && ctx.Err() == nil {
				r.a.log.Warn("volume copy: lock lost or not taken", "volume", name, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	})
}

// eachVolume runs f for every volume of m, each in a goroutine, and
// returns when they all have.
func eachVolume[V any](m map[string]V, f func(name string, v V)) {
	var wg sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(m)) {
		wg.Go(func() { f(name, m[name]) })
	}
	wg.Wait()
}

// copyWhileHeld waits for the copy's lock, then copies until the lock's
// session ends or ctx does.
func (r *volumeRole) copyWhileHeld(ctx context.Context, cl *etcdClients, key string, c *volume.Copier) error {
	s, err := concurrency.NewSession(cl.all, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer s.Close()
	m := concurrency.NewMutex(s, key)
	if err := m.Lock(ctx); err != nil {
		return err
	}
	held, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-s.Done():
			stop()
		case <-held.Done():
		}
	}()
	c.Forget() // another node may have copied since this one last did
	c.SetCopying(true)
	defer c.SetCopying(false)
	r.a.log.Info("volume copy: this node copies", "event", "volume", "key", key)
	err = c.Run(held)
	uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = m.Unlock(uctx)
	return err
}

// etcdLock takes an etcd mutex under key; the unlock releases it and its
// session. A holder that dies loses it with its session's lease.
func etcdLock(ctx context.Context, cl *etcdClients, key string) (func(), error) {
	s, err := concurrency.NewSession(cl.all, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, key)
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.Lock(lctx); err != nil {
		s.Close()
		return nil, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Unlock(uctx)
		s.Close()
	}, nil
}

// VolumeStatus is one volume's part of GET /api/v1/volumes: the storage
// side on a storage node, the mount on an application node.
type VolumeStatus struct {
	Name    string              `json:"name"`
	Storage *volume.Status      `json:"storage,omitempty"`
	Mount   *volume.MountStatus `json:"mount,omitempty"`
	Copy    *volume.CopyStatus  `json:"copy,omitempty"`
	Bricks  []volume.Brick      `json:"bricks"`
}

func (r *volumeRole) statuses() []VolumeStatus {
	if r == nil {
		return []VolumeStatus{}
	}
	out := []VolumeStatus{}
	for _, name := range slices.Sorted(maps.Keys(r.bricks)) {
		st := VolumeStatus{Name: name, Bricks: r.bricks[name]}
		if s := r.storages[name]; s != nil {
			v := s.Status()
			st.Storage = &v
		}
		if m := r.mounts[name]; m != nil {
			v := m.Status()
			st.Mount = &v
		}
		if c := r.copiers[name]; c != nil {
			v := c.Status()
			st.Copy = &v
		}
		if st.Storage != nil || st.Mount != nil {
			out = append(out, st)
		}
	}
	return out
}

// mount is this node's mount of volume name, or nil (also when the node
// runs no volume role).
func (r *volumeRole) mount(name string) *volume.Mount {
	if r == nil {
		return nil
	}
	return r.mounts[name]
}

// storage is this node's server of volume name, or nil.
func (r *volumeRole) storage(name string) *volume.Storage {
	if r == nil {
		return nil
	}
	return r.storages[name]
}

// volumeRoutes serves the volumes' admin API.
func (a *Agent) volumeRoutes() {
	a.admin.HandleRead("GET /api/v1/volumes", func(w http.ResponseWriter, req *http.Request) {
		web.WriteJSON(w, http.StatusOK, a.current().volumes.statuses())
	})
	// The balancer's volume check: no token, as /readyz.
	a.admin.HandleProbe("GET /api/v1/volumes/{volume}/mount", a.volumeMount)
	a.admin.HandleMutating("POST /api/v1/volumes/{volume}/heal", a.volumeHeal)
}

// volumeMount answers whether this node's mount of a volume is usable:
// 200, or 503 with the reason.
func (a *Agent) volumeMount(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("volume")
	m := a.current().volumes.mount(name)
	if m == nil {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s does not mount volume %q", a.opt.Node, name))
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	if err := m.Probe(ctx); err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("mount %s on %s: %w", m.Status().Path, a.opt.Node, err))
		return
	}
	web.WriteJSON(w, http.StatusOK, m.Status())
}

// volumeHeal starts a heal of a volume from this storage node
// (?full=true: every file).
func (a *Agent) volumeHeal(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("volume")
	s := a.current().volumes.storage(name)
	if s == nil {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s is not a server of volume %q", a.opt.Node, name))
		return
	}
	full := req.URL.Query().Get("full") == "true"
	if err := s.Heal(req.Context(), full); err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	a.log.Info("heal started by an operator", "event", "volume", "volume", name, "full", full, "operator", req.Header.Get("X-Haven-Operator"))
	web.WriteJSON(w, http.StatusOK, map[string]any{"volume": name, "heal": "started", "full": full})
}

func mapValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
}
