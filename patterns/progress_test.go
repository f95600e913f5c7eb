package patterns_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Chunk is a member that reports half of Size done, waits for the test,
// and then succeeds (or fails for good, with Fail).
type Chunk struct {
	Size int64
	Fail bool
}

func (Chunk) Kind() string { return "chunk" }

// Group.Progress sums what the members reported: while they run, their
// reports as written; once they ended, a member that succeeded counts as
// done in full and one that failed by its last report. The group's
// progress hash takes the group's lifetime when it ends.
func TestGroupProgressSumsWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	gate := make(chan struct{})
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Chunk) (int, error) {
			worker.ReportProgress(ctx, a.Size/2, a.Size)
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
			if a.Fail {
				return 0, worker.Permanent(errNegative)
			}
			return 0, nil
		})
	})
	specs := []client.Spec{
		{Args: Chunk{Size: 100}, Opts: &client.EnqueueOpts{Queue: b.queue}},
		{Args: Chunk{Size: 200, Fail: true}, Opts: &client.EnqueueOpts{Queue: b.queue}},
		{Args: Chunk{Size: 300}, Opts: &client.EnqueueOpts{Queue: b.queue}},
	}
	g, err := patterns.ForkJoin(ctx, b.c, specs, nil, &patterns.GroupOpts{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var p patterns.Progress
	testenv.Eventually(t, 10*time.Second, "every member's first report in the group's sums", func() bool {
		p, err = g.Progress(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p.WorkTotal == 600
	})
	if p.WorkDone != 300 || p.State != patterns.GroupRunning {
		t.Fatalf("while running: %+v, want 300 of 600 done", p)
	}
	close(gate)
	p, err = g.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.WorkDone != 100+100+300 || p.WorkTotal != 600 || p.State != patterns.GroupFailed {
		t.Fatalf("at the end: %+v, want 500 of 600 (the failed member's last report, the others in full)", p)
	}
	home, own, err := keys.SplitGroupID(g.ID())
	if err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(home)
	gTTL := b.env.RDB.PTTL(ctx, q.Group(own)).Val()
	pTTL := b.env.RDB.PTTL(ctx, q.GroupProgress(own)).Val()
	if gTTL <= 0 || pTTL <= 0 || pTTL > gTTL+time.Second || pTTL < gTTL-5*time.Second {
		t.Fatalf("group hash TTL %v, its progress hash's %v: want the group's retention on both", gTTL, pTTL)
	}
}
