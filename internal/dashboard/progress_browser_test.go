package dashboard_test

// Progress on the dashboard, in the browser.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/dashboard"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Put is a task whose handler reports Done of Total every 20 ms (the core
// writes at most every 250 ms) until the test ends.
type Put struct {
	Done  int64 `msgpack:"done"`
	Total int64 `msgpack:"total"`
}

func (Put) Kind() string { return "uploads.put" }

// TestDashboardProgressInBrowser: the task page shows a running task's
// progress as a bar with its numbers, the queue's running list a column of
// bars, the group page the members' work summed and each member's bar, the
// groups list the sums; every bar has an accessible name, a live update
// keeps them, and at 375 px nothing is wider than the screen.
func TestDashboardProgressInBrowser(t *testing.T) {
	b := startBrowser(t)
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	testenv.StartWorker(t, env.RDB, q, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, p Put) (int64, error) {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				worker.ReportProgress(ctx, p.Done, p.Total)
				select {
				case <-ctx.Done():
					return 0, context.Cause(ctx)
				case <-tick.C:
				}
			}
		})
	}, true)
	c := testenv.Client(t, env)
	h, err := c.Enqueue(ctx, Put{Done: 12_897_484, Total: 200 << 20}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{
		{Args: Put{Done: 3 << 20, Total: 8 << 20}, Opts: &client.EnqueueOpts{Queue: q}},
		{Args: Put{Done: 1 << 20, Total: 2 << 20}, Opts: &client.EnqueueOpts{Queue: q}},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := inspect.New(env.RDB)
	testenv.Eventually(t, 10*time.Second, "the reports", func() bool {
		page, err := in.Tasks(ctx, q, inspect.ListOpts{State: inspect.StateRunning})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ti := range page.Tasks {
			if ti.Progress != nil {
				n++
			}
		}
		d, err := in.GroupMembers(ctx, g.ID())
		if err != nil {
			t.Fatal(err)
		}
		return n == 3 && d.WorkDone == 4<<20 && d.WorkTotal == 10<<20
	})

	dh, err := dashboard.New(in, dashboard.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", dh)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := srv.URL

	pages := []struct {
		path string
		bars int      // progress bars of the page
		want []string // texts the page shows
	}{
		{"/task?id=" + url.QueryEscape(h.ID()), 1, []string{"Progress", "12.3 MiB of 200 MiB (6%), attempt 1, updated "}},
		{"/queues/" + q + "?state=running", 3, []string{"Progress", "12.3 MiB of 200 MiB (6%)", "3 MiB of 8 MiB (37%)", "1 MiB of 2 MiB (50%)"}},
		{"/group?id=" + url.QueryEscape(g.ID()), 3, []string{"Work its members reported:", "4 MiB of 10 MiB (40%)", "3 MiB of 8 MiB (37%)", "1 MiB of 2 MiB (50%)"}},
		{"/groups?queue=" + q, 1, []string{"4 MiB of 10 MiB (40%)"}},
	}
	tb := b.newTab(t)
	check := func(path string, bars int, want []string) {
		t.Helper()
		text := eval[string](tb, `document.body.innerText`)
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: no %q in the page's text:\n%.3000s", path, w, text)
			}
		}
		// Every bar has a name that says the numbers; the work bars a
		// value and a max (the group's member bar counts members).
		got := eval[[]string](tb, `Array.from(document.querySelectorAll("progress"), p => (p.getAttribute("aria-label") || "") + "|" + p.value + "|" + p.max)`)
		work := 0
		for _, s := range got {
			label, _, _ := strings.Cut(s, "|")
			if label == "" {
				t.Errorf("%s: a progress bar without an accessible name: %q", path, s)
			}
			if strings.Contains(label, "MiB") {
				work++
			}
		}
		if work != bars {
			t.Errorf("%s: %d work bars, want %d: %q", path, work, bars, got)
		}
	}
	for _, p := range pages {
		tb.open(base + p.path)
		check(p.path, p.bars, p.want)
		if p.path == pages[0].path {
			if v := eval[[]float64](tb, `(p => [p.value, p.max])(document.querySelector("dd.progress progress"))`); len(v) != 2 || v[0] != 12_897_484 || v[1] != 200<<20 {
				t.Errorf("the task's bar: value, max %v", v)
			}
		}
		liveUpdate(tb, base+p.path)
		check(p.path+" after a live update", p.bars, p.want)
		tb.checkClean("GET " + p.path)
	}

	narrow := b.newTab(t)
	narrow.do("narrow viewport", chromedp.EmulateViewport(375, 740, chromedp.EmulateMobile, chromedp.EmulateTouch))
	for _, p := range pages {
		narrow.open(base + p.path)
		if got := eval[[]int](narrow, `[document.documentElement.scrollWidth, document.documentElement.clientWidth]`); got[0] > got[1]+1 {
			wide := eval[[]string](narrow, `Array.from(document.querySelectorAll("body *")).filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && !e.closest(".scroll")).slice(0, 8).map(e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "") + " right=" + Math.round(e.getBoundingClientRect().right))`)
			t.Errorf("%s at 375 px: the page is %d px wide in a %d px viewport; past the edge: %q", p.path, got[0], got[1], wide)
		}
		narrow.checkClean("narrow " + p.path)
	}
}
