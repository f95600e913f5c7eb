package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// A handler's reports reach Handle.Progress while it runs; once it
// succeeded, its last report is there with done = total.
func TestProgressReportedAndRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	seen := make(chan struct{})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			worker.ReportProgress(ctx, 10, 100)
			<-seen
			worker.ReportProgress(ctx, 60, 100)
			return UploadResult{}, nil
		})
	})
	h, err := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first report", func() bool {
		p, err := h.Progress(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p.Reported()
	})
	p, _ := h.Progress(ctx)
	if p.Done != 10 || p.Total != 100 || p.Attempt != 1 {
		t.Fatalf("while running: %+v, want 10/100 of attempt 1", p)
	}
	close(seen)
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	p, err = h.Progress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done != 100 || p.Total != 100 || p.Attempt != 1 || !p.Reported() {
		t.Fatalf("after success: %+v, want 100/100 of attempt 1", p)
	}
}

// A handler that reports in a tight loop costs at most one write per
// 250ms of its run, and one last write; the writes are counted by the
// fence's write count in the task's progress hash (n: each write of a run
// takes the next).
func TestProgressCoalesced(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const run = time.Second
	calls := make(chan int64, 1)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			var n int64
			for start := time.Now(); time.Since(start) < run; n++ {
				worker.ReportProgress(ctx, n, 0)
			}
			calls <- n
			return UploadResult{}, nil
		})
	})
	start := time.Now()
	h, err := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start) // at least the handler's run
	n := <-calls
	_, key, _ := keys.SplitTaskID(h.ID())
	writes, err := b.env.RDB.HGet(ctx, keys.ForQueue(b.queue).Progress(key), "n").Int64()
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(took/(250*time.Millisecond)) + 1
	if writes < 1 || writes > limit {
		t.Fatalf("%d reports over %v made %d writes; want 1 to %d", n, took, writes, limit)
	}
	p, err := h.Progress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done != n-1 || p.Total != 0 {
		t.Fatalf("last report %+v, want done %d of total 0", p, n-1)
	}
	t.Logf("%d reports in %v: %d writes, %.1f ns per report", n, run, writes, float64(run.Nanoseconds())/float64(n))
}

// A task's report expires with the task's retention, counted from its
// last write (which came before its end was recorded).
func TestProgressExpiresWithRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	gate := make(chan struct{})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			worker.ReportProgress(ctx, 1, 2)
			<-gate
			return UploadResult{}, nil
		})
	})
	const retention = time.Second
	h, err := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, Retention: retention})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first report", func() bool {
		p, err := h.Progress(ctx)
		return err == nil && p.Reported()
	})
	close(gate)
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	_, key, _ := keys.SplitTaskID(h.ID())
	if ttl := b.env.RDB.PTTL(ctx, keys.ForQueue(b.queue).Progress(key)).Val(); ttl <= 0 || ttl > retention {
		t.Fatalf("the report's TTL is %v, want the task's retention (%v) at most", ttl, retention)
	}
	if b.env.Mini != nil {
		b.env.Mini.FastForward(2 * retention)
	}
	testenv.Eventually(t, 5*time.Second, "the report to expire", func() bool {
		p, err := h.Progress(ctx)
		return err == nil && !p.Reported()
	})
}
