package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

type BlockArgs struct{ N int }

func (BlockArgs) Kind() string { return "block" }

type NoteArgs struct{ Msg string }

func (NoteArgs) Kind() string { return "note" }

// A task not started never starts once cancelled.
func TestCancelPending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	st, err := h.Cancel(ctx)
	if err != nil || st != client.StateCancelled {
		t.Fatalf("got %s, %v; want cancelled", st, err)
	}
	var ran atomic.Bool
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			ran.Store(true)
			return UploadResult{}, nil
		})
	})
	_, err = h.Outcome(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, client.ErrCancelled) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want cancelled", err)
	}
	// A task enqueued after it runs: the cancelled one was skipped, not queued.
	h2, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if _, err := h2.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if ran.Load() && mustInfo(t, h).State != client.StateCancelled {
		t.Fatal("the cancelled task ran")
	}
	// Cancelling again reports the final state.
	if st, err := h.Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("second cancel: %s, %v", st, err)
	}
	if st, err := h2.Cancel(ctx); err != nil || st != client.StateSucceeded {
		t.Fatalf("cancel of a finished task: %s, %v; want succeeded, unchanged", st, err)
	}
	if _, err := b.c.Task(b.queue + "/nope"); err != nil {
		t.Fatal(err)
	}
	hn, _ := b.c.Task(b.queue + "/nope")
	if _, err := hn.Cancel(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("got %v; want ErrNotFound", err)
	}
}

func mustInfo(t *testing.T, h *client.Handle) *client.Info {
	t.Helper()
	in, err := h.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// A running task's handler ctx is cancelled with ErrCancelled; the task ends
// cancelled and is not retried.
func TestCancelRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	started := make(chan struct{}, 2)
	causes := make(chan error, 2)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a BlockArgs) (struct{}, error) {
			started <- struct{}{}
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return struct{}{}, ctx.Err()
		})
	})
	h, _ := b.c.Enqueue(ctx, BlockArgs{}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
	<-started
	st, err := h.Cancel(ctx)
	if err != nil || st != client.StateRunning {
		t.Fatalf("got %s, %v; want running (cancel requested)", st, err)
	}
	if c := <-causes; !errors.Is(c, worker.ErrCancelled) {
		t.Fatalf("got cause %v; want ErrCancelled", c)
	}
	_, err = h.Outcome(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want cancelled", err)
	}
	if in := mustInfo(t, h); in.State != client.StateCancelled || in.Attempt != 1 {
		t.Fatalf("got %+v; want cancelled after 1 attempt", in)
	}
	select {
	case <-started:
		t.Fatal("a cancelled task was retried")
	default:
	}
}

// A deadline already passed: the task never starts and ends with
// DeadlineExceeded. A future one reaches the handler's ctx.
func TestDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	deadlines := make(chan time.Time, 1)
	var ran atomic.Int32
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			ran.Add(1)
			d, _ := ctx.Deadline()
			if a.Path == "wait" {
				<-ctx.Done()
				return UploadResult{}, ctx.Err()
			}
			deadlines <- d
			return UploadResult{}, nil
		})
	})
	past, _ := b.c.Enqueue(ctx, UploadArgs{Path: "past"}, &client.EnqueueOpts{Queue: b.queue, Deadline: time.Now().Add(-time.Second)})
	_, err := past.Outcome(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want DeadlineExceeded", err)
	}
	if ran.Load() != 0 {
		t.Fatal("a task past its deadline started")
	}
	want := time.Now().Add(time.Hour)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "future"}, &client.EnqueueOpts{Queue: b.queue, Deadline: want})
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if d := <-deadlines; d.Sub(want).Abs() > 100*time.Millisecond {
		t.Fatalf("handler deadline %v; want about %v", d, want)
	}
	// A deadline passing while the handler runs ends the task, no retry. A
	// task that a busy machine starts only after its deadline never starts
	// (the case above), which tells nothing here: then it is tried again
	// with a deadline twice as far.
	for wait := 150 * time.Millisecond; ; wait *= 2 {
		before := ran.Load()
		hw, _ := b.c.Enqueue(ctx, UploadArgs{Path: "wait"}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5, Deadline: time.Now().Add(wait)})
		_, err = hw.Outcome(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v; want DeadlineExceeded", err)
		}
		in := mustInfo(t, hw)
		if ran.Load() == before {
			if in.Attempt != 0 {
				t.Fatalf("a task past its deadline before it started: attempt %d, want 0", in.Attempt)
			}
			if wait >= 5*time.Second {
				t.Fatalf("the task never started within a deadline of %v", wait)
			}
			continue
		}
		if in.Attempt != 1 {
			t.Fatalf("got attempt %d; want 1 (no retry after the deadline)", in.Attempt)
		}
		break
	}
}

