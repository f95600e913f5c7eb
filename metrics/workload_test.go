package metrics_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
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
	delayedJob struct{} // enqueued with a delay
	stolenJob  struct{} // its first run loses its lease
)

func (okJob) Kind() string      { return "mt-ok" }
func (flakyJob) Kind() string   { return "mt-flaky" }
func (badJob) Kind() string     { return "mt-bad" }
func (blockJob) Kind() string   { return "mt-block" }
func (limitedJob) Kind() string { return "mt-limited" } // one at a time fleet-wide (Config.KindLimits)
func (ratedJob) Kind() string   { return "mt-rated" }   // enqueued under a rate key of one token an hour
func (delayedJob) Kind() string { return "mt-delayed" }
func (stolenJob) Kind() string  { return "mt-stolen" }

// work is the least time the handlers of mt-ok, mt-flaky and mt-bad run:
// they wait on a timer of work (that is their work, not a wait for a
// condition), so their durations have a known lower bound.
const work = 15 * time.Millisecond

func doWork(ctx context.Context) {
	t := time.NewTimer(work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done(): // a stop; then the durations are not checked
	}
}

var errBad = errors.New("bad input")

// After a known workload on one worker, every metric of the queue has the
// value the workload implies: nOK successes, nFlaky tasks that retry once
// then succeed, nBad dead (each of their runs lasting at least work), one
// cancelled while running, one parked by a full concurrency limit, one
// throttled by a rate limit, one delayed and one whose first run lost its
// lease.
func TestWorkloadMetrics(t *testing.T) {
	const nOK, nFlaky, nBad = 5, 2, 3
	const delay = 2 * time.Second
	env := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	q := testenv.Queue(t)
	c := newClient(t, env.RDB)
	var rk [4]byte
	_, _ = rand.Read(rk[:])
	rateKey := "mt:" + hex.EncodeToString(rk[:]) // a bucket of this run's own

	m, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: time.Hour})
	release := make(chan struct{})
	delayedAt := make(chan time.Time, 1) // Redis' clock when mt-delayed's handler ran
	var stolenRuns atomic.Int32
	testenv.StartWorker(t, env.RDB, q, &worker.Config{
		Observers:   []worker.Observer{m},
		Logger:      slog.New(slog.DiscardHandler), // the failures are on purpose
		Concurrency: 8,
		// Heartbeats and the takeover of ended leases every 2 s: the lost
		// lease below is noticed and its task taken back within seconds.
		Lease:      8 * time.Second,
		KindLimits: map[string]int{"mt-limited": 1},
		LimitWait:  time.Minute, // woken early by the slot's release
		RateLimits: []worker.RateLimit{{KeyPrefix: rateKey, Limit: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1}}},
	}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, _ okJob) (struct{}, error) {
			doWork(ctx)
			return struct{}{}, nil
		})
		worker.Handle(w, func(ctx context.Context, _ flakyJob) (struct{}, error) {
			doWork(ctx)
			if t, _ := worker.TaskFromContext(ctx); t.Attempt == 1 {
				return struct{}{}, errors.New("flaky")
			}
			return struct{}{}, nil
		})
		worker.Handle(w, func(ctx context.Context, _ badJob) (struct{}, error) {
			doWork(ctx)
			return struct{}{}, worker.Permanent(errBad)
		})
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
		worker.Handle(w, func(ctx context.Context, _ delayedJob) (struct{}, error) {
			now, err := env.RDB.Time(ctx).Result()
			if err != nil {
				return struct{}{}, err
			}
			select {
			case delayedAt <- now:
			default: // a second run: the first one's time stands
			}
			return struct{}{}, nil
		})
		worker.Handle(w, func(ctx context.Context, _ stolenJob) (struct{}, error) {
			if stolenRuns.Add(1) == 1 {
				<-ctx.Done() // the lease is lost: cancelled
				return struct{}{}, ctx.Err()
			}
			return struct{}{}, nil
		})
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
	// One whose lease the worker loses while it runs: the test takes its
	// entry to another consumer, as a worker that took the task over
	// would, and marks it idle past the lease. The worker's next heartbeat
	// finds the lease gone and cancels the run (lease lost); its takeover
	// of ended leases then takes the entry back and runs it again, and
	// that run succeeds. It is the queue's only task yet, so the only
	// entry pending.
	stolen := put(stolenJob{}, opts)
	testenv.Eventually(t, 10*time.Second, "the task to be stolen to start", func() bool { return counter("async_tasks_started_total", "mt-stolen") == 1 })
	stream := keys.ForQueue(q).Stream()
	pending, err := env.RDB.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: keys.Group, Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending entries %v, %v; want the running task's one", pending, err)
	}
	if err := env.RDB.Do(ctx, "XCLAIM", stream, keys.Group, "mt-thief", 0, pending[0].ID, "IDLE", time.Hour.Milliseconds(), "JUSTID").Err(); err != nil {
		t.Fatal(err)
	}
	handles = append(handles, stolen)

	// One delayed: its due time is Redis' (the scheduled set's score),
	// read while it waits.
	delayed := put(delayedJob{}, &client.EnqueueOpts{Queue: q, Delay: delay})
	info, err := inspect.New(env.RDB).Task(ctx, delayed.ID())
	if err != nil || info.State != inspect.StateScheduled || info.NextRunAt.IsZero() {
		t.Fatalf("the delayed task: %+v, %v; want it scheduled with its due time", info, err)
	}
	due := info.NextRunAt
	handles = append(handles, delayed)

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
	testenv.Eventually(t, 10*time.Second, "the blocking task to start", func() bool { return counter("async_tasks_started_total", "mt-block") == 1 })
	if _, err := blocked.Cancel(ctx); err != nil {
		t.Fatal(err)
	}

	// One parked by the kind's limit while the first holds the slot.
	first := put(limitedJob{Block: true}, opts)
	testenv.Eventually(t, 10*time.Second, "the first limited task to start", func() bool { return counter("async_tasks_started_total", "mt-limited") == 1 })
	second := put(limitedJob{}, opts)
	testenv.Eventually(t, 10*time.Second, "the second limited task to park", func() bool { return counter("async_task_limit_parks_total", "mt-limited") == 1 })
	close(release)
	handles = append(handles, first, second)

	// Two under a bucket of one token an hour: one runs, one is throttled.
	ro := &client.EnqueueOpts{Queue: q, RateKey: rateKey + "x"}
	put(ratedJob{}, ro)
	put(ratedJob{}, ro)
	testenv.Eventually(t, 10*time.Second, "one rated task to succeed and one to be throttled", func() bool {
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
	// The stolen task's second run may end before its first one returns
	// from its cancel and reports the loss.
	testenv.Eventually(t, 10*time.Second, "the lost lease to be reported", func() bool {
		return counter("async_task_lease_losses_total", "mt-stolen") == 1
	})

	// Every recorded outcome was observed before it was recorded, so the
	// counters are final now.
	type kindWant struct {
		started, succeeded, retried, dead, cancelled, failed, parks, throttles, lost float64
	}
	wants := map[string]kindWant{
		"mt-ok":      {started: nOK, succeeded: nOK},
		"mt-flaky":   {started: 2 * nFlaky, succeeded: nFlaky, retried: nFlaky, failed: nFlaky},
		"mt-bad":     {started: nBad, dead: nBad, failed: nBad},
		"mt-block":   {started: 1, cancelled: 1},
		"mt-limited": {started: 2, succeeded: 2, parks: 1},
		"mt-rated":   {started: 1, succeeded: 1, throttles: 1},
		"mt-delayed": {started: 1, succeeded: 1},
		// The lost run ends with no outcome of its own, so it is not
		// timed: the second run is the one end.
		"mt-stolen": {started: 2, succeeded: 1, lost: 1},
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
			lost:      value(t, reg, "async_task_lease_losses_total", ql(kind)...),
		}
		if got != w {
			t.Errorf("kind %s: %+v, want %+v", kind, got, w)
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
	// Every run of the timed kinds lasted at least work: the durations sum
	// to at least runs×work, and no run is in a bucket below work.
	for kind, runs := range map[string]int{"mt-ok": nOK, "mt-flaky": 2 * nFlaky, "mt-bad": nBad} {
		h := histogramOf(t, reg, "async_task_duration_seconds", ql(kind)...)
		if h.GetSampleCount() != uint64(runs) || h.GetSampleSum() < float64(runs)*work.Seconds() {
			t.Errorf("kind %s: %d durations summing to %vs, want %d summing to at least %vs", kind, h.GetSampleCount(), h.GetSampleSum(), runs, float64(runs)*work.Seconds())
		}
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() < work.Seconds() && b.GetCumulativeCount() != 0 {
				t.Errorf("kind %s: %d run(s) of at most %vs, want none under %v", kind, b.GetCumulativeCount(), b.GetUpperBound(), work)
			}
		}
	}

	// Queued is measured from the moment the task's entry entered its
	// stream, in Redis time. A delayed task enters it when a worker (or a
	// coordinator) moves it there, at or after its due time: the delay
	// itself is not counted (nor how late the move was). Measured from the
	// enqueue, it would be at least the delay. The handler ran no earlier
	// than the due time, by Redis' clock.
	select {
	case at := <-delayedAt:
		if at.UnixMilli() < due.UnixMilli() {
			t.Errorf("the delayed task ran at %v, before its due time %v (Redis time)", at, due)
		}
	default:
		t.Error("the delayed task's handler did not run")
	}
	if n, sum := histogram(t, reg, "async_task_queued_seconds", ql("mt-delayed")...); n != 1 || sum < 0 || sum >= delay.Seconds() {
		t.Errorf("the delayed task was queued %vs (%d start), want one start queued less than its delay %v", sum, n, delay)
	}

	// The queue's depth, read now.
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Held: the throttled task, parked for an hour. Processed: the
	// attempts that succeeded (nOK, nFlaky, 2 limited, 1 rated, 1 delayed,
	// 1 stolen: its lost run recorded nothing) or failed (nFlaky retried,
	// nBad dead), as the completion scripts count them.
	checkDepth(t, reg, q, map[string]float64{"waiting": 0, "running": 0, "scheduled": 0, "retrying": 0, "held": 1, "dead": nBad})
	for name, want := range map[string]float64{
		"async_queue_paused":          0,
		"async_queue_processed_total": nOK + 2*nFlaky + 2 + 1 + 1 + 1 + nBad,
		"async_queue_failed_total":    nFlaky + nBad,
	} {
		if got := value(t, reg, name, "queue", q); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
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

// histogramOf gathers g and returns the histogram of the metric name whose
// labels include labels (name, value pairs), failing t when there is none.
func histogramOf(t testing.TB, g prometheus.Gatherer, name string, labels ...string) *dto.Histogram {
	t.Helper()
	histogram(t, g, name, labels...) // exactly one series
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelOf(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			if m.Histogram != nil {
				return m.Histogram
			}
		}
	}
	t.Fatalf("no histogram %s%v", name, labels)
	return nil
}
