package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/events"
)

// runEvents is `haven events`: the cluster's timeline, merged from every
// node's answer (each holds the cluster's events while etcd answers, and
// its own when it does not), and with --follow each new event as it
// happens, from every node's stream.
func runEvents(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("events", stderr)
	cfgPath := configFlag(fs)
	limit := fs.Int("limit", 50, "how many of the newest events to print (at most 5000)")
	follow := fs.Bool("follow", false, "then print each new event as it happens, until interrupted")
	fs.BoolVar(follow, "f", false, "short for --follow")
	within := nodeTimeoutFlag(fs)
	output := fs.String("o", "text", "text (one line per event) or json (an array; with --follow one object per line)")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	if *limit < 1 || *limit > events.DefaultHistory {
		return fmt.Errorf("--limit %d: give 1 to %d", *limit, events.DefaultHistory)
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	nodes := ac.cfg.NodeNames()
	as := askEach[agent.EventsAnswer](ac, nodes, fmt.Sprintf("/api/v1/events?limit=%d", *limit), *within)
	var lists [][]events.Event
	answered := 0
	for _, a := range as {
		if a.err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", a.node, noAnswer(a.err))
			continue
		}
		answered++
		lists = append(lists, a.val.Events)
	}
	if answered == 0 {
		return answerErrors(as)
	}
	evs := mergeEvents(lists, *limit)
	p := &eventPrinter{w: stdout, json: *output == "json", lines: *follow, seen: map[string]bool{}}
	if err := p.print(evs...); err != nil {
		return err
	}
	if !*follow {
		return p.end()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	after := ""
	if len(evs) > 0 {
		after = evs[len(evs)-1].ID
	}
	return followEvents(ctx, ac, nodes, after, p)
}

// mergeEvents joins the nodes' lists (each in ID order), once per event,
// keeping the newest limit.
func mergeEvents(lists [][]events.Event, limit int) []events.Event {
	byID := map[string]events.Event{}
	for _, l := range lists {
		for _, e := range l {
			byID[e.ID] = e
		}
	}
	out := make([]events.Event, 0, len(byID))
	for _, e := range byID {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b events.Event) int { return strings.Compare(a.ID, b.ID) })
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// eventPrinter prints each event once: as a line, as an element of a JSON
// array, or (lines) as one JSON object per line.
type eventPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	json  bool
	lines bool
	n     int
	seen  map[string]bool
	order []string // seen's IDs, oldest first: a long follow forgets the oldest
}

// maxSeen bounds what a follow remembers: a node replays at most 100
// events when its stream is taken up again.
const maxSeen = 10000

func (p *eventPrinter) print(evs ...events.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range evs {
		if p.seen[e.ID] {
			continue
		}
		p.seen[e.ID] = true
		if p.order = append(p.order, e.ID); len(p.order) > maxSeen {
			delete(p.seen, p.order[0])
			p.order = p.order[1:]
		}
		var err error
		switch {
		case !p.json:
			_, err = fmt.Fprintln(p.w, e.String())
		case p.lines:
			b, _ := json.Marshal(e)
			_, err = fmt.Fprintf(p.w, "%s\n", b)
		default:
			b, _ := json.MarshalIndent(e, "  ", "  ")
			sep := ",\n  "
			if p.n == 0 {
				sep = "[\n  "
			}
			_, err = fmt.Fprintf(p.w, "%s%s", sep, b)
		}
		if err != nil {
			return err
		}
		p.n++
	}
	return nil
}

// end closes the JSON array.
func (p *eventPrinter) end() error {
	if !p.json || p.lines {
		return nil
	}
	end := "\n]\n"
	if p.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(p.w, end)
	return err
}

// followEvents reads every node's stream until ctx ends, reconnecting to a
// node whose stream broke from the last event it sent.
func followEvents(ctx context.Context, ac *adminClient, nodes []string, after string, p *eventPrinter) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(nodes))
	for _, n := range nodes {
		wg.Go(func() {
			last := after
			for ctx.Err() == nil {
				if err := streamEvents(ctx, ac, n, &last, p); err != nil && ctx.Err() == nil {
					if _, ok := err.(writeError); ok {
						errc <- err
						return
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// writeError is a failure to print: following cannot go on.
type writeError struct{ error }

// streamEvents reads one node's stream of events until it breaks.
func streamEvents(ctx context.Context, ac *adminClient, node string, last *string, p *eventPrinter) error {
	base, err := ac.adminURL(node)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events/stream", nil)
	if err != nil {
		return err
	}
	if ac.token != "" {
		req.Header.Set("Authorization", "Bearer "+ac.token)
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	// The client's timeout would end the stream: the context does.
	client := *ac.client
	client.Timeout = 0
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("node %s: %s", node, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data.WriteString(d)
			continue
		}
		if line != "" || data.Len() == 0 {
			continue
		}
		var e events.Event
		if json.Unmarshal([]byte(data.String()), &e) == nil && e.ID != "" {
			*last = e.ID
			if err := p.print(e); err != nil {
				return writeError{err}
			}
		}
		data.Reset()
	}
	return sc.Err()
}
