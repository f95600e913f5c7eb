package dashboard_test

// The dashboard in a real browser (issue 17): Debian's chromium, headless,
// against the known workload of workload_browser_test.go. See
// docs/design-17-browser.md for how to run them and what they check.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// TestDashboardInBrowser loads every page of the dashboard in chromium
// against a known workload, and clicks through its actions: one browser,
// one workload, a tab per subtest.
func TestDashboardInBrowser(t *testing.T) {
	b := startBrowser(t)
	w := newWorkload(t)
	ui := w.serve(t, "/ui") // as worker -ui mounts it
	t.Run("pages", func(t *testing.T) { testPages(t, b, w, ui) })
	t.Run("hostile", func(t *testing.T) { testHostile(t, b, w, ui) })
	t.Run("args-as-given", func(t *testing.T) { testArgsAsGiven(t, b, w, ui) })
	t.Run("retry", func(t *testing.T) { testRetry(t, b, w, ui) })
	t.Run("pause", func(t *testing.T) { testPause(t, b, w, ui) })
	t.Run("live", func(t *testing.T) { testLive(t, b, w, ui) })
	t.Run("narrow", func(t *testing.T) { testNarrow(t, b, w, ui) })
	t.Run("screenshots", func(t *testing.T) { testScreenshots(t, b, w, ui) })
}

// uiPage is one page of the dashboard and what it must show.
type uiPage struct {
	path string
	want []string // texts the page shows
}

func (w *workload) pages() []uiPage {
	q := url.QueryEscape
	return []uiPage{
		{"/", []string{qEmails, qReports, qBilling, qImport, "paused", qUploads, "3 shards"}},
		{"/queues/" + qUploads, []string{"Shards", "plain", w.Shards[0], w.Shards[2], "upload-"}},
		{"/queues/" + w.Shards[1] + "?state=waiting", []string{"Shard 1 of the sharded queue", qUploads}},
		{"/queues/" + qEmails, []string{"welcome-a", "ada@example.com", "Pause queue"}},
		{"/queues/" + qEmails + "?state=scheduled", []string{"reminder", "barbara@example.com"}},
		{"/queues/" + qReports + "?state=dead", []string{"report-7", w.DeadMsg, "Retry all dead"}},
		{"/queues/" + qBilling, []string{"paused", "Resume queue"}},
		{"/task?id=" + q(w.Dead[0]), []string{w.DeadMsg, "Attempts", "reports.build"}},
		{"/task?id=" + q(w.Waiting[0]), []string{"ada@example.com", "emails.send"}},
		{"/groups", []string{"quarterly-close", "50%"}},
		{"/group?id=" + q(w.Group), []string{"quarterly-close", "2 of 4 members ended", "succeeded 2", "pending 2"}},
		{"/repeats", []string{w.Repeat, "emails.send"}},
		{"/workers", []string{qReports + "=1"}},
		{"/throttles", []string{"Concurrency limits", "Rate buckets", "partner:acme"}},
		{"/queues/" + qReports + "?state=held", []string{"partner:acme"}},
	}
}

// testPages loads every page, mounted at the root (as `worker dashboard`
// serves it) and at /ui (as `worker -ui` does): the expected content is
// there, nothing goes wrong in the console or on the network, every link
// of the page leads to a page that answers 200, and at /ui a live
// update of each page is applied without an error.
func testPages(t *testing.T, b *browser, w *workload, ui string) {
	root := w.serve(t, "")
	for _, base := range []string{root, ui} {
		tb := b.newTab(t)
		links := map[string]bool{}
		for _, p := range w.pages() {
			tb.open(base + p.path)
			text := eval[string](tb, `document.body.innerText`)
			for _, want := range p.want {
				if !strings.Contains(text, want) {
					t.Errorf("%s%s: no %q in the page's text:\n%.3000s", base, p.path, want, text)
				}
			}
			if base == ui {
				liveUpdate(tb, base+p.path)
			}
			for _, l := range eval[[]string](tb, `Array.from(document.querySelectorAll("a[href]"), a => a.href)`) {
				links[l] = true
			}
			tb.checkClean("GET " + base + p.path)
		}
		// Every link of every page: same site, under the base path, 200.
		for l := range links {
			if !strings.HasPrefix(l, base+"/") {
				t.Errorf("link %s leaves the dashboard at %s", l, base)
				continue
			}
			resp, err := http.Get(l)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("link %s: %d", l, resp.StatusCode)
			}
		}
	}
}