// Metadata, trace context and the remaining deadline reach the handler and
// its children; cancelling a parent cancels its unfinished children.
func TestContextPropagationAndChildren(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	type seen struct {
		meta          map[string]string
		parent, state string
		deadline      time.Time
	}
	seenCh := make(chan seen, 4)
	childIDs := make(chan string, 1)
	childStarted := make(chan struct{}, 1)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			tpp, ts := worker.TraceContext(ctx)
			d, _ := ctx.Deadline()
			seenCh <- seen{worker.Meta(ctx), tpp, ts, d}
			h, err := b.c.Enqueue(ctx, BlockArgs{}, &client.EnqueueOpts{Queue: b.queue, Meta: map[string]string{"step": "child"}})
			if err != nil {
				return UploadResult{}, err
			}
			childIDs <- h.ID()
			<-ctx.Done() // until the test cancels this parent
			return UploadResult{}, ctx.Err()
		})
		worker.Handle(w, func(ctx context.Context, a BlockArgs) (struct{}, error) {
			tpp, ts := worker.TraceContext(ctx)
			d, _ := ctx.Deadline()
			seenCh <- seen{worker.Meta(ctx), tpp, ts, d}
			childStarted <- struct{}{}
			<-ctx.Done()
			return struct{}{}, ctx.Err()
		})
	})
	deadline := time.Now().Add(time.Hour)
	parent, err := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, Deadline: deadline,
		Meta: map[string]string{"tenant": "acme", "step": "parent"}, TraceParent: tp, TraceState: "vendor=1"})
	if err != nil {
		t.Fatal(err)
	}
	p := <-seenCh
	if p.meta["tenant"] != "acme" || p.meta["step"] != "parent" || p.parent != tp || p.state != "vendor=1" || p.deadline.Sub(deadline).Abs() > 100*time.Millisecond {
		t.Fatalf("parent saw %+v", p)
	}
	childID := <-childIDs
	<-childStarted
	c := <-seenCh
	if c.meta["tenant"] != "acme" || c.meta["step"] != "child" || c.parent != tp || c.state != "vendor=1" || c.deadline.Sub(deadline).Abs() > 100*time.Millisecond {
		t.Fatalf("child saw %+v; want inherited metadata (own entries winning), trace context and deadline", c)
	}
	if _, err := parent.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	child, _ := b.c.Task(childID)
	for _, h := range []*client.Handle{parent, child} {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
			t.Fatalf("%s: got %v; want cancelled", h.ID(), err)
		}
	}
}

