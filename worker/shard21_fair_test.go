package worker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// Every physical queue of a sharded queue that has a backlog gets its
// share of the fetches, counted in tasks: with the plain queue and four
// shards all backlogged, each runs about a fifth of the first tasks.
func TestShardsEveryBackloggedShardGetsItsShare(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const per, counted = 60, 200
	specs := func(n int) []client.Spec {
		out := make([]client.Spec, n)
		for i := range out {
			out[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
		}
		return out
	}
	// The plain queue's backlog, from before the declaration.
	hs, err := b.c.EnqueueMany(ctx, specs(per))
	if err != nil {
		t.Fatal(err)
	}
	names := declare(t, b, 4)
	more, err := b.c.EnqueueMany(ctx, specs(4*per)) // round-robin: per on each shard
	if err != nil {
		t.Fatal(err)
	}
	hs = append(hs, more...)
	var mu sync.Mutex
	ran, seen := map[string]int{}, 0
	b.worker(t, &worker.Config{Concurrency: 1, FetchBatch: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			defer mu.Unlock()
			if seen < counted {
				seen++
				ran[tk.Queue]++
			}
			return 0, nil
		})
	})
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// A fetch tries the five queues in a uniformly random order: each
	// runs 40 of the first 200 on average, with a standard deviation of
	// about 5.7. 15 is more than four of them below.
	for _, q := range append([]string{b.queue}, names...) {
		if ran[q] < 15 {
			t.Errorf("queue %s ran %d of the first %d tasks, want about %d: %v", q, ran[q], counted, counted/5, ran)
		}
	}
}
