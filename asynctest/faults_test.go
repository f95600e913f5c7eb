package asynctest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// Flaky is the kind the fault tests inject failures into.
type Flaky struct{ N int }

func (Flaky) Kind() string { return "kit.flaky" }

// result waits (up to the fleet's WaitTimeout) for h's outcome.
func result[R any](t *testing.T, f *Fleet, h *client.Handle) (R, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	return client.Result[R](ctx, h)
}

func info(t *testing.T, f *Fleet, h *client.Handle) *client.Info {
	t.Helper()
	in, err := h.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// A handler whose first two attempts fail (injected) runs the third one,
// which succeeds; the failed attempts never reached it.
func TestFailNextRetries(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var attempts []int
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			attempts = append(attempts, tk.Attempt)
			mu.Unlock()
			return a.N * 2, nil
		})
	}, &Options{Workers: 2})
	f.FailNext(Flaky{}.Kind(), 2, nil)
	h, err := f.Client().Enqueue(context.Background(), Flaky{N: 21}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := result[int](t, f, h)
	if err != nil || n != 42 {
		t.Fatalf("result %d, %v; want 42", n, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(attempts) != "[3]" {
		t.Errorf("the handler ran attempts %v, want [3] (the first two failed before it)", attempts)
	}
	if in := info(t, f, h); in.Attempt != 3 || in.State != client.StateSucceeded {
		t.Errorf("task %s: %s after %d attempts, want succeeded after 3", h.ID(), in.State, in.Attempt)
	}
}

// A Permanent error injected ends the task dead at once, with its message.
func TestFailNextPermanent(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{}, 1)
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) {
			ran <- struct{}{}
			return 0, nil
		})
	}, nil)
	f.FailNext(Flaky{}.Kind(), 1, worker.Permanent(errors.New("no such account")))
	h, err := f.Client().Enqueue(context.Background(), Flaky{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var te *client.TaskError
	if _, err := result[int](t, f, h); !errors.As(err, &te) || te.State != client.StateDead {
		t.Fatalf("outcome %v, want the task dead", err)
	}
	in := info(t, f, h)
	if in.Attempt != 1 || in.LastError == "" {
		t.Errorf("dead task: attempt %d, error %q; want attempt 1 and the injected error", in.Attempt, in.LastError)
	}
	select {
	case <-ran:
		t.Error("the handler ran")
	default:
	}
}

// FailNext without an error fails with ErrInjected; the count is the
// fleet's, across its workers, and later calls add up, in order.
func TestFailNextCounts(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) { return a.N, nil })
	}, &Options{Workers: 2})
	f.FailNext(Flaky{}.Kind(), 1, nil)
	f.FailNext(Flaky{}.Kind(), 2, errors.New("second"))
	for _, c := range []struct {
		max     int
		lastErr string
	}{{1, ErrInjected.Error()}, {2, "second"}} {
		h, err := f.Client().Enqueue(context.Background(), Flaky{N: 7}, &client.EnqueueOpts{MaxAttempts: c.max})
		if err != nil {
			t.Fatal(err)
		}
		var te *client.TaskError
		if _, err := result[int](t, f, h); !errors.As(err, &te) || te.State != client.StateDead {
			t.Fatalf("outcome %v, want the task dead after its %d attempts", err, c.max)
		}
		if in := info(t, f, h); in.Attempt != c.max || in.LastError != c.lastErr {
			t.Errorf("attempt %d, last error %q; want %d, %q", in.Attempt, in.LastError, c.max, c.lastErr)
		}
	}
	// The next task runs: the failures were used up.
	h, err := f.Client().Enqueue(context.Background(), Flaky{N: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := result[int](t, f, h); err != nil || n != 8 {
		t.Fatalf("result %d, %v", n, err)
	}
}

// run is one run of a handler in the loss tests.
type run struct {
	worker     string
	deliveries int
	cause      error // the ctx's cause when the handler returned, if it ended
}

// lossFleet starts a fleet of n workers whose Flaky handler records each
// run; the first run (block) waits for its ctx to end.
func lossFleet(t *testing.T, n int, block bool) (*Fleet, chan run) {
	runs := make(chan run, 10)
	var mu sync.Mutex
	first := true
	f := NewFleet(t, func(w *worker.Worker) {
		name := w.Name()
		worker.Handle(w, func(ctx context.Context, a Flaky) (string, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			wait := first && block
			first = false
			mu.Unlock()
			r := run{worker: name, deliveries: tk.Deliveries}
			if wait {
				<-ctx.Done()
				r.cause = context.Cause(ctx)
				runs <- r
				return "", ctx.Err()
			}
			runs <- r
			return fmt.Sprintf("%s/%d", name, tk.Deliveries), nil
		})
	}, &Options{Workers: n})
	return f, runs
}

func next(t *testing.T, f *Fleet, runs chan run) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	select {
	case r := <-runs:
		return r
	case <-ctx.Done():
		t.Fatal("timed out waiting for a run of the handler")
		return run{}
	}
}

