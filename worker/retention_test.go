package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// A finished task's state and result expire after its retention.
func TestResultRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{Size: 1}, nil })
	})
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, Retention: 200 * time.Millisecond})
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if b.env.Mini != nil {
		b.env.Mini.FastForward(time.Second)
	}
	asynctest.Eventually(t, 5*time.Second, "the result to expire", func() bool {
		_, err := h.State(ctx)
		return errors.Is(err, client.ErrNotFound)
	})
}

// Outcome on a task that has not run yet is woken when it ends, and the
// queue's watcher count returns to zero afterwards.
func TestOutcomeWokenByCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, UploadArgs{Path: "abc"}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		r   UploadResult
		err error
	}
	got := make(chan res, 1)
	go func() {
		r, err := client.Result[UploadResult](ctx, h)
		got <- res{r, err}
	}()
	watching := keys.ForQueue(b.queue).Hooks()
	asynctest.Eventually(t, 5*time.Second, "the waiter to be counted", func() bool {
		return b.env.RDB.ZCard(ctx, watching).Val() == 1
	})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	r := <-got
	if r.err != nil || r.r.Size != 3 {
		t.Fatalf("got %v, %v", r.r, r.err)
	}
	if n := b.env.RDB.ZCard(ctx, watching).Val(); n != 0 {
		t.Fatalf("got %d hooks after the wait; want 0", n)
	}
}
