package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

func TestFmtProgress(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 12_897_484: "12.3 MiB",
		200 << 20: "200 MiB", 5 << 30: "5 GiB", 1 << 62: "4 EiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
	now := time.Date(2026, 12, 5, 18, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		p    inspect.Progress
		want string
	}{
		{inspect.Progress{Done: 12_897_484, Total: 200 << 20, Attempt: 2, Updated: now.Add(-1200 * time.Millisecond)}, "12.3 MiB of 200 MiB (6%), attempt 2, 1s ago"},
		{inspect.Progress{Done: 4096, Attempt: 1, Updated: now}, "4 KiB (total not known yet), attempt 1, 0s ago"},
		{inspect.Progress{Done: 1 << 20, Total: 1 << 20, Attempt: 1, Updated: now.Add(2 * time.Second)}, "1 MiB of 1 MiB (100%), attempt 1, just now"},
	} {
		if got := fmtProgress(c.p, now); got != c.want {
			t.Errorf("fmtProgress(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}

// cUpload's handler reports Done of Total every 20 ms (the core writes at
// most every 250 ms) until release is closed, then succeeds.
type cUpload struct {
	Done  int64 `msgpack:"done"`
	Total int64 `msgpack:"total"`
}

func (cUpload) Kind() string { return "cli.upload" }

// task show prints a running task's progress ("1 MiB of 2 MiB (50%),
// attempt 1, 0s ago"; -json: the numbers), groups a group's work, and
// group -watch the members' work in a second bar until the group ends,
// then its line with the work whole.
func TestCLIProgress(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	release := make(chan struct{})
	testenv.StartWorker(t, tg.RDB, queue, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, u cUpload) (int64, error) {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				worker.ReportProgress(ctx, u.Done, u.Total)
				select {
				case <-release:
					return u.Total, nil
				case <-ctx.Done():
					return 0, context.Cause(ctx)
				case <-tick.C:
				}
			}
		})
	}, true)
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	h, err := c.Enqueue(ctx, cUpload{Done: 1 << 20, Total: 2 << 20}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{
		{Args: cUpload{Done: 1 << 20, Total: 2 << 20}, Opts: &client.EnqueueOpts{Queue: queue}},
		{Args: cUpload{Done: 512 << 10, Total: 1 << 20}, Opts: &client.EnqueueOpts{Queue: queue}},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the reports", func() bool {
		p, err := g.Progress(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hp, err := h.Progress(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p.WorkDone == 1536<<10 && p.WorkTotal == 3<<20 && hp.Reported()
	})

	// The text is aligned in columns.
	if out := tg.cmd(t, 0, "task", "show", h.ID()); !regexp.MustCompile(`(?m)^progress +1 MiB of 2 MiB \(50%\), attempt 1, (\d+s ago|just now)$`).MatchString(out) {
		t.Errorf("task show: no progress line in\n%s", out)
	}
	js := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", h.ID(), "-json"))
	if p, _ := js["progress"].(map[string]any); p["done"] != float64(1<<20) || p["total"] != float64(2<<20) || p["attempt"] != float64(1) || p["updated"] == nil {
		t.Errorf("task show -json: progress %v", js["progress"])
	}
	if out := tg.cmd(t, 0, "groups", "-queue", queue); !regexp.MustCompile(`(?m)^ID .* WORK$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(g.ID())+` .* 1\.5 MiB of 3 MiB \(50%\)$`).MatchString(out) {
		t.Errorf("groups:\n%s", out)
	}
	if out := tg.cmd(t, 0, "group", g.ID()); !regexp.MustCompile(` 0/2 done +0 succeeded +0 failed +1\.5 MiB of 3 MiB \(50%\)$`).MatchString(out) {
		t.Errorf("group: %q", out)
	}

	// group -watch: it draws the work while the group runs (told through
	// watchDrew: mpb draws no bar on an output that is not a terminal),
	// then the group ends, and so does the watch, with the group's line.
	drew := make(chan patterns.Progress, 100)
	watchDrew = func(p patterns.Progress) {
		select {
		case drew <- p:
		default:
		}
	}
	t.Cleanup(func() { watchDrew = nil })
	var wout, werr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- runCLIContext(ctx, []string{"group", g.ID(), "-watch"}, nil, &wout, &werr, tg.getenv)
	}()
	select {
	case p := <-drew:
		if p.WorkDone != 1536<<10 || p.WorkTotal != 3<<20 || p.Ended() {
			t.Errorf("group -watch drew %+v", p)
		}
	case code := <-done:
		t.Fatalf("group -watch ended before the group: exit %d\n%s%s", code, wout.String(), werr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("group -watch drew nothing")
	}
	close(release)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("group -watch: exit %d\n%s", code, werr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("group -watch did not end with its group")
	}
	if s := wout.String(); !regexp.MustCompile(` succeeded +2/2 done +2 succeeded +0 failed +3 MiB of 3 MiB \(100%\)$`).MatchString(strings.TrimSpace(s)) {
		t.Errorf("group -watch output:\n%s", s)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if out := tg.cmd(t, 0, "task", "show", h.ID()); !regexp.MustCompile(`(?m)^progress +2 MiB of 2 MiB \(100%\), attempt 1, `).MatchString(out) {
		t.Errorf("task show of the succeeded task:\n%s", out)
	}
}
