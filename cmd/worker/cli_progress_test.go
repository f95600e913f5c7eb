package main

import (
	"context"
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

	out := tg.cmd(t, 0, "task", "show", h.ID())
	line := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "progress\t") {
			line = l
		}
	}
	if !strings.HasPrefix(line, "progress\t1 MiB of 2 MiB (50%), attempt 1, ") || !strings.HasSuffix(line, " ago") && !strings.HasSuffix(line, "just now") {
		t.Errorf("task show: progress line %q in\n%s", line, out)
	}
	js := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", h.ID(), "-json"))
	if p, _ := js["progress"].(map[string]any); p["done"] != float64(1<<20) || p["total"] != float64(2<<20) || p["attempt"] != float64(1) || p["updated"] == nil {
		t.Errorf("task show -json: progress %v", js["progress"])
	}
	if out := tg.cmd(t, 0, "groups", "-queue", queue); !strings.Contains(out, "\t1.5 MiB of 3 MiB (50%)") || !strings.Contains(out, "\tWORK") {
		t.Errorf("groups:\n%s", out)
	}
	if out := tg.cmd(t, 0, "group", g.ID()); !strings.HasSuffix(out, "\t0/2 done\t0 succeeded\t0 failed\t1.5 MiB of 3 MiB (50%)") {
		t.Errorf("group: %q", out)
	}

	// group -watch: the work bar shows, then the group ends.
	var wout, werr syncBuf
	done := make(chan int, 1)
	go func() {
		done <- runCLIContext(ctx, []string{"group", g.ID(), "-watch"}, nil, &wout, &werr, tg.getenv)
	}()
	testenv.Eventually(t, 10*time.Second, "the work bar", func() bool {
		return strings.Contains(wout.String(), "work 1.5 MiB / 3.0 MiB")
	})
	close(release)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("group -watch: exit %d\n%s", code, werr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("group -watch did not end with its group")
	}
	if s := wout.String(); !strings.HasSuffix(strings.TrimSpace(s), "\tsucceeded\t2/2 done\t2 succeeded\t0 failed\t3 MiB of 3 MiB (100%)") {
		t.Errorf("group -watch output:\n%s", s)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if out := tg.cmd(t, 0, "task", "show", h.ID()); !strings.Contains(out, "progress\t2 MiB of 2 MiB (100%), attempt 1, ") {
		t.Errorf("task show of the succeeded task:\n%s", out)
	}
}