// LoseDuring with two workers: the handler's ctx ends (lease lost), the
// other worker takes the task over and its run is the task's outcome; the
// lost worker, connected again and stopped, records nothing over it.
func TestLoseDuringTakenOver(t *testing.T) {
	t.Parallel()
	f, runs := lossFleet(t, 2, true)
	l := f.LoseWorker(Flaky{}.Kind(), LoseDuring)
	h, err := f.Client().Enqueue(context.Background(), Flaky{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := l.Wait(); id != h.ID() {
		t.Fatalf("lost task %s, want %s", id, h.ID())
	}
	lost := l.Worker().Name()
	res, err := result[string](t, f, h)
	if err != nil {
		t.Fatal(err)
	}
	var second, first run
	for i := 0; i < 2; i++ {
		if r := next(t, f, runs); r.cause != nil {
			first = r
		} else {
			second = r
		}
	}
	if first.worker != lost || !errors.Is(first.cause, worker.ErrLeaseLost) {
		t.Errorf("first run %+v, want on %s, ended by a lost lease", first, lost)
	}
	if second.worker == lost || second.deliveries != 2 || res != fmt.Sprintf("%s/2", second.worker) {
		t.Errorf("second run %+v, result %q; want it on the other worker, delivered a 2nd time, and its result", second, res)
	}
	fenced(t, f, l, h, res)
}

// LoseAfter with two workers: the work was done, then done again by the
// other worker (the case idempotent handlers are for); the outcome is the
// second run's.
func TestLoseAfterDoneTwice(t *testing.T) {
	t.Parallel()
	f, runs := lossFleet(t, 2, false)
	l := f.LoseWorker(Flaky{}.Kind(), LoseAfter)
	h, err := f.Client().Enqueue(context.Background(), Flaky{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := l.Wait(); id != h.ID() {
		t.Fatalf("lost task %s, want %s", id, h.ID())
	}
	lost := l.Worker().Name()
	res, err := result[string](t, f, h)
	if err != nil {
		t.Fatal(err)
	}
	first, second := next(t, f, runs), next(t, f, runs)
	if first.worker != lost || first.deliveries != 1 {
		t.Errorf("first run %+v, want on the lost worker %s", first, lost)
	}
	if second.worker == lost || second.deliveries != 2 || res != fmt.Sprintf("%s/2", second.worker) {
		t.Errorf("second run %+v, result %q; want it on the other worker, delivered a 2nd time, and its result", second, res)
	}
	fenced(t, f, l, h, res)
}

// fenced connects the lost worker again and stops it, which ends what it
// still tries to record, then checks the task kept res.
func fenced(t *testing.T, f *Fleet, l *Loss, h *client.Handle, res string) {
	t.Helper()
	l.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	if err := l.Worker().Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := result[string](t, f, h); err != nil || got != res {
		t.Errorf("after the lost worker stopped: result %q, %v; want %q", got, err, res)
	}
	if in := info(t, f, h); in.State != client.StateSucceeded {
		t.Errorf("task %s, want succeeded", in.State)
	}
}

// With a single worker, a lost task waits: nobody takes it over while the
// worker is cut off (its handler's ctx ends with the lease); once Restored
// the worker takes it up again.
func TestLoseOnlyWorkerWaits(t *testing.T) {
	t.Parallel()
	f, runs := lossFleet(t, 1, true)
	l := f.LoseWorker(Flaky{}.Kind(), LoseDuring)
	h, err := f.Client().Enqueue(context.Background(), Flaky{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Wait()
	first := next(t, f, runs)
	if !errors.Is(first.cause, worker.ErrLeaseLost) {
		t.Fatalf("first run %+v, want its ctx ended by the lost lease", first)
	}
	// The lease is lost, and nobody else may run the task.
	if in := info(t, f, h); in.State == client.StateSucceeded || in.Attempt != 1 {
		t.Fatalf("task %s, attempt %d; want it unfinished at attempt 1", in.State, in.Attempt)
	}
	select {
	case r := <-runs:
		t.Fatalf("ran again while its only worker was cut off: %+v", r)
	default:
	}
	l.Restore()
	res, err := result[string](t, f, h)
	if err != nil {
		t.Fatal(err)
	}
	second := next(t, f, runs)
	if res != second.worker+"/"+fmt.Sprint(second.deliveries) || second.cause != nil {
		t.Errorf("second run %+v, result %q", second, res)
	}
}
