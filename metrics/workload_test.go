package metrics_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// The kinds of the workload, one per behaviour, so each metric's series
// of each kind has a known value.
type (
	okJob      struct{} // succeeds
	flakyJob   struct{} // fails its first attempt, then succeeds
	badJob     struct{} // fails permanently: dead at once
	blockJob   struct{} // runs until cancelled
	limitedJob struct{ Block bool }
	ratedJob   struct{}
)

func (okJob) Kind() string      { return "mt-ok" }
func (flakyJob) Kind() string   { return "mt-flaky" }
func (badJob) Kind() string     { return "mt-bad" }
func (blockJob) Kind() string   { return "mt-block" }
func (limitedJob) Kind() string { return "mt-limited" } // one at a time fleet-wide (Config.KindLimits)
func (ratedJob) Kind() string   { return "mt-rated" }   // enqueued under a rate key of one token an hour

var errBad = errors.New("bad input")

// After a known workload on one worker, every metric of the queue has the
// value the workload implies: nOK successes, nFlaky tasks that retry once
// then succeed, nBad dead, one cancelled while running, one parked by a
// full concurrency limit and one throttled by a rate limit.
func TestWorkloadMetrics(t *testing.T) {
	const nOK, nFlaky, nBad = 5, 2, 3
	env := asynctest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q := asynctest.Queue(t)
	c := newClient(t, env.RDB)
	var rk [4]byte
	_, _ = rand.Read(rk[:])
	rateKey := "mt:" + hex.EncodeToString(rk[:]) // a bucket of this run's own

	m, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: time.Hour})
	release := make(chan struct{})
	asynctest.StartWorker(t, env.RDB, q, &worker.Config{
		Observers:   []worker.Observer{m},
		Logger:      slog.New(slog.DiscardHandler), // the failures are on purpose
		Concurrency: 8,
		KindLimits:  map[string]int{"mt-limited": 1},
		LimitWait:   time.Minute, // woken early by the slot's release
		RateLimits:  []worker.RateLimit{{KeyPrefix: rateKey, Limit: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1}}},
	}, func(w *worker.Worker) {
		worker.Handle(w, func(context.Context, okJob) (struct{}, error) { return struct{}{}, nil })
		worker.Handle(w, func(ctx context.Context, _ flakyJob) (struct{}, error) {
			if t, _ := worker.TaskFromContext(ctx); t.Attempt == 1 {
				return struct{}{}, errors.New("flaky")
			}
			return struct{}{}, nil
		})
		worker.Handle(w, func(context.Context, badJob) (struct{}, error) { return struct{}{}, worker.Permanent(errBad) })
		worker.Handle(w, func(ctx context.Context, _ blockJob) (struct{}, error) {
			<-ctx.Done()
			return struct{}{}, ctx.Err()
		})
		worker.Handle(w, func(ctx context.Context, a limitedJob) (struct{}, error) {
			if a.Block {
				select {
				case <-release:
				case <-ctx.Done():
					return struct{}{}, ctx.Err()
				}
			}
			return struct{}{}, nil
		})
		worker.Handle(w, func(context.Context, ratedJob) (struct{}, error) { return struct{}{}, nil })
	}, true)

	ql := func(kind string, more ...string) []string { return append([]string{"queue", q, "kind", kind}, more...) }
	counter := func(name, kind string, more ...string) float64 {
		s, _ := find(t, reg, name, ql(kind, more...)...)
		return s.Value
	}
	opts := &client.EnqueueOpts{Queue: q}
	var handles []*client.Handle
	put := func(args client.Args, o *client.EnqueueOpts) *client.Handle {
		t.Helper()
		h, err := c.Enqueue(ctx, args, o)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for range nOK {
		handles = append(handles, put(okJob{}, opts))
	}
	for range nFlaky {
		handles = append(handles, put(flakyJob{}, &client.EnqueueOpts{Queue: q, MaxAttempts: 3}))
	}
	var dead []*client.Handle
	for range nBad {
		dead = append(dead, put(badJob{}, opts))
	}

	// One cancelled while it runs.
	blocked := put(blockJob{}, opts)
	asynctest.Eventually(t, 10*time.Second, "the blocking task to start", func() bool { return counter("async_tasks_started_total", "mt-block") == 1 })
	if _, err := blocked.Cancel(ctx); err != nil {
		t.Fatal(err)
	}

	// One parked by the kind's limit while the first holds the slot.
	first := put(limitedJob{Block: true}, opts)
	asynctest.Eventually(t, 10*time.Second, "the first limited task to start", func() bool { return counter("async_tasks_started_total", "mt-limited") == 1 })
	second := put(limitedJob{}, opts)
	asynctest.Eventually(t, 10*time.Second, "the second limited task to park", func() bool { return counter("async_task_limit_parks_total", "mt-limited") == 1 })
	close(release)
	handles = append(handles, first, second)

	// Two under a bucket of one token an hour: one runs, one is throttled.
	ro := &client.EnqueueOpts{Queue: q, RateKey: rateKey + "x"}
	put(ratedJob{}, ro)
	put(ratedJob{}, ro)
	asynctest.Eventually(t, 10*time.Second, "one rated task to succeed and one to be throttled", func() bool {
		return counter("async_tasks_total", "mt-rated", "outcome", "succeeded") == 1 && counter("async_task_throttle_waits_total", "mt-rated") == 1
	})

	for _, h := range handles {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatalf("task %s: %v", h.ID(), err)
		}
	}
	for _, h := range dead {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrDead) {
			t.Fatalf("task %s: %v, want dead", h.ID(), err)
		}
	}
	if _, err := blocked.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("blocking task: %v, want cancelled", err)
	}

	// Every recorded outcome was observed before it was recorded, so the
	// counters are final now.
	type kindWant struct {
		started, succeeded, retried, dead, cancelled, failed, parks, throttles float64
	}
	wants := map[string]kindWant{
		"mt-ok":      {started: nOK, succeeded: nOK},
		"mt-flaky":   {started: 2 * nFlaky, succeeded: nFlaky, retried: nFlaky, failed: nFlaky},
		"mt-bad":     {started: nBad, dead: nBad, failed: nBad},
		"mt-block":   {started: 1, cancelled: 1},
		"mt-limited": {started: 2, succeeded: 2, parks: 1},
		"mt-rated":   {started: 1, succeeded: 1, throttles: 1},
	}
	for kind, w := range wants {
		got := kindWant{
			started:   value(t, reg, "async_tasks_started_total", ql(kind)...),
			succeeded: value(t, reg, "async_tasks_total", ql(kind, "outcome", "succeeded")...),
			retried:   value(t, reg, "async_tasks_total", ql(kind, "outcome", "retried")...),
			dead:      value(t, reg, "async_tasks_total", ql(kind, "outcome", "dead")...),
			cancelled: value(t, reg, "async_tasks_total", ql(kind, "outcome", "cancelled")...),
			failed:    value(t, reg, "async_tasks_failed_total", ql(kind)...),
			parks:     value(t, reg, "async_task_limit_parks_total", ql(kind)...),
			throttles: value(t, reg, "async_task_throttle_waits_total", ql(kind)...),
		}
		if got != w {
			t.Errorf("kind %s: %+v, want %+v", kind, got, w)
		}
		if n := value(t, reg, "async_task_lease_losses_total", ql(kind)...); n != 0 {
			t.Errorf("kind %s: %v lease losses, want 0", kind, n)
		}
		// Each start is timed from its entry, each end with a handler run.
		if n, _ := histogram(t, reg, "async_task_queued_seconds", ql(kind)...); float64(n) != w.started {
			t.Errorf("kind %s: async_task_queued_seconds count %d, want %v", kind, n, w.started)
		}
		if n, _ := histogram(t, reg, "async_task_duration_seconds", ql(kind)...); float64(n) != w.succeeded+w.retried+w.dead+w.cancelled {
			t.Errorf("kind %s: async_task_duration_seconds count %d, want %v", kind, n, w.succeeded+w.retried+w.dead+w.cancelled)
		}
	}
	// The cancelled task ran until its cancel: its duration is a real run.
	if _, sum := histogram(t, reg, "async_task_duration_seconds", ql("mt-block")...); sum <= 0 {
		t.Errorf("the cancelled task's run time is %vs", sum)
	}

	// The queue's depth, read now.
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	checkDepth(t, reg, q, map[string]float64{"waiting": 0, "running": 0, "dead": nBad})
}

// checkDepth compares the async_queue_tasks series of queue q with want,
// state by state.
func checkDepth(t *testing.T, g prometheus.Gatherer, q string, want map[string]float64) {
	t.Helper()
	for state, w := range want {
		if got := value(t, g, "async_queue_tasks", "queue", q, "state", state); got != w {
			t.Errorf("async_queue_tasks{queue=%q,state=%q} = %v, want %v", q, state, got, w)
		}
	}
}
