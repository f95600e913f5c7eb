package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

type obsArgs struct {
	Fail  int  // fail this many attempts
	Block bool // wait for the test's release (or the ctx)
}

func (obsArgs) Kind() string { return "obs" }

// recorder keeps every event it observes.
type recorder struct {
	mu  sync.Mutex
	evs []worker.Event
}

func (r *recorder) Observe(e worker.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

// of returns the events of the task id, in order.
func (r *recorder) of(id string) []worker.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []worker.Event
	for _, e := range r.evs {
		if e.Task.ID == id {
			out = append(out, e)
		}
	}
	return out
}

func types(evs []worker.Event) string {
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = string(e.Type)
	}
	return strings.Join(s, ",")
}

// obsWork is how long each attempt of an obsArgs task works.
const obsWork = 20 * time.Millisecond

// obsHandler fails the first a.Fail attempts, each after obsWork, and
// reports on ran how long each attempt ran, seen from inside.
func obsHandler(release <-chan struct{}, ran chan<- time.Duration) func(ctx context.Context, a obsArgs) (int, error) {
	return func(ctx context.Context, a obsArgs) (int, error) {
		t0 := time.Now()
		defer func() {
			if ran != nil {
				ran <- time.Since(t0)
			}
		}()
		if a.Block {
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		time.Sleep(obsWork) // the attempt's work
		tk, _ := worker.TaskFromContext(ctx)
		if tk.Attempt <= a.Fail {
			return 0, fmt.Errorf("boom %d", tk.Attempt)
		}
		return tk.Attempt, nil
	}
}

// A task that fails twice and then succeeds, and one that fails every
// attempt: each attempt reports started, then how it ended, with the
// handler's run time, the backoff and the handler's error.
func TestObserverEventsOfRetriesAndDeath(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	rec := &recorder{}
	ran := make(chan time.Duration, 10)
	b.worker(t, &worker.Config{Observers: []worker.Observer{rec}, Backoff: func(int) time.Duration { return 7 * time.Millisecond }},
		func(w *worker.Worker) { worker.Handle(w, obsHandler(nil, ran)) })
	ok, err := b.c.Enqueue(ctx, obsArgs{Fail: 2}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := client.Result[int](ctx, ok); err != nil || n != 3 {
		t.Fatalf("got %d, %v; want success on attempt 3", n, err)
	}
	dead, err := b.c.Enqueue(ctx, obsArgs{Fail: 9}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Outcome(ctx); !errors.Is(err, client.ErrDead) {
		t.Fatalf("got %v; want dead", err)
	}
	var longest time.Duration
	for range 5 {
		longest = max(longest, <-ran)
	}
	check := func(h *client.Handle, want string, maxAttempts int) {
		t.Helper()
		evs := rec.of(h.ID())
		if got := types(evs); got != want {
			t.Fatalf("%s: events %s; want %s", h.ID(), got, want)
		}
		for i, e := range evs {
			attempt := i/2 + 1
			if e.Task.Queue != b.queue || e.Task.Kind != "obs" || e.Task.Attempt != attempt || e.Task.MaxAttempts != maxAttempts {
				t.Fatalf("%s: event %d names %+v; want queue %s, kind obs, attempt %d of %d", h.ID(), i, e.Task, b.queue, attempt, maxAttempts)
			}
			if e.Type == worker.EventStarted {
				if e.Duration != 0 || e.Delay != 0 || e.Err != nil {
					t.Fatalf("%s: started event %+v carries an end's fields", h.ID(), e)
				}
				continue
			}
			// The handler's run time, as the worker measured it around the
			// handler, covers the attempt's work.
			if e.Duration < obsWork || e.Queued != 0 {
				t.Fatalf("%s: %s event has duration %v, queued %v; want at least %v, none", h.ID(), e.Type, e.Duration, e.Queued, obsWork)
			}
			switch e.Type {
			case worker.EventRetried:
				if e.Delay != 7*time.Millisecond || e.Err == nil || e.Err.Error() != fmt.Sprintf("boom %d", attempt) {
					t.Fatalf("%s: retried event delay %v, err %v; want 7ms, boom %d", h.ID(), e.Delay, e.Err, attempt)
				}
			case worker.EventDead:
				if e.Delay != 0 || e.Err == nil || e.Err.Error() != fmt.Sprintf("boom %d", attempt) {
					t.Fatalf("%s: dead event delay %v, err %v; want none, boom %d", h.ID(), e.Delay, e.Err, attempt)
				}
			case worker.EventSucceeded:
				if e.Delay != 0 || e.Err != nil {
					t.Fatalf("%s: succeeded event delay %v, err %v; want none", h.ID(), e.Delay, e.Err)
				}
			}
		}
	}
	check(ok, "started,retried,started,retried,started,succeeded", 3)
	check(dead, "started,retried,started,dead", 2)
	if longest < obsWork {
		t.Fatalf("an attempt ran %v; want at least %v", longest, obsWork)
	}
}

// EventStarted's Queued is the time since the entry entered its stream, in
// Redis time: a task enqueued while no worker serves its queue waits at
// least as long as the test holds the worker back, and no longer than
// Redis' clock says passed between the enqueue and the handler's start.
func TestObserverQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const hold = 300 * time.Millisecond
	before, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	after, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "redis' clock moved past the hold", func() bool {
		now, err := b.env.RDB.Time(ctx).Result()
		return err == nil && now.Sub(after) >= hold
	})
	rec := &recorder{}
	startedAt := make(chan time.Time, 1)
	b.worker(t, &worker.Config{Observers: []worker.Observer{rec}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a obsArgs) (int, error) {
			now, err := b.env.RDB.Time(ctx).Result()
			if err != nil {
				return 0, err
			}
			startedAt <- now
			return 1, nil
		})
	})
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	evs := rec.of(h.ID())
	if got := types(evs); got != "started,succeeded" {
		t.Fatalf("events %s; want started,succeeded", got)
	}
	// The entry's id has Redis' milliseconds at the enqueue (between before
	// and after); the worker reads Redis' time through its measured
	// offset, which is off by at most half the round trip it measured it
	// with: clockSlack bounds that on loopback.
	const clockSlack = 25 * time.Millisecond
	q := evs[0].Queued
	lo := hold - clockSlack
	hi := (<-startedAt).Sub(before.Truncate(time.Millisecond)) + clockSlack
	if q < lo || q > hi {
		t.Fatalf("queued %v; want between %v and %v", q, lo, hi)
	}
}