// liveUpdate waits for the page's next live update to be applied: the
// script sets its status line to "live" once it replaced the regions
// from the answer, and to "updates paused: ..." when the request or the
// update failed (it catches the error: the console would not show it).
// The line reads "probe" until then.
func liveUpdate(tb *tab, what string) {
	tb.t.Helper()
	eval[string](tb, `document.getElementById("live-status").textContent = "probe"`)
	tb.waitJS("a live update of "+what, `document.getElementById("live-status").textContent !== "probe"`)
	if s := eval[string](tb, `document.getElementById("live-status").textContent`); s != "live" {
		tb.t.Errorf("%s: the live update failed: status %q", what, s)
	}
}

// waitPolls waits until the page sent n live-update requests since it was
// loaded (the page sends the next one only after the previous one ended).
func waitPolls(tb *tab, n int) {
	tb.t.Helper()
	tb.waitJS(fmt.Sprintf("%d live updates", n), fmt.Sprintf(
		`performance.getEntriesByType("resource").filter(e => e.name.includes("/api/")).length >= %d`, n))
}

// testHostile: user-controlled strings with a script tag, bytes that are
// not UTF-8 and 100 KB of text (a task's args and meta, a dead task's
// error) render as text, on the queue pages and the task pages (cut, and
// in full), before and after live updates: the DOM holds no script but
// the page's own, no element has an event handler attribute, alert never
// ran, and where the string is shown the text has the tag as typed and
// the HTML has it escaped.
func testHostile(t *testing.T, b *browser, w *workload, ui string) {
	tb := b.newTab(t)
	hostileDead := w.Dead[len(w.Dead)-1]
	for _, p := range []struct {
		path string
		tag  bool // the page shows one of the strings with the tag
		bad  bool // ... and one with the bytes that are not UTF-8
		long bool // ... and the 100 KB one in full
	}{
		{path: "/queues/" + qImport, bad: true},
		{path: "/queues/" + qReports + "?state=dead", tag: true, bad: true},
		{path: "/task?id=" + url.QueryEscape(hostileDead), tag: true, bad: true},
		{path: "/task?id=" + url.QueryEscape(w.Hostile), tag: true, bad: true},
		{path: "/task?id=" + url.QueryEscape(w.Hostile) + "&full=1", tag: true, bad: true, long: true},
	} {
		tb.open(ui + p.path)
		check := func(when string) {
			t.Helper()
			scripts := eval[[]string](tb, `Array.from(document.querySelectorAll("script"), s => s.src || "inline: " + s.textContent.slice(0, 80))`)
			if want := []string{ui + "/static/app.js"}; !slices.Equal(scripts, want) {
				t.Errorf("%s %s: scripts %q, want only the page's own %q", p.path, when, scripts, want)
			}
			if on := eval[[]string](tb, `Array.from(document.querySelectorAll("*")).flatMap(e => Array.from(e.attributes).filter(a => a.name.startsWith("on")).map(a => e.tagName + " " + a.name))`); len(on) > 0 {
				t.Errorf("%s %s: event handler attributes in the DOM: %q", p.path, when, on)
			}
			if d := eval[[]string](tb, `window.__dialogs`); len(d) > 0 {
				t.Errorf("%s %s: dialogs called: %q", p.path, when, d)
			}
			text := eval[string](tb, `document.body.innerText`)
			if p.tag {
				if !strings.Contains(text, hostileScript) {
					t.Errorf("%s %s: %s is not in the page's text", p.path, when, hostileScript)
				}
				if html := eval[string](tb, `document.body.innerHTML`); !strings.Contains(html, "&lt;script&gt;alert(1)&lt;/script&gt;") {
					t.Errorf("%s %s: the script tag is not escaped in the HTML", p.path, when)
				}
			}
			// The bytes that are not UTF-8 show as replacement characters
			// (JSON's \ufffd in args, the character itself elsewhere).
			if p.bad && !strings.Contains(text, `\ufffd`) && !strings.Contains(text, "\ufffd") {
				t.Errorf("%s %s: no replacement character for the invalid bytes in the page's text", p.path, when)
			}
			if p.long && !strings.Contains(text, hostileLong) {
				t.Errorf("%s %s: the 100 KB string is not shown in full", p.path, when)
			}
		}
		check("as loaded")
		liveUpdate(tb, p.path) // the regions are replaced from the JSON
		check("after a live update")
		tb.checkClean("GET " + p.path)
	}
}

