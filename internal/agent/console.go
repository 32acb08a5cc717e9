package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/adminclient"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/console"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/events"
	"github.com/haven-ha/haven/internal/gtm"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/web"
)

// The dashboard (internal/console renders it): this agent asks every
// node's agent for its status, once a second while at least one page is
// open, whatever the number of pages, and sends each page the view's HTML
// when it changes and each event as it happens.

const (
	// consoleEvery is how often the view is built while a page is open.
	consoleEvery = time.Second
	// consolePeerWait bounds a peer's answer: a silent peer is shown as
	// such and does not hold the others back.
	consolePeerWait = 800 * time.Millisecond
	// consoleAfterEvent is how soon after an event the view is built
	// again, so that a promotion's page shows the new primary with it.
	consoleAfterEvent = 150 * time.Millisecond
)

// consoleRoutes mounts the dashboard: the page at /, the view as JSON,
// the stream, and the forwarding of an operator's action to the node that
// carries it out.
func (a *Agent) consoleRoutes() {
	a.console = &consoleHub{a: a, subs: map[chan []byte]struct{}{}, rates: map[string]rateSample{}}
	a.admin.HandleProbe("GET /{$}", a.consolePage)
	a.admin.HandleRead("GET /api/v1/console", func(w http.ResponseWriter, r *http.Request) {
		// The open pages' view when there is one: a read does not make
		// this agent ask every peer again.
		web.WriteJSON(w, http.StatusOK, a.console.current(r.Context()))
	})
	a.admin.HandleRead("GET /api/v1/console/stream", a.consoleStream)
	a.admin.HandleMutating("POST /api/v1/nodes/{node}/{path...}", a.forward)
}

// consolePage serves the page, or, when reads need a token this browser
// has not given, a form that asks for it.
func (a *Agent) consolePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !a.admin.MayRead(r) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, loginPage)
		return
	}
	v := a.console.current(r.Context())
	note := "this node's view of the cluster's events"
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var b bytes.Buffer
	if err := console.Page(&b, v, a.timeline.Since("", 100), note); err != nil {
		web.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	w.Write(b.Bytes())
}

