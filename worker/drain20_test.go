package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// BoundArgs is a task of TestConcurrencyBoundsHandlers (a kind of its own).
type BoundArgs struct{ N int }

func (BoundArgs) Kind() string { return "bound" }

// A handler's slot is free once it returns, before its outcome is recorded
// (the entry stays held until then): Concurrency still bounds how many
// handlers run at once, whatever the reads and completions in flight.
func TestConcurrencyBoundsHandlers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var pk peak
	b.worker(t, &worker.Config{Concurrency: 3, FetchBatch: 64}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a BoundArgs) (int, error) {
			pk.enter()
			defer pk.leave()
			t := time.NewTimer(time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return a.N, nil
		})
	})
	ctx := ctxT(t)
	specs := make([]client.Spec, 120)
	for i := range specs {
		specs[i] = client.Spec{Args: BoundArgs{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if v, err := client.Result[int](ctx, h); err != nil || v != i {
			t.Fatalf("task %d: %d, %v", i, v, err)
		}
	}
	if m := pk.max.Load(); m > 3 {
		t.Errorf("most handlers running at once: %d, want at most 3 (Concurrency)", m)
	}
}
