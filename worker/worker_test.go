package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

type UploadArgs struct {
	Path string
	Fail int // fail this many attempts
}

func (UploadArgs) Kind() string { return "upload" }

type UploadResult struct {
	Size int
}

type OtherArgs struct{ N int }

func (OtherArgs) Kind() string { return "other" }

type bundle struct {
	env   *testenv.Env
	c     *client.Client
	queue string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	env := testenv.Redis(t)
	return &bundle{env: env, c: testenv.Client(t, env), queue: testenv.Queue(t)}
}

func (b *bundle) worker(t *testing.T, cfg *worker.Config, register func(w *worker.Worker)) *worker.Worker {
	t.Helper()
	return b.workerOn(t, b.env.RDB, cfg, register)
}

// workerOn is worker on a Redis client of the test's choosing (one with a
// fault-injecting hook, say).
func (b *bundle) workerOn(t *testing.T, rdb redis.UniversalClient, cfg *worker.Config, register func(w *worker.Worker)) *worker.Worker {
	t.Helper()
	return testenv.StartWorker(t, rdb, b.queue, cfg, register, false)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEnqueueRunOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			tk, _ := worker.TaskFromContext(ctx)
			if tk.Kind != "upload" {
				return UploadResult{}, fmt.Errorf("task kind %q", tk.Kind)
			}
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, UploadArgs{Path: "a/b/c"}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Result[UploadResult](ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.Size, 5; got != want {
		t.Fatalf("got size %d; want %d", got, want)
	}
	st, err := h.State(ctx)
	if err != nil || st != client.StateSucceeded {
		t.Fatalf("got state %q, %v; want succeeded", st, err)
	}
	// Another process can find it by id.
	h2, err := b.c.Task(h.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res2, err := client.Result[UploadResult](ctx, h2); err != nil || res2.Size != 5 {
		t.Fatalf("got %v, %v by id", res2, err)
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			n := calls.Add(1)
			tk, _ := worker.TaskFromContext(ctx)
			if int(n) != tk.Attempt {
				return UploadResult{}, worker.Permanent(fmt.Errorf("attempt %d on call %d", tk.Attempt, n))
			}
			if int(n) <= a.Fail {
				return UploadResult{}, errors.New("flaky")
			}
			return UploadResult{Size: int(n)}, nil
		})
	})
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, UploadArgs{Fail: 2}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Result[UploadResult](ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != 3 {
		t.Fatalf("got success on call %d; want 3", res.Size)
	}
}

func TestDeadLetterAfterLastAttemptAndRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var failing atomic.Bool
	failing.Store(true)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			if failing.Load() {
				return UploadResult{}, errors.New("disk full")
			}
			return UploadResult{Size: 1}, nil
		})
	})
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || !errors.Is(err, client.ErrDead) {
		t.Fatalf("got %v; want a dead TaskError", err)
	}
	if te.Attempt != 3 || !strings.Contains(te.Message, "disk full") {
		t.Fatalf("got attempt %d message %q; want 3 and disk full", te.Attempt, te.Message)
	}
	dead, err := b.c.DeadTasks(ctx, b.queue, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != h.ID() || dead[0].Kind != "upload" || !strings.Contains(dead[0].Error, "disk full") {
		t.Fatalf("got dead letters %+v", dead)
	}
	failing.Store(false)
	h2, err := b.c.RetryDead(ctx, h.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Result[UploadResult](ctx, h2); err != nil {
		t.Fatalf("after retry: %v", err)
	}
	if dead, _ := b.c.DeadTasks(ctx, b.queue, 0, 10); len(dead) != 0 {
		t.Fatalf("got %d dead letters after retry; want 0", len(dead))
	}
}

func TestPermanentAndPanic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var calls atomic.Int32
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			calls.Add(1)
			if a.Path == "panic" {
				panic("boom")
			}
			return UploadResult{}, worker.Permanent(errors.New("bad file"))
		})
	})
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "perm"}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
	if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrDead) || !strings.Contains(err.Error(), "bad file") {
		t.Fatalf("got %v; want dead with bad file", err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("got %d calls for a permanent error; want 1", got)
	}
	hp, _ := b.c.Enqueue(ctx, UploadArgs{Path: "panic"}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 2})
	_, err := hp.Outcome(ctx)
	if !errors.Is(err, client.ErrDead) || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "goroutine") {
		t.Fatalf("got %v; want dead with the panic and its stack", err)
	}
}