// loginPage asks for the read token and keeps it in a cookie for this
// site (web.TokenCookie), which the page and its stream then send.
const loginPage = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>haven</title></head>
<body style="font:14px system-ui,sans-serif;margin:2em">
<h1 style="font-size:1.2em">haven</h1>
<p>This agent's admin API needs a token to read (admin.authenticate_reads): the one in admin.read_token_file (the page keeps it in a cookie; the write token never goes there, and an action asks for it).</p>
<form id="f"><input id="t" type="password" autocomplete="current-password" aria-label="token" autofocus> <button>open</button></form>
<script>document.getElementById("f").onsubmit=(e)=>{e.preventDefault();
document.cookie="` + web.TokenCookie + `="+encodeURIComponent(document.getElementById("t").value.trim())+"; path=/; SameSite=Strict"+(location.protocol==="https:"?"; Secure":"");
location.reload();};</script></body></html>`

// consoleStream streams the view (event type "view", its HTML) each time
// it changes and each event of the timeline (type "event", a line's
// HTML, with its ID).
func (a *Agent) consoleStream(w http.ResponseWriter, r *http.Request) {
	views, stop := a.console.subscribe()
	defer stop()
	a.streamTimeline(w, r, func(e events.Event) []byte {
		var b bytes.Buffer
		console.EventHTML(&b, e)
		return b.Bytes()
	}, views)
}

// forward sends an operator's action from the dashboard on to the node
// that carries it out (POST /api/v1/nodes/NODE/api/v1/...), with the
// caller's token and name: that node decides whether it may.
func (a *Agent) forward(w http.ResponseWriter, r *http.Request) {
	cfg := a.config()
	node := r.PathValue("node")
	base, err := adminclient.URL(cfg, node)
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	client, err := adminclient.HTTPClient(cfg, 2*time.Minute)
	if err != nil {
		web.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	defer client.CloseIdleConnections()
	target := base + "/" + r.PathValue("path")
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, target, nil)
	if err != nil {
		web.WriteError(w, http.StatusBadRequest, err)
		return
	}
	for _, h := range []string{"Authorization", "X-Haven-Operator"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		web.WriteError(w, http.StatusBadGateway, fmt.Errorf("node %s: %w", node, err))
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

// consoleHub builds the view for every open page at once.
type consoleHub struct {
	a *Agent

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	running bool
	last    []byte       // the newest view's HTML
	view    console.View // and the view
	rates   map[string]rateSample
	// client asks the peers, for clientCfg.
	client    *http.Client
	clientErr error
	clientCfg *config.Config
	token     string
}

// rateSample is a backend's request count when a view was built.
type rateSample struct {
	requests uint64
	at       time.Time
}

// subscribe returns a channel of the view's HTML, starting with the
// newest one, and how to stop; the first subscriber starts the builder.
func (h *consoleHub) subscribe() (<-chan []byte, func()) {
	c := make(chan []byte, 4)
	h.mu.Lock()
	h.subs[c] = struct{}{}
	if h.last != nil {
		c <- h.last
	}
	if !h.running {
		h.running = true
		go h.run()
	}
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[c]; ok {
			delete(h.subs, c)
			close(c)
		}
	}
}

// current returns the newest view when a builder runs, else builds one.
func (h *consoleHub) current(ctx context.Context) console.View {
	h.mu.Lock()
	v, fresh := h.view, h.running && !h.view.At.IsZero()
	h.mu.Unlock()
	if fresh {
		return v
	}
	return h.build(ctx)
}

// run builds the view every consoleEvery, and soon after each event,
// while anyone watches.
func (h *consoleHub) run() {
	evc, stop := h.a.timeline.Subscribe()
	defer func() { stop() }()
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		select {
		case <-timer.C:
		case _, ok := <-evc:
			if !ok { // fell behind: take up the stream again
				evc, stop = h.a.timeline.Subscribe()
			}
			// Sooner, never later: a burst of events must not hold
			// the view back.
			if soon := time.Now().Add(consoleAfterEvent); soon.Before(next) {
				timer.Reset(consoleAfterEvent)
				next = soon
			}
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*consolePeerWait)
		v := h.build(ctx)
		cancel()
		var b bytes.Buffer
		if err := console.ViewHTML(&b, v); err != nil {
			h.a.log.Error("dashboard: render the view", "err", err)
		}
		h.mu.Lock()
		if len(h.subs) == 0 {
			h.running, h.last, h.view = false, nil, console.View{}
			h.mu.Unlock()
			return
		}
		h.view = v
		if !bytes.Equal(b.Bytes(), h.last) {
			h.last = b.Bytes()
			for c := range h.subs {
				select {
				case c <- h.last:
				default: // a slow page gets the next one
				}
			}
		}
		h.mu.Unlock()
		timer.Reset(consoleEvery)
		next = time.Now().Add(consoleEvery)
	}
}

// peerStatus is the part of a node's /api/v1/status the view shows.
type peerStatus struct {
	Ready        bool                `json:"ready"`
	NotReady     []string            `json:"not_ready"`
	Version      string              `json:"version"`
	Started      time.Time           `json:"started"`
	Balancers    []lb.Status         `json:"balancers"`
	Coordination *CoordinationStatus `json:"coordination"`
	Traffic      *gtm.Status         `json:"traffic"`
	Objectives   *drill.Compliance   `json:"objectives"`
}

// peerAnswer is a node's status, or why it gave none.
type peerAnswer struct {
	node string
	st   peerStatus
	err  error
}

// peers returns the client and token for asking cfg's nodes, made once
// per configuration: a client per view would open new connections (and
// TLS handshakes) to every peer each second.
func (h *consoleHub) peers(cfg *config.Config) (*http.Client, string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.clientCfg != cfg {
		if h.client != nil {
			h.client.CloseIdleConnections()
		}
		h.token, _ = adminclient.Token(cfg)
		h.client, h.clientErr = adminclient.HTTPClient(cfg, consolePeerWait)
		h.clientCfg = cfg
	}
	return h.client, h.token, h.clientErr
}

// gather asks every node for its status at once; this node answers from
// memory.
func (h *consoleHub) gather(ctx context.Context, cfg *config.Config) map[string]peerAnswer {
	client, token, cerr := h.peers(cfg)
	out := map[string]peerAnswer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range cfg.NodeNames() {
		wg.Go(func() {
			ans := peerAnswer{node: n}
			if n == h.a.opt.Node {
				b, _ := json.Marshal(h.a.admin.Status())
				ans.err = json.Unmarshal(b, &ans.st)
			} else if cerr != nil {
				ans.err = cerr
			} else {
				ans.err = askStatus(ctx, client, cfg, token, n, &ans.st)
			}
			mu.Lock()
			out[n] = ans
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func askStatus(ctx context.Context, client *http.Client, cfg *config.Config, token, node string, out *peerStatus) error {
	base, err := adminclient.URL(cfg, node)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/status", nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(out)
}

// build asks every node and puts their answers together.
func (h *consoleHub) build(ctx context.Context) console.View {
	cfg := h.a.config()
	answers := h.gather(ctx, cfg)
	v := console.View{Cluster: cfg.Cluster, Node: h.a.opt.Node, At: time.Now()}
	self := answers[h.a.opt.Node].st
	if cfg.Coordination == nil {
		v.Blind = append(v.Blind, "no coordination section: no floating address, database or shared timeline to show")
	} else if self.Coordination == nil || !self.Coordination.Connected {
		v.Blind = append(v.Blind, h.a.opt.Node+" is not connected to etcd: holders and the database are as it last knew them")
	}
	for _, r := range slices.Sorted(maps.Keys(cfg.Regions)) {
		region := console.Region{Name: r}
		if len(cfg.Regions) == 1 {
			region.Name = ""
		}
		for _, n := range slices.Sorted(maps.Keys(cfg.Regions[r].Nodes)) {
			region.Nodes = append(region.Nodes, h.node(cfg, answers[n], self))
			if err := answers[n].err; err != nil {
				v.Blind = append(v.Blind, fmt.Sprintf("%s does not answer (%s): what only it knows is missing", n, shortErr(err)))
			}
		}
		v.Regions = append(v.Regions, region)
	}
	if o := self.Objectives; o != nil {
		obj := &console.Objectives{Met: o.Met, Unseen: o.Unseen}
		for _, f := range o.Failing {
			obj.Failing = append(obj.Failing, f.Part+": "+f.Why)
		}
		v.Objectives = obj
	}
	v.VIPs = vipsView(cfg, answers)
	h.mu.Lock()
	v.Balancers = balancersView(cfg, answers, h.rates, v.At)
	h.mu.Unlock()
	v.Database = databaseView(cfg, answers)
	v.DNS = dnsView(cfg, answers)
	return v
}

func (h *consoleHub) node(cfg *config.Config, ans peerAnswer, self peerStatus) console.Node {
	n, _ := cfg.Node(ans.node)
	out := console.Node{Name: ans.node, Zone: n.Zone, Address: n.Address, Self: ans.node == h.a.opt.Node}
	if ans.err != nil {
		out.Error = shortErr(ans.err)
	} else {
		out.Reachable, out.Ready, out.NotReady = true, ans.st.Ready, ans.st.NotReady
		out.Version, out.Started = ans.st.Version, ans.st.Started
	}
	if c := self.Coordination; c != nil {
		if m, ok := c.Members[ans.node]; ok {
			out.Roles = m.Roles
		}
	}
	return out
}

// shortErr keeps the end of an error: what a refused or silent
// connection says.
func shortErr(err error) string {
	// "Get URL: dial tcp ADDR: connect: connection refused" says no more
	// than "connect: connection refused" beside the node's name.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok {
		err = oe.Err
	}
	s := err.Error()
	if len(s) > 120 {
		s = "…" + s[len(s)-120:]
	}
	return s
}

func vipsView(cfg *config.Config, answers map[string]peerAnswer) []console.VIP {
	var out []console.VIP
	for _, name := range slices.Sorted(maps.Keys(cfg.Balancers)) {
		b := cfg.Balancers[name]
		if b.VIP == nil {
			continue
		}
		v := console.VIP{Name: name, Address: b.VIP.Address}
		for _, n := range b.Nodes {
			ans := answers[n]
			vn := console.VIPNode{Node: n, State: "no answer"}
			if ans.err == nil && ans.st.Coordination != nil {
				for _, s := range ans.st.Coordination.VIPs {
					if s.Name != name {
						continue
					}
					vn.State, vn.Error = string(s.State), s.Error
					if s.Holder != "" && s.HeldEpoch >= v.Epoch {
						v.Holder, v.Epoch = s.Holder, s.HeldEpoch
					}
				}
			}
			v.Nodes = append(v.Nodes, vn)
		}
		out = append(out, v)
	}
	return out
}

func balancersView(cfg *config.Config, answers map[string]peerAnswer, rates map[string]rateSample, now time.Time) []console.Balancer {
	var out []console.Balancer
	for _, name := range slices.Sorted(maps.Keys(cfg.Balancers)) {
		b := cfg.Balancers[name]
		cb := console.Balancer{Name: name, Mode: b.Mode, Listen: b.Listen}
		for _, n := range b.Nodes {
			bn := console.BalancerNode{Node: n}
			ans := answers[n]
			if ans.err == nil {
				i := slices.IndexFunc(ans.st.Balancers, func(s lb.Status) bool { return s.Name == name })
				if i >= 0 {
					s := ans.st.Balancers[i]
					bn.Reachable, bn.Ready, bn.NotReady, bn.Clients = true, s.Ready, s.NotReady, s.ClientConnections
					for _, be := range s.Backends {
						bn.Backends = append(bn.Backends, backendView(n+"/"+name, be, rates, now))
					}
				}
			}
			cb.Nodes = append(cb.Nodes, bn)
		}
		out = append(out, cb)
	}
	return out
}

func backendView(key string, be lb.BackendStatus, rates map[string]rateSample, now time.Time) console.Backend {
	out := console.Backend{
		Name: be.Name, Address: be.Address, Health: be.Health.State.String(), Since: be.Health.Since,
		Admin: be.Admin, Weight: be.Weight, Inflight: be.Inflight, Rate: -1,
	}
	if out.Health == "down" && be.Health.Last != nil {
		out.Reason = be.Health.Last.Error
	}
	key += "/" + be.Name
	if prev, ok := rates[key]; ok && be.Requests >= prev.requests && now.Sub(prev.at) > 0 {
		out.Rate = float64(be.Requests-prev.requests) / now.Sub(prev.at).Seconds()
	}
	rates[key] = rateSample{requests: be.Requests, at: now}
	return out
}

// databaseView takes the database from the database node that knows the
// newest epoch.
func databaseView(cfg *config.Config, answers map[string]peerAnswer) *console.Database {
	if cfg.Database == nil {
		return nil
	}
	var best *DatabaseStatus
	for _, n := range slices.Sorted(maps.Keys(answers)) {
		ans := answers[n]
		if ans.err != nil || ans.st.Coordination == nil || ans.st.Coordination.Database == nil || len(ans.st.Coordination.Database.Members) == 0 {
			continue
		}
		if d := ans.st.Coordination.Database; best == nil || d.Epoch > best.Epoch {
			best = d
		}
	}
	db := &console.Database{}
	if best == nil {
		return db
	}
	db.Seen, db.Primary, db.Epoch = true, best.Primary, best.Epoch
	db.Sync = "async"
	if s := best.Sync; s.K > 0 {
		db.Sync = fmt.Sprintf("%d of %v", s.K, s.Standbys)
	}
	if p := best.Paused; p != nil {
		db.Paused = "by " + p.Owner
		if p.Reason != "" {
			db.Paused += ": " + p.Reason
		}
	}
	for _, n := range slices.Sorted(maps.Keys(best.Members)) {
		m := best.Members[n]
		if n == best.Primary {
			// The record is the truth; a new primary's own state says
			// so a second later.
			m.Role = "primary"
		}
		db.Members = append(db.Members, console.DBMember{
			Node: n, Role: m.Role, Gone: answers[n].err != nil, Timeline: m.Timeline, Streaming: m.Streaming, LagBytes: m.Lag, LagSeconds: m.LagSeconds,
			Sync: slices.Contains(best.Sync.Standbys, n), NotPromotable: m.NotPromotable, PendingRestart: m.PendingRestart,
		})
	}
	// The backups as the node that takes them sees them.
	for _, n := range slices.Sorted(maps.Keys(answers)) {
		ans := answers[n]
		if ans.err != nil || ans.st.Coordination == nil || ans.st.Coordination.Database == nil {
			continue
		}
		b := ans.st.Coordination.Database.Backup
		if b == nil {
			continue
		}
		if b.Newest != nil && b.Newest.Stopped.After(db.LastBackup) {
			db.LastBackup, db.LastBackupKind = b.Newest.Stopped, b.Newest.Kind
		}
		if a := b.Archive; a != nil && a.Archiving {
			db.ArchiveLag = fmt.Sprintf("%d B / %.1f s", a.LagBytes, a.LagSeconds)
		}
	}
	return db
}

// dnsView shows the names as the first name server that answers sees
// them.
func dnsView(cfg *config.Config, answers map[string]peerAnswer) []console.DNSName {
	if cfg.Traffic == nil {
		return nil
	}
	for _, ns := range cfg.Traffic.Nameservers {
		ans := answers[ns]
		if ans.err != nil || ans.st.Traffic == nil {
			continue
		}
		var out []console.DNSName
		for _, n := range ans.st.Traffic.Names {
			d := console.DNSName{Name: n.Name, Policy: string(n.Policy), Server: ns, Answers: n.Answers, AllDown: true,
				Record: strings.TrimSuffix(strings.TrimSuffix(n.Name, "."+cfg.Traffic.Zone), ".")}
			for _, t := range n.Targets {
				d.Targets = append(d.Targets, console.DNSTarget{Name: t.Name, Address: t.Address, Up: t.Up, Drained: !t.DrainedUntil.IsZero()})
				if t.Up {
					d.AllDown = false
				}
			}
			out = append(out, d)
		}
		return out
	}
	return nil
}
