package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// A payload over the worker's limit is dead-lettered when read, with the
// reason, and the worker goes on.
func TestPayloadLimitAtDequeue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, &worker.Config{MaxPayloadBytes: 64}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	ctx := ctxT(t)
	big, err := b.c.Enqueue(ctx, UploadArgs{Path: strings.Repeat("x", 200)}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := b.c.Enqueue(ctx, UploadArgs{Path: "ok"}, &client.EnqueueOpts{Queue: b.queue})
	_, err = big.Outcome(ctx)
	if !errors.Is(err, client.ErrDead) || !strings.Contains(err.Error(), "payload") {
		t.Fatalf("got %v; want dead for its payload", err)
	}
	if r, err := client.Result[UploadResult](ctx, small); err != nil || r.Size != 2 {
		t.Fatalf("got %v, %v", r, err)
	}
}

// Args that do not decode into the handler's type fail permanently with the
// reason (no retries of something that can never work).
func TestUndecodableArgsArePermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mismatched) (struct{}, error) {
			return struct{}{}, nil
		})
	})
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, mismatchedSender{Path: 12}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
	_, err := h.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || te.Attempt != 1 || !strings.Contains(te.Message, "decode") {
		t.Fatalf("got %v; want dead after one attempt with a decode error", err)
	}
}

type mismatched struct{ Path string }

func (mismatched) Kind() string { return "mismatch" }

type mismatchedSender struct{ Path int }

func (mismatchedSender) Kind() string { return "mismatch" }

// Deliveries lost on earlier entries of a task (carried in its envelope when
// it is handed back or retried) count toward the poison limit.
func TestLostDeliveriesTravelWithTheTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	if err := b.env.RDB.XGroupCreateMkStream(ctx, keys.ForQueue(b.queue).Stream(), keys.Group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	env := codec.AppendEnvelope(nil, &codec.Envelope{Key: "crashy", Kind: "upload", Payload: []byte{0x80}, Attempt: 1, MaxAttempts: 5, RetainMs: 60000, Lost: 3})
	if err := b.env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: keys.ForQueue(b.queue).Stream(), Values: []any{"m", env}}).Err(); err != nil {
		t.Fatal(err)
	}
	var ran atomic.Bool
	b.worker(t, &worker.Config{MaxDeliveries: 3}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			ran.Store(true)
			return UploadResult{}, nil
		})
	})
	h, _ := b.c.Task(b.queue + "/crashy")
	testenv.Eventually(t, 10*time.Second, "the task to be dead", func() bool {
		in, err := h.Info(ctx)
		return err == nil && in.State == client.StateDead
	})
	in, _ := h.Info(ctx)
	if !strings.Contains(in.LastError, "poison: delivered 4 times") || ran.Load() {
		t.Fatalf("got %q (ran %v); want poison after 4 deliveries and no run", in.LastError, ran.Load())
	}
}
