// Package events keeps the cluster's timeline: every health transition,
// ownership change, promotion, switchover, drain, reload and operator call,
// in the order they happened, on every node.
//
// A node records what it saw or did (Log.Record); the record goes at once
// into the node's memory and to its subscribers (the dashboard's stream),
// and then into etcd under /haven/CLUSTER/events/ID, where every other
// node's watch receives it. So each node holds the cluster's recent
// timeline, and a node cut off from etcd still holds its own events and
// writes them when etcd answers again (up to maxPending; the oldest are
// dropped past that and counted).
//
// An ID is the recording node's clock in nanoseconds, zero-padded, then the
// node and a sequence number: IDs sort in time order (as far as the nodes'
// clocks agree), are unique, and are the keys' order in etcd, so the
// history is bounded by deleting the lowest keys past History (any node
// may trim; a delete of what is already gone is harmless).
//
// Components do not import this package to record: a log record with the
// attribute "event" (Attr) is an event of that kind too (Tee), so the
// lines an operator reads in the journal and the timeline say the same.
package events

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
)

// Attr is the log attribute that makes a log record an event; its value
// is the event's kind.
const Attr = "event"

// Kinds of events the agent records.
const (
	KindHealth     = "health"     // a target went up or down
	KindOwner      = "owner"      // a node acquired or released an ownership record
	KindPromotion  = "promotion"  // a replica became the primary
	KindDemotion   = "demotion"   // a primary stopped being one
	KindSwitchover = "switchover" // an operator's planned change of primary
	KindDrain      = "drain"      // an operator drained or enabled a target
	KindReload     = "reload"     // the configuration was reloaded (or refused)
	KindAdmin      = "admin"      // an operator's call to the admin API
	KindAgent      = "agent"      // an agent started, stopped or restarted
	KindVIP        = "vip"        // a floating address configured or released
	KindDatabase   = "database"   // the database's sync set, rewinds, rebuilds, restarts, pauses, router
	KindDNS        = "dns"        // a name's answers changed; the name servers' view of etcd
	KindRegion     = "region"     // the active region changed
)

// Event is one entry of the timeline.
type Event struct {
	// ID orders events and names each once (see the package comment).
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
	Node string    `json:"node"`
	Kind string    `json:"kind"`
	// Level is the log level it was recorded at: INFO, WARN or ERROR.
	Level   string `json:"level"`
	Message string `json:"message"`
	// Attrs are the details (the log record's other attributes).
	Attrs map[string]string `json:"attrs,omitempty"`
}

// String is the event as one line: time, node, kind, message, details.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s: %s", e.At.Format("2006-01-02T15:04:05.000Z07:00"), e.Node, e.Kind, printable(e.Message))
	keys := make([]string, 0, len(e.Attrs))
	for k := range e.Attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, quoteIfNeeded(e.Attrs[k]))
	}
	return b.String()
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \"=") || printable(s) != s {
		return strconv.Quote(s)
	}
	return s
}

