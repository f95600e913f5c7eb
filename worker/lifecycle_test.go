package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	tests := []struct {
		cfg  worker.Config
		want string
	}{
		{worker.Config{Queues: map[string]int{"a:b": 1}}, "Config.Queues"},
		{worker.Config{Queues: map[string]int{"a": 0}}, "weight 0"},
		{worker.Config{Concurrency: -1}, "Config.Concurrency"},
		{worker.Config{Lease: time.Millisecond}, "Config.Lease"},
		{worker.Config{Name: "has space"}, "Config.Name"},
		{worker.Config{Retention: time.Microsecond}, "Config.Retention"},
	}
	for _, tt := range tests {
		if _, err := worker.New(context.Background(), env.RDB, &tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("got %v; want an error naming %s", err, tt.want)
		}
	}
	w, err := worker.New(context.Background(), env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no handlers") {
		t.Fatalf("got %v; want no handlers refused", err)
	}
	// Stop before Start is fine, and idempotent.
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-w.Stopped()
}

func TestAttemptTimeoutRetries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done()
				return UploadResult{}, ctx.Err()
			}
			return UploadResult{Size: 7}, nil
		})
	})
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, Timeout: 50 * time.Millisecond})
	if r, err := client.Result[UploadResult](ctx, h); err != nil || r.Size != 7 {
		t.Fatalf("got %v, %v", r, err)
	}
}

// Stop lets running handlers finish and records their outcomes.
func TestStopDrains(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan struct{})
	release := make(chan struct{})
	w, err := worker.New(context.Background(), b.env.RDB, &worker.Config{Queues: map[string]int{b.queue: 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
		close(started)
		<-release
		return UploadResult{Size: 1}, nil
	})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- w.Stop(ctx) }()
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(ctx); st != client.StateSucceeded {
		t.Fatalf("got %s; want succeeded", st)
	}
}

// When Stop's ctx ends first, unfinished tasks go back to the queue at once
// (not after their lease), and another worker runs them.
func TestStopHandsBackUnfinished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan struct{})
	stuck := make(chan struct{})
	defer close(stuck)
	w1, err := worker.New(context.Background(), b.env.RDB, &worker.Config{Queues: map[string]int{b.queue: 1}, BlockTimeout: 50 * time.Millisecond, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w1, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
		close(started)
		<-stuck // ignores ctx on purpose
		return UploadResult{}, nil
	})
	if err := w1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	<-started
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := w1.Stop(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want DeadlineExceeded", err)
	}
	if st, _ := h.State(ctx); st != client.StatePending {
		t.Fatalf("got %s after hand-back; want pending", st)
	}
	b.worker(t, &worker.Config{Lease: time.Hour}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: 2}, nil
		})
	})
	if r, err := client.Result[UploadResult](ctx, h); err != nil || r.Size != 2 {
		t.Fatalf("got %v, %v", r, err)
	}
}

// StopAndCancel cancels handlers with ErrShutdown and hands their tasks back
// without counting a failed attempt.
func TestStopAndCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan struct{})
	var cause atomic.Value
	w1, err := worker.New(context.Background(), b.env.RDB, &worker.Config{Queues: map[string]int{b.queue: 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w1, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return UploadResult{}, ctx.Err()
	})
	if err := w1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 1})
	<-started
	if err := w1.StopAndCancel(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, worker.ErrShutdown) {
		t.Fatalf("got cause %v; want ErrShutdown", c)
	}
	in, err := h.Info(ctx)
	if err != nil || in.State != client.StatePending || in.Attempt != 0 {
		t.Fatalf("got %+v, %v; want pending with no attempt used", in, err)
	}
}

func TestStrictPriority(t *testing.T) {
	t.Parallel()
	b := setup(t)
	high, low := b.queue+"-high", b.queue+"-low"
	ctx := ctxT(t)
	var specs []client.Spec
	for i := 0; i < 20; i++ {
		specs = append(specs, client.Spec{Args: OtherArgs{N: i}, Opts: &client.EnqueueOpts{Queue: low}})
	}
	for i := 0; i < 20; i++ {
		specs = append(specs, client.Spec{Args: OtherArgs{N: 100 + i}, Opts: &client.EnqueueOpts{Queue: high}})
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	b.worker(t, &worker.Config{Queues: map[string]int{high: 10, low: 1}, StrictPriority: true, Concurrency: 1, FetchBatch: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a OtherArgs) (struct{}, error) {
			mu.Lock()
			order = append(order, a.N)
			mu.Unlock()
			return struct{}{}, nil
		})
	})
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range order[:20] {
		if n < 100 {
			t.Fatalf("low-priority task ran at position %d before the high queue was empty: %v", i, order)
		}
	}
}

// A cancel request whose control message was missed ends the task when it
// is handed back, instead of letting it run again elsewhere.
func TestHandBackKeepsMissedCancel(t *testing.T) {
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
