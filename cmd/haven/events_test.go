package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/events"
)

// TestEventsMergeAndPrint: the nodes' answers overlap (each holds the
// cluster's events from etcd) and one node may hold events the others
// lack (cut off from etcd); haven events prints each once, in order, the
// newest limit of them, as lines or as one JSON array a script can read.
func TestEventsMergeAndPrint(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	ev := func(id, node, msg string) events.Event {
		return events.Event{ID: id, Node: node, Kind: events.KindPromotion, Message: msg, At: at, Attrs: map[string]string{"epoch": "3", "why": "the primary is gone"}}
	}
	a := []events.Event{ev("01", "db1", "one"), ev("03", "db2", "three")}
	b := []events.Event{ev("01", "db1", "one"), ev("02", "db3", "two, only db3 has it"), ev("03", "db2", "three")}
	got := mergeEvents([][]events.Event{a, b}, 2)
	if len(got) != 2 || got[0].ID != "02" || got[1].ID != "03" {
		t.Fatalf("merged %+v, want 02 and 03 (the newest 2, once each)", got)
	}

	var text bytes.Buffer
	p := &eventPrinter{w: &text, seen: map[string]bool{}}
	p.print(got...)
	p.print(got[1]) // a stream repeats it: printed once
	want := "2026-12-05T10:00:00.000Z db3 promotion: two, only db3 has it epoch=3 why=\"the primary is gone\"\n" +
		"2026-12-05T10:00:00.000Z db2 promotion: three epoch=3 why=\"the primary is gone\"\n"
	if text.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", text.String(), want)
	}

	for _, n := range []int{0, 2} {
		var out bytes.Buffer
		p := &eventPrinter{w: &out, json: true, seen: map[string]bool{}}
		p.print(got[:n]...)
		p.end()
		var back []events.Event
		if err := json.Unmarshal(out.Bytes(), &back); err != nil || len(back) != n {
			t.Errorf("JSON of %d events: %v, %d back:\n%s", n, err, len(back), out.String())
		}
	}
	var lines bytes.Buffer
	p = &eventPrinter{w: &lines, json: true, lines: true, seen: map[string]bool{}}
	p.print(got...)
	for _, l := range strings.Split(strings.TrimSpace(lines.String()), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Errorf("follow's JSON line %q: %v", l, err)
		}
	}
}