// printable quotes s when it holds a control character: a message must
// not move a terminal's cursor or colour what follows.
func printable(s string) string {
	for _, r := range s {
		if unicode.IsControl(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

const (
	// DefaultHistory is how many events etcd keeps: at a few hundred
	// bytes each, about 2 MB.
	DefaultHistory = 5000
	// defaultRecent is how many a node keeps in memory.
	defaultRecent = 1000
	// maxPending bounds a node's events not yet written to etcd.
	maxPending = 1000
	// subscriberBuffer is how far a subscriber may fall behind before it
	// is dropped (its channel closed; it asks again for what it missed).
	subscriberBuffer = 256
)

// Options configure a Log.
type Options struct {
	Cluster string
	Node    string
	// History is how many events etcd keeps (DefaultHistory when 0).
	History int
	// Recent is how many events the node keeps in memory.
	Recent     int
	Registerer prometheus.Registerer
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Log is a node's view of the timeline. Its methods are safe for
// concurrent use.
type Log struct {
	opt     Options
	metrics *metrics

	mu      sync.Mutex
	seq     uint64
	recent  []Event // sorted by ID, at most opt.Recent
	pending []Event // this node's events not yet in etcd, oldest first
	subs    map[chan Event]struct{}
	wake    chan struct{} // a new pending event (buffered 1)
	local   bool          // no etcd: nothing is pending (KeepLocal)
}

// KeepLocal makes the log this node's alone, without etcd (a
// configuration without coordination): nothing waits to be written.
func (l *Log) KeepLocal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.local, l.pending = true, nil
}

// New returns an empty log; Run connects it to etcd.
func New(opt Options) *Log {
	if opt.History <= 0 {
		opt.History = DefaultHistory
	}
	if opt.Recent <= 0 {
		opt.Recent = defaultRecent
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Log{opt: opt, metrics: newMetrics(opt.Registerer), subs: map[chan Event]struct{}{}, wake: make(chan struct{}, 1)}
}

// Prefix is the key prefix of a cluster's events in etcd.
func Prefix(cluster string) string { return "/haven/" + cluster + "/events/" }

// Record adds an event this node saw: it fills the ID, the time (unless
// set) and the node, and hands it to the subscribers and the writer.
func (l *Log) Record(e Event) Event {
	l.mu.Lock()
	if e.At.IsZero() {
		e.At = l.opt.Now()
	}
	l.seq++
	e.Node = l.opt.Node
	e.ID = fmt.Sprintf("%020d-%s-%d", e.At.UnixNano(), l.opt.Node, l.seq)
	if e.Level == "" {
		e.Level = "INFO"
	}
	if !l.local {
		l.pending = append(l.pending, e)
	}
	if over := len(l.pending) - maxPending; over > 0 {
		l.pending = slices.Delete(l.pending, 0, over)
		l.metrics.dropped.Add(float64(over))
	}
	l.addLocked(e)
	l.mu.Unlock()
	l.metrics.recorded.WithLabelValues(e.Kind).Inc()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return e
}

// add takes in an event read from etcd (this node's or another's).
func (l *Log) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addLocked(e)
}

// addLocked inserts e in ID order unless it is known or older than the
// whole window, and hands it to the subscribers when it is new.
func (l *Log) addLocked(e Event) {
	i, found := slices.BinarySearchFunc(l.recent, e.ID, func(x Event, id string) int { return strings.Compare(x.ID, id) })
	if found || (i == 0 && len(l.recent) >= l.opt.Recent) {
		return
	}
	l.recent = slices.Insert(l.recent, i, e)
	if over := len(l.recent) - l.opt.Recent; over > 0 {
		l.recent = slices.Delete(l.recent, 0, over)
	}
	for c := range l.subs {
		select {
		case c <- e:
		default:
			// Too slow: end its stream rather than block the
			// recorder; it asks again with the last ID it has.
			delete(l.subs, c)
			close(c)
			l.metrics.slowSubscribers.Inc()
		}
	}
}

// Since returns the events after the ID after ("" for all), oldest first,
// at most limit of them (the newest; 0: no limit).
func (l *Log) Since(after string, limit int) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, found := slices.BinarySearchFunc(l.recent, after, func(x Event, id string) int { return strings.Compare(x.ID, id) })
	if found {
		i++
	}
	out := l.recent[i:]
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return slices.Clone(out)
}

// Subscribe returns a channel that receives every event the node learns of
// from now on, in the order it learns them, and a function that ends the
// subscription. The channel is closed when the subscriber falls more than
// subscriberBuffer events behind: it should ask Since for what it missed.
func (l *Log) Subscribe() (<-chan Event, func()) {
	c := make(chan Event, subscriberBuffer)
	l.mu.Lock()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	return c, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.subs[c]; ok {
			delete(l.subs, c)
			close(c)
		}
	}
}

// Pending is how many of this node's events are not yet in etcd.
func (l *Log) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

type metrics struct {
	recorded        *prometheus.CounterVec
	written         prometheus.Counter
	dropped         prometheus.Counter
	slowSubscribers prometheus.Counter
	trimmed         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_events_recorded_total",
			Help: "Events this node recorded, by kind.",
		}, []string{"kind"}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_events_written_total",
			Help: "Events this node wrote to etcd.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_events_dropped_total",
			Help: "Events this node recorded but dropped before writing them to etcd: more than 1000 waited while etcd did not answer.",
		}),
		slowSubscribers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_events_slow_subscribers_total",
			Help: "Event streams ended because their reader fell too far behind.",
		}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_events_trimmed_total",
			Help: "Events this node deleted from etcd to keep the history bounded.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.recorded, m.written, m.dropped, m.slowSubscribers, m.trimmed)
	}
	return m
}
