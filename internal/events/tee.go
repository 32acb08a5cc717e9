package events

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Tee returns a slog handler that passes every record to next and, for a
// record with the attribute Attr (on the record itself, not added with
// With), also records it in l as an event of that kind: its message and its other attributes (those added with With too,
// but not "node", which the event carries already, nor "component").
// Records below Info are never events.
func Tee(next slog.Handler, l *Log) slog.Handler {
	return &tee{next: next, log: l}
}

type tee struct {
	next   slog.Handler
	log    *Log
	attrs  []slog.Attr // from WithAttrs, group-qualified
	groups string      // the open groups, "a.b."
}

func (t *tee) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo || t.next.Enabled(ctx, level)
}

func (t *tee) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		t.maybeRecord(r)
	}
	if !t.next.Enabled(ctx, r.Level) {
		return nil
	}
	return t.next.Handle(ctx, r)
}

func (t *tee) maybeRecord(r slog.Record) {
	kind := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == Attr && t.groups == "" {
			kind = a.Value.String()
			return false
		}
		return true
	})
	if kind == "" {
		return
	}
	attrs := map[string]string{}
	add := func(prefix string, a slog.Attr) { flatten(attrs, prefix, a) }
	for _, a := range t.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(t.groups, a)
		return true
	})
	for _, k := range []string{Attr, "node", "component"} {
		delete(attrs, k)
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	t.log.Record(Event{At: r.Time, Kind: kind, Level: r.Level.String(), Message: r.Message, Attrs: attrs})
}

// flatten writes a's value under its group-qualified key.
func flatten(into map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			flatten(into, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	s := v.String()
	if err, ok := v.Any().(error); ok && v.Kind() == slog.KindAny {
		s = err.Error()
	} else if v.Kind() == slog.KindAny {
		s = fmt.Sprint(v.Any())
	}
	into[prefix+a.Key] = s
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next = t.next.WithAttrs(as)
	c.attrs = append([]slog.Attr(nil), t.attrs...)
	for _, a := range as {
		if t.groups != "" {
			a = slog.Group(strings.TrimSuffix(t.groups, "."), a)
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (t *tee) WithGroup(name string) slog.Handler {
	if name == "" {
		return t
	}
	c := *t
	c.next = t.next.WithGroup(name)
	c.groups = t.groups + name + "."
	return &c
}
