package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord/coordtest"
)

func TestTeeRecordsMarkedLogRecords(t *testing.T) {
	l := New(Options{Cluster: "c", Node: "n1"})
	var out bytes.Buffer
	log := slog.New(Tee(slog.NewTextHandler(&out, nil), l)).With("node", "n1", "component", "keeper", "singleton", "/haven/c/pg/main")
	log.Info("promoted to primary", Attr, KindPromotion, "epoch", 7, "err", errors.New("none"))
	log.Info("a line that is not an event", "epoch", 8)
	log.Debug("never an event", Attr, KindOwner)
	log.WithGroup("g").Warn("grouped", Attr, KindOwner, "k", "v")

	got := l.Since("", 0)
	if len(got) != 1 {
		t.Fatalf("events %+v, want the promotion only (the grouped attribute is not the marker)", got)
	}
	e := got[0]
	want := map[string]string{"epoch": "7", "err": "none", "singleton": "/haven/c/pg/main"}
	if e.Kind != KindPromotion || e.Message != "promoted to primary" || e.Node != "n1" || e.Level != "INFO" || fmt.Sprint(e.Attrs) != fmt.Sprint(want) {
		t.Errorf("event %+v, want kind promotion, the message, node n1, attrs %v", e, want)
	}
	// The log line is written as before: the tee only adds.
	if !strings.Contains(out.String(), "promoted to primary") || !strings.Contains(out.String(), "not an event") {
		t.Errorf("the log lost lines:\n%s", out.String())
	}
	if strings.Contains(out.String(), "never an event") {
		t.Errorf("a debug line passed the Info handler:\n%s", out.String())
	}
}

func TestLogOrdersAndStreams(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Options{Cluster: "c", Node: "n1", Recent: 3, Now: func() time.Time { now = now.Add(time.Second); return now }})
	c, stop := l.Subscribe()
	defer stop()
	a := l.Record(Event{Kind: KindAdmin, Message: "a"})
	// Another node's event from before a: it is placed before it.
	l.add(Event{ID: fmt.Sprintf("%020d-n2-1", time.Unix(1000, 500).UnixNano()), Node: "n2", Message: "early"})
	b := l.Record(Event{Kind: KindAdmin, Message: "b"})
	if got := messages(l.Since("", 0)); got != "early a b" {
		t.Errorf("Since(all) = %s, want early a b", got)
	}
	if got := messages(l.Since(a.ID, 0)); got != "b" {
		t.Errorf("Since(a) = %s, want b", got)
	}
	l.add(b) // read back from etcd: no duplicate
	l.Record(Event{Kind: KindAdmin, Message: "c"})
	if got := messages(l.Since("", 0)); got != "a b c" {
		t.Errorf("after the window of 3 is full: %s, want a b c", got)
	}
	if got := messages(l.Since("", 2)); got != "b c" {
		t.Errorf("Since(all, limit 2) = %s, want b c", got)
	}
	var streamed []Event
	for range 4 {
		streamed = append(streamed, <-c)
	}
	if got := messages(streamed); got != "a early b c" {
		t.Errorf("streamed %s, want a early b c (in the order learnt, once each)", got)
	}
}

func TestSlowSubscriberIsCutNotWaitedFor(t *testing.T) {
	l := New(Options{Cluster: "c", Node: "n1"})
	c, stop := l.Subscribe()
	defer stop()
	for i := range subscriberBuffer + 10 {
		l.Record(Event{Kind: KindHealth, Message: fmt.Sprint(i)})
	}
	n := 0
	for range c {
		n++
	}
	if n != subscriberBuffer {
		t.Errorf("the slow subscriber got %d events before its channel closed, want %d", n, subscriberBuffer)
	}
	if got := len(l.Since("", 0)); got != subscriberBuffer+10 {
		t.Errorf("the log holds %d events, want all %d", got, subscriberBuffer+10)
	}
}

// TestEtcdSharesEventsAndBoundsHistory runs two nodes' logs on one etcd:
// each sees the other's events, events recorded while etcd was not yet
// reachable are written once it is, and the history is trimmed to its
// bound, keeping the newest.
func TestEtcdSharesEventsAndBoundsHistory(t *testing.T) {
	url, _ := coordtest.StartMember(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	quiet := slog.New(slog.DiscardHandler)

	n1 := New(Options{Cluster: "c", Node: "n1", History: 20})
	n2 := New(Options{Cluster: "c", Node: "n2", History: 20})
	early := n1.Record(Event{Kind: KindAgent, Message: "recorded before etcd answered"})
	if n1.Pending() != 1 {
		t.Fatalf("pending %d, want 1", n1.Pending())
	}
	done := make(chan error, 2)
	go func() { done <- n1.Run(ctx, cli, quiet) }()
	go func() { done <- n2.Run(ctx, cli, quiet) }()
	waitFor(t, "n2 has n1's early event", func() bool { return has(n2.Since("", 0), early.ID) })
	late := n2.Record(Event{Kind: KindAdmin, Message: "from n2"})
	waitFor(t, "n1 has n2's event", func() bool { return has(n1.Since("", 0), late.ID) })

	for i := range 150 {
		n1.Record(Event{Kind: KindHealth, Message: fmt.Sprint(i)})
	}
	waitFor(t, "n1 wrote everything", func() bool { return n1.Pending() == 0 })
	if err := n1.trim(ctx, cli); err != nil {
		t.Fatal(err)
	}
	kept, err := Read(ctx, cli, "c", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 20 || kept[len(kept)-1].Message != "149" || kept[0].Message != "130" {
		t.Errorf("etcd keeps %d events (%s ... %s), want the newest 20: 130 ... 149", len(kept), kept[0].Message, kept[len(kept)-1].Message)
	}
	after, err := Read(ctx, cli, "c", kept[17].ID, 0)
	if err != nil || messages(after) != "148 149" {
		t.Errorf("Read after the 18th = %s (%v), want 148 149", messages(after), err)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func messages(es []Event) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Message)
	}
	return strings.Join(s, " ")
}

func has(es []Event, id string) bool {
	for _, e := range es {
		if e.ID == id {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
