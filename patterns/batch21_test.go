package patterns_test

import (
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// A Batch of a sharded queue runs on its plain queue: its items' handles
// and the ids built from the queue's name find them (issue 21: Resolve
// leaves a batch item's id on the queue named).
func TestBatchOnShardedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	if _, err := b.c.DeclareShards(ctx, b.queue, 3); err != nil {
		t.Fatal(err)
	}
	var log batchLog
	b.worker(t, nil, func(w *worker.Worker) { worker.HandleBatch(w, doubles(log.handle)) })
	testenv.StartCoordinators(t, b.env, 1)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 4, MaxWait: time.Second, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	var hs []*client.Handle
	for i := range 8 {
		h, err := bt.Append(ctx, Double(i))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for i, h := range hs {
		if v, err := client.Result[int](ctx, h); err != nil || v != 2*i {
			t.Fatalf("item %d through its handle: %d, %v", i, v, err)
		}
		byID, err := b.c.Task(h.ID())
		if err != nil {
			t.Fatal(err)
		}
		if v, err := client.Result[int](ctx, byID); err != nil || v != 2*i {
			t.Fatalf("item %d by its id %s: %d, %v", i, h.ID(), v, err)
		}
	}
}