// Continuations run exactly once after their parent, with its outcome,
// whether registered before or after it ended; OnlyOnSuccess skips them after
// a failure.
func TestContinueWith(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	runs := map[string]int{}
	parentSeen := map[string]string{}
	release := make(chan struct{})
	note := func(ctx context.Context, a NoteArgs) (string, error) {
		tk, _ := worker.TaskFromContext(ctx)
		r, err := worker.ParentResult[UploadResult](ctx)
		mu.Lock()
		defer mu.Unlock()
		runs[tk.ID]++
		if err != nil {
			parentSeen[tk.ID] = "error: " + err.Error()
		} else {
			parentSeen[tk.ID] = fmt.Sprint(r.Size)
		}
		return a.Msg + " done", nil
	}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			if a.Path == "slow" {
				<-release
			}
			if a.Path == "fail" {
				return UploadResult{}, worker.Permanent(errors.New("broken"))
			}
			return UploadResult{Size: len(a.Path)}, nil
		})
		worker.Handle(w, note)
	})
	slow, _ := b.c.Enqueue(ctx, UploadArgs{Path: "slow"}, &client.EnqueueOpts{Queue: b.queue})
	before, err := slow.ContinueWith(ctx, NoteArgs{Msg: "before"}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: b.queue + "-notify"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := before.State(ctx); st != client.StateWaiting {
		t.Fatalf("got %s; want waiting", st)
	}
	b.worker(t, &worker.Config{Queues: map[string]int{b.queue + "-notify": 1}}, func(w *worker.Worker) {
		worker.Handle(w, note)
	})
	close(release)
	if r, err := client.Result[string](ctx, before); err != nil || r != "before done" {
		t.Fatalf("got %q, %v", r, err)
	}
	after, err := slow.ContinueWith(ctx, NoteArgs{Msg: "after"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := client.Result[string](ctx, after); err != nil || r != "after done" {
		t.Fatalf("got %q, %v", r, err)
	}
	failed, _ := b.c.Enqueue(ctx, UploadArgs{Path: "fail"}, &client.EnqueueOpts{Queue: b.queue})
	onlyOK, _ := failed.ContinueWith(ctx, NoteArgs{Msg: "x"}, &client.ContinueOpts{OnlyOnSuccess: true})
	anyway, _ := failed.ContinueWith(ctx, NoteArgs{Msg: "anyway"}, nil)
	if _, err := onlyOK.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want the success-only continuation cancelled", err)
	}
	if _, err := anyway.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range []*client.Handle{before, after, anyway} {
		if runs[h.ID()] != 1 {
			t.Fatalf("%s ran %d times; want 1", h.ID(), runs[h.ID()])
		}
	}
	if parentSeen[before.ID()] != "4" || parentSeen[after.ID()] != "4" {
		t.Fatalf("continuations saw %v; want the parent's result 4", parentSeen)
	}
	if got := parentSeen[anyway.ID()]; got == "" || got[:6] != "error:" {
		t.Fatalf("continuation of a dead task saw %q; want its error", got)
	}
	if runs[onlyOK.ID()] != 0 {
		t.Fatal("success-only continuation ran after a failure")
	}
}

// Many registrations racing the parent's completion: each runs once.
func TestContinueWithRacingCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	runs := map[string]int{}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: 1}, nil
		})
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			runs[tk.ID]++
			mu.Unlock()
			return struct{}{}, nil
		})
	})
	for round := 0; round < 5; round++ {
		parent, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
		var wg sync.WaitGroup
		conts := make(chan *client.Handle, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h, err := parent.ContinueWith(ctx, NoteArgs{}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				conts <- h
			}()
		}
		wg.Wait()
		close(conts)
		for h := range conts {
			if _, err := h.Outcome(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 100 {
		t.Fatalf("%d continuations ran; want 100", len(runs))
	}
	for id, n := range runs {
		if n != 1 {
			t.Fatalf("%s ran %d times", id, n)
		}
	}
}

func TestWaitAllCancelAll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var hs []*client.Handle
	for i := 0; i < 5; i++ {
		h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
		hs = append(hs, h)
	}
	if err := client.CancelAll(ctx, hs[:2]...); err != nil {
		t.Fatal(err)
	}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{}, nil })
	})
	if err := client.WaitAll(ctx, hs[2:]...); err != nil {
		t.Fatal(err)
	}
	err := client.WaitAll(ctx, hs...)
	if !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want the cancelled ones reported", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	never, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: testenv.Queue(t) + "-nobody"})
	if err := client.WaitAll(tctx, never); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want ctx's error", err)
	}
}

// ContinueWith with an id may be called again (after an error, say): it adds
// no second task, and the continuation runs once.
func TestContinueWithSameIDTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var runs atomic.Int32
	parent, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	opts := &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{ID: "notify-1"}}
	first, err := parent.ContinueWith(ctx, NoteArgs{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parent.ContinueWith(ctx, NoteArgs{}, opts)
	if err != nil || !again.Duplicate() || again.ID() != first.ID() {
		t.Fatalf("second call: %v dup %v id %s", err, again.Duplicate(), again.ID())
	}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{}, nil })
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) {
			runs.Add(1)
			return struct{}{}, nil
		})
	})
	if _, err := first.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := parent.ContinueWith(ctx, NoteArgs{}, opts); err != nil {
		t.Fatal(err)
	}
	if err := client.WaitAll(ctx, parent, first); err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("continuation ran %d times; want 1", n)
	}
}

// A retry that would start past the task's deadline is not scheduled: the
// task ends with DeadlineExceeded at once.
func TestRetryPastDeadlineEndsTask(t *testing.T) {
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
func TestCancelStartsContinuationOfUnservedQueue(t *testing.T) {
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
func TestCancelledHandlerEnqueuesNoEscapingChild(t *testing.T) {
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
