package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
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
