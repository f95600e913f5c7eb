package asynctest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/taskfleet/async/worker"
)

// Leaky is the kind of a handler that leaves a goroutine behind.
type Leaky struct{}

func (Leaky) Kind() string { return "kit.leaky" }

// leftBehind is the function the leaked goroutine runs: the report names it.
func leftBehind(release <-chan struct{}) { <-release }

// A goroutine a handler started and did not end makes the fleet's cleanup
// fail the test, with its stack; the fleet's own goroutines are all gone
// by then.
func TestFleetReportsLeakedGoroutine(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release) // for the package's goleak check
	tb := newFakeTB(t, t.Name())
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) {
				go leftBehind(release)
				return 1, nil
			})
		}, &Options{leakBound: 300 * time.Millisecond})
		h, err := f.Client().Enqueue(context.Background(), Leaky{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
		defer cancel()
		if _, err := h.Outcome(ctx); err != nil {
			tb.Fatal(err)
		}
	})
	errs := tb.failures()
	if len(errs) != 1 || !strings.Contains(errs[0], "1 goroutine(s) of the fleet still run") || !strings.Contains(errs[0], "asynctest.leftBehind") {
		t.Fatalf("failures %q, want one naming the leaked goroutine", errs)
	}
}

// A fleet whose handlers end everything they start passes its check, and
// only its own goroutines count: another fleet's, running at the same
// time, and the test's own are not its.
func TestFleetLeakCheckIsPerFleet(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	other := newFakeTB(t, "other")
	// On a miniredis of its own: on a real Redis, two fleets take turns.
	otherURL := "redis://" + miniredis.RunT(t).Addr() + "/0"
	started := make(chan *Fleet)
	done := make(chan struct{})
	go func() {
		defer close(done)
		other.run(func(tb testing.TB) {
			f := NewFleet(tb, func(w *worker.Worker) {
				worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) { return 1, nil })
			}, &Options{redisURL: otherURL})
			started <- f
			<-release // the other fleet lives on while the first stops
		})
	}()
	of := <-started
	unlabeled := make(chan struct{})
	go func() { <-unlabeled }() // the test's own: no fleet's label
	tb := newFakeTB(t, t.Name())
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) { return 1, nil })
		}, nil)
		if len(labeledGoroutines(f.id)) == 0 || len(labeledGoroutines(of.id)) == 0 {
			tb.Fatal("no goroutine carries a fleet's label")
		}
		h, err := f.Client().Enqueue(context.Background(), Leaky{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
		defer cancel()
		if _, err := h.Outcome(ctx); err != nil {
			tb.Fatal(err)
		}
	})
	if errs := tb.failures(); len(errs) != 0 {
		t.Errorf("failures %q, want none", errs)
	}
	close(unlabeled)
	close(release)
	<-done
	if errs := other.failures(); len(errs) != 0 {
		t.Errorf("the other fleet's failures %q, want none", errs)
	}
}
