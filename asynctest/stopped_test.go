package asynctest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// With the fleet's clock stopped, every process of the fleet reads Redis'
// stopped time: a Delay d, a ProcessAt in the stopped clock's frame and a
// retry's backoff fall due at the Advance that reaches them exactly, however
// much real time passed since the clients last read Redis' clock.
func TestAdvanceMeetsDelays(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		opts func(f *Fleet) *client.EnqueueOpts
	}{
		{"Delay", func(*Fleet) *client.EnqueueOpts { return &client.EnqueueOpts{Delay: time.Hour} }},
		{"ProcessAt", func(f *Fleet) *client.EnqueueOpts { return &client.EnqueueOpts{ProcessAt: f.Now().Add(time.Hour)} }},
	} {
		for _, clock := range []bool{true, false} {
			name := tc.name + "/Options.Clock"
			if !clock {
				name = tc.name + "/afterAdvance"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				o := &Options{Embedded: true}
				if clock {
					o.Clock = t0
				}
				f := NewFleet(t, func(w *worker.Worker) {
					worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) { return a.N, nil })
				}, o)
				if !clock {
					f.Advance(0) // stops the clock where it is
				}
				ctx := context.Background()
				h, err := f.Client().Enqueue(ctx, Flaky{N: 7}, tc.opts(f))
				if err != nil {
					t.Fatal(err)
				}
				f.Advance(time.Hour - time.Millisecond)
				if st := info(t, f, h).State; st != client.StateScheduled {
					t.Fatalf("a millisecond before its due time: %q; want scheduled", st)
				}
				f.Advance(time.Millisecond)
				if n, err := result[int](t, f, h); err != nil || n != 7 {
					t.Fatalf("result %d, %v", n, err)
				}
			})
		}
	}
}

// A retry's backoff, decided by the worker, falls due at the Advance that
// reaches it, though the failed attempt took real time.
func TestAdvanceMeetsBackoff(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) {
			if tk, _ := worker.TaskFromContext(ctx); tk.Attempt == 1 {
				// The attempt takes real time, while Redis' clock stands
				// still: the worker's clock must not count it.
				<-time.After(50 * time.Millisecond)
				return 0, errors.New("first attempt fails")
			}
			return a.N, nil
		})
	}, &Options{Clock: t0, Embedded: true, Worker: worker.Config{Backoff: func(int) time.Duration { return time.Hour }}})
	ctx := context.Background()
	h, err := f.Client().Enqueue(ctx, Flaky{N: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitTask(h.ID(), client.StateRetrying)
	f.Advance(time.Hour - time.Millisecond)
	if st := info(t, f, h).State; st != client.StateRetrying {
		t.Fatalf("a millisecond before the retry's due time: %q; want retrying", st)
	}
	f.Advance(time.Millisecond)
	if n, err := result[int](t, f, h); err != nil || n != 3 {
		t.Fatalf("result %d, %v", n, err)
	}
}