// A running task cancelled by the client reports cancelled, with
// ErrCancelled and its run time.
func TestObserverCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	rec := &recorder{}
	started := make(chan struct{})
	b.worker(t, &worker.Config{Observers: []worker.Observer{rec}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a obsArgs) (int, error) {
			close(started)
			<-ctx.Done()
			return 0, ctx.Err()
		})
	})
	h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want cancelled", err)
	}
	evs := rec.of(h.ID())
	if got := types(evs); got != "started,cancelled" {
		t.Fatalf("events %s; want started,cancelled", got)
	}
	if e := evs[1]; !errors.Is(e.Err, worker.ErrCancelled) || e.Duration <= 0 {
		t.Fatalf("cancelled event %+v; want ErrCancelled and a run time", e)
	}
}

// A task a rate limit refuses reports throttled with how long it is
// parked; one a full concurrency limit refuses reports limit_parked with
// Config.LimitWait. Neither starts while parked.
func TestObserverParks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	rec := &recorder{}
	release := make(chan struct{})
	testenv.StartWorker(t, b.env.RDB, b.queue, &worker.Config{Observers: []worker.Observer{rec}, Concurrency: 4,
		KindLimits: map[string]int{"obs": 1}, LimitWait: time.Minute,
		RateLimits: []worker.RateLimit{{KeyPrefix: "obs:", Limit: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1}}}},
		func(w *worker.Worker) { worker.Handle(w, obsHandler(release, nil)) }, true)
	first, err := b.c.Enqueue(ctx, obsArgs{Block: true}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first task started", func() bool { return len(rec.of(first.ID())) > 0 })
	limited, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the second task parked by the limit", func() bool { return len(rec.of(limited.ID())) > 0 })
	close(release)
	if _, err := first.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := limited.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	evs := rec.of(limited.ID())
	if got := types(evs); got != "limit_parked,started,succeeded" {
		t.Fatalf("limited task: events %s; want limit_parked,started,succeeded", got)
	}
	if e := evs[0]; e.Delay != time.Minute || e.Err != nil || e.Task.Kind != "obs" {
		t.Fatalf("limit_parked event %+v; want delay 1m, no error", e)
	}

	// Two tasks under one bucket of one token per hour: the second waits
	// for the next token, about an hour.
	var rated []*client.Handle
	for range 2 {
		h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue, RateKey: "obs:" + b.queue})
		if err != nil {
			t.Fatal(err)
		}
		rated = append(rated, h)
	}
	testenv.Eventually(t, 10*time.Second, "one rated task ran, the other throttled", func() bool {
		a, b := types(rec.of(rated[0].ID())), types(rec.of(rated[1].ID()))
		return a == "started,succeeded" && b == "throttled" || a == "throttled" && b == "started,succeeded"
	})
	for _, h := range rated {
		evs := rec.of(h.ID())
		if evs[0].Type != worker.EventThrottled {
			continue
		}
		if d := evs[0].Delay; d <= 59*time.Minute || d > time.Hour || evs[0].Err != nil {
			t.Fatalf("throttled event %+v; want a delay of about an hour (the bucket's next token), no error", evs[0])
		}
	}
}

