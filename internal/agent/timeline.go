package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/haven-ha/haven/internal/events"
	"github.com/haven-ha/haven/internal/web"
)

// runTimeline writes this node's events to its region's etcd and reads
// every node's, while etcd answers (see internal/events).
func (a *Agent) runTimeline(ctx context.Context, cl *etcdClients) {
	a.timeline.Run(ctx, cl.all, a.log.With("component", "events"))
}

// maxEventsAnswer bounds one answer of /api/v1/events.
const maxEventsAnswer = events.DefaultHistory

// timelineRoutes mounts GET /api/v1/events[?after=ID][&limit=N] and its
// stream, GET /api/v1/events/stream.
func (a *Agent) timelineRoutes() {
	a.admin.HandleRead("GET /api/v1/events", a.eventsHandler)
	a.admin.HandleRead("GET /api/v1/events/stream", a.eventsStream)
}

// EventsAnswer is GET /api/v1/events: the events, oldest first, and
// whether they come from etcd (the whole cluster's) or from this node's
// memory only.
type EventsAnswer struct {
	Events []events.Event `json:"events"`
	// Source is "etcd" or "memory"; Error says why not etcd.
	Source string `json:"source"`
	Error  string `json:"error,omitempty"`
}

// eventsHandler answers from memory when it holds what was asked, and
// from etcd for a longer history.
func (a *Agent) eventsHandler(w http.ResponseWriter, r *http.Request) {
	after := r.URL.Query().Get("after")
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxEventsAnswer {
			web.WriteError(w, http.StatusBadRequest, fmt.Errorf("limit %q: want a number from 1 to %d", s, maxEventsAnswer))
			return
		}
		limit = n
	}
	ans := EventsAnswer{Events: a.timeline.Since(after, limit), Source: "memory"}
	rs := a.current()
	if rs.coord == nil {
		ans.Error = "no coordination section: the events are this node's own"
		web.WriteJSON(w, http.StatusOK, ans)
		return
	}
	cli := rs.coord.etcd()
	if cli == nil {
		ans.Error = "etcd not connected: the events are those this node holds"
		web.WriteJSON(w, http.StatusOK, ans)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	stored, err := events.Read(ctx, cli, a.config().Cluster, after, limit)
	if err != nil {
		ans.Error = err.Error()
		web.WriteJSON(w, http.StatusOK, ans)
		return
	}
	// etcd has the cluster's; this node's not yet written are added.
	ans.Events, ans.Source = merge(stored, ans.Events, limit), "etcd"
	web.WriteJSON(w, http.StatusOK, ans)
}

// merge joins two ID-ordered lists without duplicates, keeping the newest
// limit.
func merge(x, y []events.Event, limit int) []events.Event {
	out := make([]events.Event, 0, len(x)+len(y))
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case j == len(y) || i < len(x) && x[i].ID < y[j].ID:
			out = append(out, x[i])
			i++
		case i == len(x) || y[j].ID < x[i].ID:
			out = append(out, y[j])
			j++
		default:
			out = append(out, x[i])
			i, j = i+1, j+1
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// eventsStream serves the timeline's stream: each event as JSON.
func (a *Agent) eventsStream(w http.ResponseWriter, r *http.Request) {
	a.streamTimeline(w, r, func(e events.Event) []byte {
		b, _ := json.Marshal(e)
		return b
	}, nil)
}

// streamTimeline streams the timeline to r: first what came after the
// reader's last ID (Last-Event-ID when it reconnects, or ?after=), then
// each event as this node learns of it (type "event", encoded by encode,
// with its ID), and each of views as a message of type "view", until the
// reader leaves or falls behind (it reconnects with its last ID).
func (a *Agent) streamTimeline(w http.ResponseWriter, r *http.Request, encode func(events.Event) []byte, views <-chan []byte) {
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = r.URL.Query().Get("after")
	}
	// Subscribe before reading the backlog: nothing falls between.
	c, stop := a.timeline.Subscribe()
	defer stop()
	st, err := a.admin.StartStream(w, r)
	if err != nil {
		web.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	sent := map[string]bool{} // the backlog's, which the subscription may repeat
	send := func(e events.Event) error {
		if sent[e.ID] {
			return nil
		}
		return st.Send("event", e.ID, encode(e))
	}
	if after != "" {
		// A new reader wants what happens from now on; one that
		// reconnects, what it missed.
		for _, e := range a.timeline.Since(after, 100) {
			if send(e) != nil {
				return
			}
			sent[e.ID] = true
		}
	}
	beats, stopBeats := st.Heartbeats()
	defer stopBeats()
	for {
		select {
		case <-st.Context().Done():
			return
		case e, ok := <-c:
			if !ok || send(e) != nil {
				return
			}
		case v, ok := <-views:
			if !ok || st.Send("view", "", v) != nil {
				return
			}
		case <-beats:
			if st.Ping() != nil {
				return
			}
		}
	}
}