// testArgsAsGiven: a task's args show as the producer gave them, a string
// with a script tag as that text (escaped in the HTML, as every value),
// not as JSON's \u003c escapes of it.
func testArgsAsGiven(t *testing.T, b *browser, w *workload, ui string) {
	tb := b.newTab(t)
	tb.open(ui + "/task?id=" + url.QueryEscape(w.Hostile) + "&full=1")
	text := eval[string](tb, `document.querySelector("pre code") ? document.querySelector("pre code").innerText : ""`)
	if want := `"name": "` + hostileScript + `"`; !strings.Contains(text, want) {
		i := strings.Index(text, `"name"`)
		t.Errorf("the args show the name as %.80q; want %s", text[max(i, 0):], want)
	}
	tb.checkClean("args")
}

// testRetry clicks Retry on a dead task: the form posts with its CSRF
// token, the task leaves the dead list, and the inspector agrees (the
// worker runs it again, and it succeeds now).
func testRetry(t *testing.T, b *browser, w *workload, ui string) {
	ctx := context.Background()
	id := w.Dead[1]
	tb := b.newTab(t)
	tb.open(ui + "/queues/" + qReports + "?state=dead")
	btn := fmt.Sprintf(`button[aria-label=%q]`, "Retry "+id)
	if n := eval[int](tb, fmt.Sprintf(`document.querySelectorAll(%q).length`, btn)); n != 1 {
		t.Fatalf("%d buttons %s on the dead list", n, btn)
	}
	w.healed.Store(true)
	tb.submit("retry", btn)
	// Post, redirect, get: the same list again, with the flash message.
	if f := flash(tb); f != "retried "+id {
		t.Errorf("flash %q after the retry", f)
	}
	if n := eval[int](tb, fmt.Sprintf(`document.querySelectorAll(%q).length`, btn)); n != 0 {
		t.Errorf("the dead list still has %s after the retry", btn)
	}
	if !strings.Contains(eval[string](tb, `document.body.innerText`), "report-7") {
		t.Errorf("the other dead task left the list too")
	}
	testenv.Eventually(t, browserTimeout, "the retried task to succeed", func() bool {
		ti, err := w.in.Task(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if ti.State == inspect.StateDead {
			t.Fatalf("the inspector has %s dead after the page retried it", id)
		}
		return ti.State == inspect.StateSucceeded
	})
	q, err := w.in.Queue(ctx, qReports)
	if err != nil {
		t.Fatal(err)
	}
	if q.Dead != int64(len(w.Dead)-1) {
		t.Errorf("queue %s has %d dead tasks, want %d", qReports, q.Dead, len(w.Dead)-1)
	}
	tb.checkClean("retry")
}

// flash is the page's flash message ("" without one).
func flash(tb *tab) string {
	tb.t.Helper()
	return eval[string](tb, `(document.querySelector(".flash") || {textContent: ""}).textContent`)
}

// redisMs is the Redis server's clock in Unix ms.
func redisMs(t *testing.T, w *workload) int64 {
	t.Helper()
	now, err := w.env.RDB.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now.UnixMilli()
}

// testPause pauses a queue from its page while a real worker serves it: a
// task enqueued once the pause is in force (1 s of Redis time after the
// click's answer: the library's promise) stays waiting while the worker
// keeps running and reports the queue paused; Resume from the page, and
// the task runs.
func testPause(t *testing.T, b *browser, w *workload, ui string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ran atomic.Int64
	testenv.StartWorker(t, w.env.RDB, qThumbs, nil, func(wk *worker.Worker) {
		worker.Handle(wk, func(ctx context.Context, th Thumb) (Thumb, error) {
			ran.Add(1)
			return th, nil
		})
	}, false)
	enqueue := func(n int) *client.Handle {
		t.Helper()
		h, err := w.c.Enqueue(ctx, Thumb{N: n}, &client.EnqueueOpts{Queue: qThumbs})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	// The worker serves the queue.
	if _, err := enqueue(1).Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	tb := b.newTab(t)
	tb.open(ui + "/queues/" + qThumbs)
	tb.submit("pause", `form[action$="/actions/pause"] button`)
	if f := flash(tb); !strings.HasPrefix(f, "paused thumbs") {
		t.Fatalf("flash %q after the pause", f)
	}
	paused := redisMs(t, w) // Pause ran before this
	if n := eval[int](tb, `document.querySelectorAll('form[action$="/actions/resume"] button').length`); n != 1 {
		t.Errorf("the paused queue's page has %d Resume buttons", n)
	}
	if q, err := w.in.Queue(ctx, qThumbs); err != nil || !q.Paused {
		t.Fatalf("inspector: %+v, %v; want the queue paused", q, err)
	}
	// A worker fetches nothing of a paused queue later than 1 s after
	// Pause: enqueue after that, then watch 2 s of Redis time (the
	// worker's blocking reads end every 50 ms) with the task waiting.
	testenv.Eventually(t, browserTimeout, "1 s of Redis time after the pause", func() bool { return redisMs(t, w) >= paused+1000 })
	h := enqueue(2)
	from := redisMs(t, w)
	testenv.Eventually(t, browserTimeout, "2 s of Redis time with the task waiting", func() bool {
		ti, err := w.in.Task(ctx, h.ID())
		if err != nil {
			t.Fatal(err)
		}
		if ti.State != inspect.StateWaiting {
			t.Fatalf("task %s is %s while its queue is paused; want waiting", h.ID(), ti.State)
		}
		return redisMs(t, w) >= from+2000
	})
	if n := ran.Load(); n != 1 {
		t.Fatalf("the handler ran %d times; want once (before the pause)", n)
	}
	// The worker runs meanwhile, and knows the queue is paused.
	testenv.Eventually(t, browserTimeout, "the worker to report the queue paused", func() bool {
		ws, err := w.in.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, wi := range ws {
			if _, ok := wi.Queues[qThumbs]; ok {
				return slices.Contains(wi.Paused, qThumbs)
			}
		}
		t.Fatalf("no live worker serves %s: %+v", qThumbs, ws)
		return false
	})
	tb.submit("resume", `form[action$="/actions/resume"] button`)
	if f := flash(tb); f != "resumed thumbs" {
		t.Errorf("flash %q after the resume", f)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatalf("the task enqueued while paused, after Resume: %v", err)
	}
	if ti, err := w.in.Task(ctx, h.ID()); err != nil || ti.State != inspect.StateSucceeded {
		t.Errorf("inspector after resume: %s, %v; want succeeded", ti.State, err)
	}
	tb.checkClean("pause and resume")
}

// testLive: the overview's count of a queue's waiting tasks follows new
// enqueues without a reload, and the page sends at most one request a
// second.
func testLive(t *testing.T, b *browser, w *workload, ui string) {
	ctx := context.Background()
	tb := b.newTab(t)
	tb.open(ui + "/")
	_, mark := tb.requestsSince(0)
	cell := fmt.Sprintf(`document.querySelector('a[href=%q]')`, "/ui/queues/"+qEmails+"?state=waiting")
	before, err := strconv.Atoi(eval[string](tb, cell+`.textContent`))
	if err != nil {
		t.Fatal(err)
	}
	eval[bool](tb, `window.__sameDocument = true`)
	for n := range 3 {
		if _, err := w.c.Enqueue(ctx, Email{To: fmt.Sprintf("new%d@example.com", n), Subject: "Hello"}, &client.EnqueueOpts{Queue: qEmails}); err != nil {
			t.Fatal(err)
		}
	}
	tb.waitJS("the waiting count to follow", fmt.Sprintf(`%s.textContent === "%d"`, cell, before+3))
	if !eval[bool](tb, `window.__sameDocument === true`) {
		t.Errorf("the page was reloaded")
	}
	// The rate: over at least three polls, no two requests less than a
	// second apart (in the browser's clock), and no navigation.
	waitPolls(tb, 3)
	reqs, _ := tb.requestsSince(mark)
	if len(reqs) < 3 {
		t.Fatalf("%d requests after the load; want at least 3 polls: %+v", len(reqs), reqs)
	}
	for i, r := range reqs {
		if r.Type == network.ResourceTypeDocument || !strings.Contains(r.URL, "/ui/api/overview") {
			t.Errorf("request %d after the load: %s %s (%s); want only polls of /ui/api/overview", i, r.Method, r.URL, r.Type)
		}
		if i > 0 {
			if gap := r.At - reqs[i-1].At; gap < 1.0 {
				t.Errorf("requests %d and %d %.3f s apart; the page may send at most one a second", i-1, i, gap)
			}
		}
	}
	span := reqs[len(reqs)-1].At - reqs[0].At
	t.Logf("%d polls in %.1f s (one every %.2f s)", len(reqs), span, span/float64(len(reqs)-1))
	tb.checkClean("live")
}

// testNarrow: on a 375 px wide screen no page scrolls sideways (tables
// scroll in their own containers), and the keyboard alone reaches the
// main actions, each with a visible focus.
func testNarrow(t *testing.T, b *browser, w *workload, ui string) {
	tb := b.newTab(t)
	tb.do("narrow viewport", chromedp.EmulateViewport(375, 740, chromedp.EmulateMobile, chromedp.EmulateTouch))
	for _, p := range w.pages() {
		tb.open(ui + p.path)
		if got := eval[[]int](tb, `[document.documentElement.scrollWidth, document.documentElement.clientWidth]`); got[0] > got[1]+1 {
			// The culprits: elements past the right edge outside a scroll
			// container, or positioned out of one (an absolutely
			// positioned element is clipped by a scroll container only
			// when that or an element in it is its containing block).
			wide := eval[[]string](tb, `Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && (!e.closest(".scroll") || ["absolute", "fixed"].includes(getComputedStyle(e).position))).slice(0, 8).map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "") + " position=" + getComputedStyle(e).position + " right=" + Math.round(e.getBoundingClientRect().right) + (e.closest(".scroll") ? " (in .scroll)" : ""))`)
			t.Errorf("%s at 375 px: the page is %d px wide in a %d px viewport; past the edge: %q", p.path, got[0], got[1], wide)
		}
		tb.checkClean("narrow " + p.path)
	}

	// The keyboard: Tab from the top of the dead list of reports.
	tb.open(ui + "/queues/" + qReports + "?state=dead")
	reached := map[string]bool{}
	var order []string
	for range 120 {
		tb.do("tab", chromedp.KeyEvent(kb.Tab))
		var f struct {
			Desc    string `json:"desc"`
			Outline string `json:"outline"`
			Shadow  string `json:"shadow"`
		}
		raw := eval[[]byte](tb, `(e => ({desc: e.tagName.toLowerCase() + ":" + (e.getAttribute("aria-label") || e.textContent.trim().slice(0, 40) || e.id),
			outline: getComputedStyle(e).outlineStyle + " " + getComputedStyle(e).outlineWidth, shadow: getComputedStyle(e).boxShadow}))(document.activeElement)`)
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		if reached[f.Desc] {
			continue
		}
		reached[f.Desc] = true
		order = append(order, f.Desc)
		if strings.HasPrefix(f.Desc, "button:") && strings.HasPrefix(f.Outline, "none") && f.Shadow == "none" {
			t.Errorf("%s has no visible focus (outline %s, box-shadow %s)", f.Desc, f.Outline, f.Shadow)
		}
	}
	if len(order) == 0 || order[0] != "a:Skip to content" {
		t.Errorf("the first Tab stop is %q; want the skip link", order)
	}
	for _, want := range []string{"a:Overview", "button:Pause queue", "button:Retry all dead", "input:id", "button:Retry " + w.Dead[0], "button:Delete " + w.Dead[0]} {
		if !reached[want] {
			t.Errorf("Tab never reached %s; the Tab order: %q", want, order)
		}
	}
	tb.checkClean("keyboard")
}

// envArtifacts names the directory the screenshots are written to
// (default: a temporary directory of the test, named in its log).
const envArtifacts = "ASYNC_ARTIFACTS_DIR"

// envUpdateScreenshot, set to 1, makes the test write the README's
// screenshot, docs/img/dashboard-overview.png.
const envUpdateScreenshot = "ASYNC_UPDATE_SCREENSHOT"

// testScreenshots saves screenshots of the main pages (overview, a queue,
// a task) as artifacts, named by the Redis the run used.
func testScreenshots(t *testing.T, b *browser, w *workload, ui string) {
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	backend := "miniredis"
	switch {
	case os.Getenv(testenv.EnvCluster) != "":
		backend = "cluster-pass-miniredis"
	case w.env.Mini == nil:
		backend = "redis"
	}
	tb := b.newTab(t)
	tb.do("viewport", chromedp.EmulateViewport(1280, 720))
	for _, s := range []struct{ name, path string }{
		{"overview", "/"},
		{"queue", "/queues/" + qReports + "?state=dead"},
		{"task", "/task?id=" + url.QueryEscape(w.Dead[0])},
	} {
		tb.open(ui + s.path)
		png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if len(png) < 8 || string(png[1:4]) != "PNG" {
			t.Fatalf("%s: the screenshot is not a PNG", s.name)
		}
		f := filepath.Join(dir, fmt.Sprintf("dashboard-%s-%s.png", s.name, backend))
		if err := os.WriteFile(f, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s (%d KB)", f, len(png)>>10)
		if s.name == "overview" && os.Getenv(envUpdateScreenshot) == "1" {
			// The README's: the viewport only, 1280x720.
			shot, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatal(err)
			}
			readme := filepath.Join("..", "..", "docs", "img", "dashboard-overview.png")
			if err := os.MkdirAll(filepath.Dir(readme), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(readme, shot, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d KB)", readme, len(shot)>>10)
		}
	}
	tb.checkClean("screenshots")
}