// An entry without the library's envelope is dead-lettered before any
// handler runs: dead, with the reason, under the entry's id.
func TestObserverMalformed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	rec := &recorder{}
	b.worker(t, &worker.Config{Observers: []worker.Observer{rec}}, func(w *worker.Worker) { worker.Handle(w, obsHandler(nil, nil)) })
	id, err := b.env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: keys.ForQueue(b.queue).Stream(), Values: []any{"x", "y"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	tid := keys.TaskID(b.queue, id)
	testenv.Eventually(t, 10*time.Second, "the malformed entry reported", func() bool { return len(rec.of(tid)) > 0 })
	evs := rec.of(tid)
	if got := types(evs); got != "dead" {
		t.Fatalf("events %s; want dead", got)
	}
	if e := evs[0]; e.Err == nil || !strings.Contains(e.Err.Error(), "malformed entry") || e.Duration != 0 || e.Task.Queue != b.queue {
		t.Fatalf("dead event %+v; want a malformed entry's reason, no run time", e)
	}
}

// A handler whose heartbeats stop getting through is cancelled: its attempt
// reports lease_lost with the cause, not an end.
func TestObserverLeaseLost(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	started := make(chan struct{}, 2)
	var runs atomic.Int64
	r := newFaultRig(t, &worker.Config{Lease: time.Second, Observers: []worker.Observer{rec}}, func(ctx context.Context, a faultArgs) (int, error) {
		if runs.Add(1) > 1 {
			return a.N, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		return 0, ctx.Err()
	})
	ctx := ctxT(t)
	h, err := r.c.Enqueue(ctx, faultArgs{N: 3}, &client.EnqueueOpts{Queue: r.queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.p.holeAll()
	testenv.Eventually(t, 10*time.Second, "lease_lost reported", func() bool { return len(rec.of(h.ID())) >= 2 })
	r.p.heal()
	if n, err := client.Result[int](ctx, h); err != nil || n != 3 {
		t.Fatalf("got %v, %v; want the task run again and succeeded", n, err)
	}
	evs := rec.of(h.ID())
	if got := types(evs); got != "started,lease_lost,started,succeeded" {
		t.Fatalf("events %s; want started,lease_lost,started,succeeded", got)
	}
	if e := evs[1]; !errors.Is(e.Err, context.Canceled) || e.Duration <= 0 {
		t.Fatalf("lease_lost event %+v; want the handler's error and its run time", e)
	}
}

// A task whose deadline passes reports cancelled with an error matching
// context.DeadlineExceeded: while it runs (with its run time), or before
// it starts (no run).
func TestObserverDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	rec := &recorder{}
	b.worker(t, &worker.Config{Observers: []worker.Observer{rec}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a obsArgs) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
	})
	running, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue, Deadline: time.Now().Add(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Outcome(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want the deadline", err)
	}
	evs := rec.of(running.ID())
	if got := types(evs); got != "started,cancelled" {
		t.Fatalf("running task: events %s; want started,cancelled", got)
	}
	if e := evs[1]; !errors.Is(e.Err, context.DeadlineExceeded) || e.Duration <= 0 {
		t.Fatalf("cancelled event %+v; want DeadlineExceeded and a run time", e)
	}
	// Its deadline passes while it waits in its stream: the worker sees it
	// only after that (the test holds the worker's queue: a worker of a
	// queue that no task reaches before the deadline).
	late := b.queue + "-late"
	h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: late, Deadline: time.Now().Add(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	enqueued, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The client put the deadline in Redis' time through its measured
	// offset; 200 ms more leaves that estimate room.
	testenv.Eventually(t, 10*time.Second, "the deadline passed in Redis' time", func() bool {
		now, err := b.env.RDB.Time(ctx).Result()
		return err == nil && now.Sub(enqueued) > 250*time.Millisecond
	})
	testenv.StartWorker(t, b.env.RDB, late, &worker.Config{Observers: []worker.Observer{rec}}, func(w *worker.Worker) {
		worker.Handle(w, obsHandler(nil, nil))
	}, false)
	if _, err := h.Outcome(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want the deadline", err)
	}
	evs = rec.of(h.ID())
	if got := types(evs); got != "cancelled" {
		t.Fatalf("late task: events %s; want cancelled alone", got)
	}
	if e := evs[0]; !errors.Is(e.Err, context.DeadlineExceeded) || e.Duration != 0 {
		t.Fatalf("cancelled event %+v; want DeadlineExceeded and no run", e)
	}
}
