package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// An Outcome call that gives up does not give a lifetime to the record that
// carries a task's continuations (it once did, and the continuation was lost).
func TestRegressionContLostAfterOutcome(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue})
	next, err := h.ContinueWith(ctx, NoteArgs{Msg: "after"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, _ = h.Outcome(octx)
	cancel()
	key := h.ID()[len(b.queue)+1:]
	// The record carries the continuation flag: watching must not give it
	// a lifetime.
	if ttl := b.env.RDB.PTTL(ctx, q.Task(key)).Val(); ttl >= 0 {
		t.Fatalf("got TTL %v on the record of a task with a continuation; want none", ttl)
	}
	ran := make(chan struct{}, 1)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{}, nil })
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) { ran <- struct{}{}; return struct{}{}, nil })
	})
	if _, err := next.Outcome(ctx); err != nil {
		st, _ := next.State(ctx)
		hooks := b.env.RDB.ZRangeWithScores(ctx, q.Hooks(), 0, -1).Val()
		t.Fatalf("continuation: %v; state %s; hooks %v; conts %v", err, st, hooks, b.env.RDB.LRange(ctx, q.Conts(key), 0, -1).Val())
	}
	<-ran
}

// A cancel sent to a worker that died is honoured by the worker that takes
// the task over, before its handler starts.
func TestRegressionReclaimedCancelledRuns(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue})
	// a worker that read it and died
	if err := b.env.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: "ghost", Streams: []string{q.Stream(), ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	st, err := h.Cancel(ctx)
	t.Logf("cancel: %s %v", st, err)
	var ran bool
	b.worker(t, &worker.Config{Lease: 200 * time.Millisecond}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			ran = true
			return UploadResult{Size: 1}, nil
		})
	})
	_, err = h.Outcome(ctx)
	if err == nil {
		t.Errorf("cancelled task ran (%v) and succeeded", ran)
	} else {
		t.Log(err)
	}
}

// A retry that would start past the task's deadline is not scheduled: the
// task ends with DeadlineExceeded at once.
func TestRegressionRetryPastDeadline(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue, Deadline: time.Now().Add(500 * time.Millisecond)})
	b.worker(t, &worker.Config{Backoff: func(int) time.Duration { return time.Hour }}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{}, errors.New("boom")
		})
	})
	// Outcome returns soon after the deadline, not after the hour of backoff.
	if _, err := h.Outcome(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want DeadlineExceeded", err)
	}
}

// Cancelling a parent whose queue no worker serves still starts its
// continuation in another queue.
func TestRegressionCancelNoDrain(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	pq := b.queue + "-p"
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: pq, ID: "par"})
	next, err := h.ContinueWith(ctx, NoteArgs{}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: b.queue}})
	if err != nil {
		t.Fatal(err)
	}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) { return struct{}{}, nil })
	})
	if _, err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	// No worker serves the parent's queue: Cancel itself starts the
	// continuation.
	if _, err := next.Outcome(ctx); err != nil {
		t.Fatalf("continuation: %v", err)
	}
	if n := b.env.RDB.XLen(ctx, keys.ForQueue(pq).Outbox()).Val(); n != 0 {
		t.Fatalf("parent outbox holds %d entries; want 0", n)
	}
}

// A handler whose task was cancelled cannot enqueue children that would
// escape the cancellation.
func TestRegressionChildAfterCancel(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	started := make(chan struct{})
	kid := make(chan *client.Handle, 1)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(hctx context.Context, a UploadArgs) (UploadResult, error) {
			if a.Path == "child" {
				return UploadResult{Size: 7}, nil
			}
			close(started)
			<-hctx.Done()
			k, err := b.c.Enqueue(hctx, UploadArgs{Path: "child"}, &client.EnqueueOpts{Queue: b.queue})
			t.Logf("enqueue after cancel: %v", err)
			kid <- k
			return UploadResult{}, hctx.Err()
		})
	})
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "parent"}, &client.EnqueueOpts{Queue: b.queue})
	<-started
	if _, err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	k := <-kid
	if k == nil {
		return
	}
	if _, err := k.Outcome(ctx); err == nil {
		t.Errorf("child of a cancelled task ran and succeeded")
	}
}

// A cancel request whose control message was missed ends the task when it
// is handed back, instead of letting it run again elsewhere.
func TestRegressionParkKeepsCancel(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	started := make(chan struct{}, 1)
	w1 := b.worker(t, &worker.Config{Lease: 20 * time.Second}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			started <- struct{}{}
			<-ctx.Done()
			return UploadResult{}, ctx.Err()
		})
	})
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue, ID: "t1"})
	<-started
	// what cancel.lua writes; its PUBLISH did not reach w1 (reconnecting)
	b.env.RDB.HSet(ctx, q.Task("t1"), "cx", "cancelled")
	_ = w1.StopAndCancel(ctx)
	t.Logf("after hand-back: cx=%q", b.env.RDB.HGet(ctx, q.Task("t1"), "cx").Val())
	b.worker(t, &worker.Config{Lease: 20 * time.Second}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{Size: 1}, nil })
	})
	if _, err := h.Outcome(ctx); err == nil {
		t.Errorf("task with a pending cancel request was handed back and then succeeded")
	}
}
