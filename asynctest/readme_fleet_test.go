package asynctest_test

// The examples of docs/design-16-fleet.md (README "Testing your code"),
// compiled and run.

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

type Thumb struct{ Bytes int }

func (Thumb) Kind() string { return "thumb" }

type Album struct{}

func (Album) Kind() string { return "album" }

type Bump struct{ By int }

func (Bump) Kind() string { return "bump" }

func TestAlbumPipeline(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, r Thumb) (int, error) { return r.Bytes / 2, nil })
		worker.Handle(w, func(ctx context.Context, _ Album) (int, error) {
			sizes, err := patterns.JoinResults[int](ctx) // the members' results, in order
			total := 0
			for _, n := range sizes {
				total += n
			}
			return total, err
		})
		worker.Handle(w, func(ctx context.Context, b Bump) (int, error) {
			prev, err := worker.ParentResult[int](ctx) // what the task before returned
			return prev + b.By, err
		})
	}, &asynctest.Options{Workers: 2})
	ctx := context.Background()

	g, err := patterns.ForkJoin(ctx, f.Client(),
		[]client.Spec{{Args: Thumb{Bytes: 100}}, {Args: Thumb{Bytes: 300}}},
		&client.Spec{Args: Album{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ { // a chain of three after the join
		if h, err = h.ContinueWith(ctx, Bump{By: i}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := asynctest.WaitResult[int](f, h); got != 50+150+1+2+3 {
		t.Fatalf("got %d", got)
	}
}

type Digest struct{}

func (Digest) Kind() string { return "digest" }

func TestHourlyDigest(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	start := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	f := asynctest.NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, _ Digest) (int32, error) { return runs.Add(1), nil })
	}, &asynctest.Options{Clock: start, Embedded: true}) // Redis' clock stands at 09:00
	ctx := context.Background()
	if _, err := patterns.Repeat(ctx, f.Client(), "digest", client.Spec{Args: Digest{}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		at := f.Advance(time.Hour) // 10:00, 11:00, 12:00: the slot's task is queued
		id := "default/r.digest." + strconv.FormatInt(at.UnixMilli(), 10)
		f.WaitTask(id, client.StateSucceeded)
	}
	if n := runs.Load(); n != 3 {
		t.Fatalf("%d runs, want 3", n)
	}
}

type Charge struct{ Cents int }

func (Charge) Kind() string { return "charge" }

var errDeclined = errors.New("card declined")

func TestChargeRetries(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	f := asynctest.NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, c Charge) (int, error) {
			calls.Add(1)
			return c.Cents, nil
		})
	}, nil)
	ctx := context.Background()

	f.FailNext("charge", 2, nil) // two failed attempts, then the handler runs
	h, err := f.Client().Enqueue(ctx, Charge{Cents: 500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := asynctest.WaitResult[int](f, h); got != 500 || calls.Load() != 1 {
		t.Fatalf("result %d after %d calls", got, calls.Load())
	}
	if info := f.WaitTask(h.ID(), client.StateSucceeded); info.Attempt != 3 {
		t.Fatalf("attempt %d, want 3", info.Attempt)
	}

	f.FailNext("charge", 1, worker.Permanent(errDeclined)) // a failure that is not retried
	h, err = f.Client().Enqueue(ctx, Charge{Cents: 900}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitTask(h.ID(), client.StateDead)
}

type Ship struct{ Order string }

func (Ship) Kind() string { return "ship" }

func TestShipOnceEvenIfAWorkerDies(t *testing.T) {
	t.Parallel()
	var shipped atomic.Int32 // the side effect; a real handler would check an idempotency key
	f := asynctest.NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, s Ship) (int32, error) {
			return shipped.Add(1), nil
		})
	}, &asynctest.Options{Workers: 2})
	ctx := context.Background()

	loss := f.LoseWorker("ship", asynctest.LoseAfter) // done, then the worker dies before recording it
	h, err := f.Client().Enqueue(ctx, Ship{Order: "A-17"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := loss.Wait(); id != h.ID() {
		t.Fatalf("lost %s", id)
	}
	// The other worker takes the task over and runs it again.
	if n := asynctest.WaitResult[int32](f, h); n != 2 || shipped.Load() != 2 {
		t.Fatalf("result %d, shipped %d times", n, shipped.Load())
	}
}
