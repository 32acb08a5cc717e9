package report

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestBrowser opens the sample drill's report from a file in headless
// Chromium (Debian's chromium), as a person would, and checks what the
// browser made of it: the verdict, a bar per fault and a lane per part
// laid out on the axis, failed operations drawn where the outage was,
// the reasons, and no request beyond the file itself. It keeps a
// screenshot of the whole page: $HAVEN_ARTIFACTS/drill-report.png when
// the variable is set, else in the test's temporary directory.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := testenv.NeedCommand(t, "chromium", "chromium")

	dir := t.TempDir()
	page := filepath.Join(dir, "drill-report.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := HTML(f, sample()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		// Tests run as root, and Chromium's sandbox refuses root.
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1100, 900),
		// Its own profile in the test's directory, removed with it.
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		// Its singleton socket too: Chromium makes it in TMPDIR and
		// leaves it there when it is killed.
		chromedp.Env("TMPDIR="+dir),
	)
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(stopAlloc)
	bctx, stopBrowser := chromedp.NewContext(actx)
	// Close the browser before the profile directory is removed
	// (cleanups run last first).
	t.Cleanup(stopBrowser)

	fileURL := (&url.URL{Scheme: "file", Path: page}).String()
	// Open the tab first, so that the listener sees every request of
	// the page; it hears of each before the command that made it returns.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	var requests requestLog
	if err := chromedp.Listen(bctx, requests.add); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(fileURL), chromedp.WaitVisible(chromedp.ID("timeline"))); err != nil {
		t.Fatalf("open %s: %v", fileURL, err)
	}

	run := func(what, js string, v any) {
		t.Helper()
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[[]byte](js))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: %v in %s", what, err, raw)
		}
	}

	var verdict struct {
		Text, Met, Color string
	}
	run("the verdict", `(() => { const v = document.getElementById("verdict");
		return {text: v.textContent, met: v.dataset.met, color: getComputedStyle(v).backgroundColor}; })()`, &verdict)
	if verdict.Text != "NOT MET" || verdict.Met != "false" {
		t.Errorf("verdict: %q data-met=%q, want NOT MET, false", verdict.Text, verdict.Met)
	}
	if verdict.Color != "rgb(207, 34, 46)" {
		t.Errorf("the verdict's colour is %s, want the red of NOT MET", verdict.Color)
	}

	// Boxes as laid out: a fault bar and a lane each take room, and the
	// 10s fault spans half the plot of the 20s drill.
	type box struct{ X, W, H float64 }
	var layout struct {
		Plot   box
		Faults []box
		Lanes  []struct {
			Part, Met string
			Box       box
			// Failed are the failed buckets' offsets, in seconds.
			Failed []float64
		}
	}
	run("the layout", `(() => {
		const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, w: r.width, h: r.height}; };
		return {
			plot: box(document.querySelector("#timeline .lane-bg")),
			faults: [...document.querySelectorAll("#timeline .fault")].map(box),
			lanes: [...document.querySelectorAll("#timeline .lane")].map(l => ({
				part: l.dataset.part, met: l.dataset.met, box: box(l),
				failed: [...l.querySelectorAll(".bucket.failed")].map(b => parseFloat(b.dataset.at)),
			})),
		}; })()`, &layout)
	if len(layout.Faults) != 2 {
		t.Fatalf("fault bars: %d, want 2", len(layout.Faults))
	}
	for i, f := range layout.Faults {
		if f.W <= 0 || f.H <= 0 {
			t.Errorf("fault bar %d is not drawn: %+v", i, f)
		}
	}
	if half := layout.Plot.W / 2; layout.Faults[0].W < half-2 || layout.Faults[0].W > half+2 {
		t.Errorf("the 10s fault's bar is %.1f wide, want half the plot's %.1f", layout.Faults[0].W, layout.Plot.W)
	}
	if x, want := layout.Faults[0].X-layout.Plot.X, layout.Plot.W*sampleFault.Seconds()/sampleLength.Seconds(); x < want-2 || x > want+2 {
		t.Errorf("the fault starts %.1f into the plot, want %.1f (3s of 20s)", x, want)
	}
	if len(layout.Lanes) != 2 {
		t.Fatalf("lanes: %d, want 2", len(layout.Lanes))
	}
	for i, l := range layout.Lanes {
		want := []string{"database:true", "web:false"}[i]
		if got := l.Part + ":" + l.Met; got != want {
			t.Errorf("lane %d: %s, want %s", i, got, want)
		}
		if l.Box.H <= 0 {
			t.Errorf("lane %s is not drawn", l.Part)
		}
		if len(l.Failed) == 0 {
			t.Errorf("lane %s: no failed bucket", l.Part)
		}
		for _, at := range l.Failed {
			if at < sampleFault.Seconds() || at > sampleWebBack.Seconds() {
				t.Errorf("lane %s: a failed bucket at %.2fs, outside the outage (%s to %s)", l.Part, at, sampleFault, sampleWebBack)
			}
		}
	}

	var reasons string
	run("the reasons", `document.getElementById("reasons").innerText`, &reasons)
	if !strings.Contains(reasons, sampleWebReason) {
		t.Errorf("reasons: %q, want %q", reasons, sampleWebReason)
	}

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(dir, "drill-report.png")
	if a := os.Getenv("HAVEN_ARTIFACTS"); a != "" {
		if err := os.MkdirAll(a, 0o755); err != nil {
			t.Fatal(err)
		}
		shot = filepath.Join(a, "drill-report.png")
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the report: %s (%d bytes)", shot, len(png))

	// The page asked for nothing but itself.
	if got := requests.other(fileURL); len(got) > 0 {
		t.Errorf("the page asked for more than itself: %s", strings.Join(got, ", "))
	}
}

// requestLog keeps the URLs of the requests the browser made.
type requestLog struct {
	mu   sync.Mutex
	urls []string
}

func (l *requestLog) add(ev any) {
	if r, ok := ev.(*network.EventRequestWillBeSent); ok {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.urls = append(l.urls, r.Request.URL)
	}
}

// other returns the requests for anything but page.
func (l *requestLog) other(page string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(l.urls), func(u string) bool { return u == page })
}
