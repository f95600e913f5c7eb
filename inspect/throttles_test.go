package inspect_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// The dashboard reads a rate bucket by the key package ratelimit writes.
func TestRateBucketKey(t *testing.T) {
	for _, k := range []string{"s3:bucket-a", "queue:q", "g:q/grp.1"} {
		if keys.RateBucket(k) != ratelimit.BucketKey(k) {
			t.Errorf("%q: keys %q, ratelimit %q", k, keys.RateBucket(k), ratelimit.BucketKey(k))
		}
	}
}

// Gated is the kind of TestThrottles' tasks (TestHeldAndWhy limits Slow's
// at the same time, fleet-wide).
type Gated struct{}

func (Gated) Kind() string { return "inspect.gated" }

// Throttles lists a limit with its slot in use and the task it parked (a
// queue limit, on the test's own queue: a limit is fleet-wide), and a rate
// bucket with the time it is full again.
func TestThrottles(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	release := make(chan struct{})
	defer close(release)
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{QueueLimits: map[string]int{queue: 1}, Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, s Gated) (struct{}, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return struct{}{}, nil
		})
	}, true)
	for range 2 {
		if _, err := c.Enqueue(ctx, Gated{}, &client.EnqueueOpts{Queue: queue}); err != nil {
			t.Fatal(err)
		}
	}
	// A bucket that is not full: it took 2 of a burst of 3, one an hour.
	rk := "inspect.test:" + queue
	lim := ratelimit.New(e.RDB, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 3})
	if _, err := lim.Allow(ctx, rk, 2); err != nil {
		t.Fatal(err)
	}
	var got inspect.ThrottleInfo
	testenv.Eventually(t, 10*time.Second, "the limit to hold one slot and park one task", func() bool {
		var err error
		got, err = in.Throttles(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(got.Limits, inspect.LimitInfo{Scope: "queue:" + queue, InUse: 1, Parked: 1})
	})
	i := slices.IndexFunc(got.Rates, func(r inspect.RateInfo) bool { return r.Key == rk })
	if i < 0 {
		t.Fatalf("no bucket %q in %+v", rk, got.Rates)
	}
	// Two of an hour's tokens taken: full again in 2 h, less the time
	// since (Redis time, this test's margin 1 min).
	if r := got.Rates[i]; r.Refill > 2*time.Hour || r.Refill < 2*time.Hour-time.Minute || !r.FullAt.Equal(got.At.Add(r.Refill)) {
		t.Errorf("bucket %+v at %v", r, got.At)
	}
	if e.Mini != nil && !got.Complete {
		t.Errorf("a scan of a small server did not complete")
	}
}

// Relations lists a task's continuations, and a continuation the task it
// continues.
func TestRelations(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	parent, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	cont, err := parent.ContinueWith(ctx, Job{N: 2}, &client.ContinueOpts{OnlyOnSuccess: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := in.Relations(ctx, parent.ID(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Continuations, []string{cont.ID()}) || !slices.Equal(r.OnSuccessOnly, []bool{true}) || r.ContinuationsTotal != 1 ||
		len(r.Children) != 0 || r.ChildrenTotal != 0 || r.Continues != "" {
		t.Errorf("parent's relations: %+v", r)
	}
	r, err = in.Relations(ctx, cont.ID(), 10)
	if err != nil || r.Continues != parent.ID() || len(r.Continuations) != 0 {
		t.Errorf("continuation's relations: %+v, %v", r, err)
	}
	if _, err := in.Relations(ctx, "no slash", 10); err == nil {
		t.Error("a bad id accepted")
	}
}
