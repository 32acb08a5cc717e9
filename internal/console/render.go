package console

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/events"
)

//go:embed assets
var assets embed.FS

var (
	css = mustRead("assets/console.css")
	js  = mustRead("assets/console.js")
	// tmpl holds the page, its "event" line and the "view" section.
	tmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
		"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"clock":   func(t time.Time) string { return t.UTC().Format("15:04:05") },
		"ago":     ago,
		"bytes":   byteSize,
		"join":    func(s []string) string { return strings.Join(s, ", ") },
		"attrs":   attrs,
	}).ParseFS(assets, "assets/page.html", "assets/view.html"))
)

func mustRead(name string) string {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Page writes the whole page: the view, the newest events (newest first)
// and the script that keeps them current. The CSS and the script are in
// the page: one request, then the stream.
func Page(w io.Writer, v View, evs []events.Event, eventsNote string) error {
	var section bytes.Buffer
	if err := ViewHTML(&section, v); err != nil {
		return err
	}
	newestFirst := slices.Clone(evs)
	slices.Reverse(newestFirst)
	return tmpl.ExecuteTemplate(w, "page.html", map[string]any{
		"View":       v,
		"ViewHTML":   template.HTML(section.String()),
		"Events":     newestFirst,
		"EventsNote": eventsNote,
		"CSS":        template.CSS(css),
		"JS":         template.JS(js),
	})
}

// ViewHTML writes the view's section, which the stream sends again each
// time it changes.
func ViewHTML(w io.Writer, v View) error {
	return tmpl.ExecuteTemplate(w, "view", v)
}

// EventHTML writes one line of the timeline.
func EventHTML(w io.Writer, e events.Event) error {
	return tmpl.ExecuteTemplate(w, "event", e)
}

// ago says how long before now t was, coarsely: "12s ago", "5m ago".
func ago(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

// byteSize prints a count of bytes for people.
func byteSize(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
}

// attrs prints an event's details as key=value, sorted.
func attrs(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k + "=" + m[k])
	}
	return b.String()
}
