package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, asynctest.LeakOptions()...)
}

type Timed struct {
	ID    int
	DueMs int64 // local clock
}

func (Timed) Kind() string { return "timed" }

// Delayed tasks start at their due time, not at the workers' next
// once-a-second look, and each exactly once with five coordinators running.
func TestCoordinatorsMoveDelayedTasksOnTime(t *testing.T) {
	t.Parallel()
	env := asynctest.Redis(t)
	queue := asynctest.Queue(t)
	asynctest.StartCoordinators(t, env, 5)
	var mu sync.Mutex
	runs := map[int]int{}
	late := map[int]time.Duration{}
	done := make(chan struct{}, 100)
	w, err := worker.New(env.RDB, &worker.Config{Queues: map[string]int{queue: 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a Timed) (int, error) {
		mu.Lock()
		runs[a.ID]++
		late[a.ID] = time.Since(time.UnixMilli(a.DueMs))
		mu.Unlock()
		done <- struct{}{}
		return a.ID, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop(context.Background()) }()
	c, err := client.New(env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 40
	for i := 0; i < n; i++ {
		// Let the workers' own forward loop fall asleep first, so that only
		// a coordinator can be on time.
		delay := 150*time.Millisecond + time.Duration(i)*10*time.Millisecond
		due := time.Now().Add(delay)
		if _, err := c.Enqueue(ctx, Timed{ID: i, DueMs: due.UnixMilli()}, &client.EnqueueOpts{Queue: queue, ProcessAt: due}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("%d of %d delayed tasks ran", i, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	worst := time.Duration(0)
	for i := 0; i < n; i++ {
		if runs[i] != 1 {
			t.Errorf("task %d ran %d times", i, runs[i])
		}
		if late[i] < -5*time.Millisecond {
			t.Errorf("task %d started %v before its due time", i, -late[i])
		}
		worst = max(worst, late[i])
	}
	// Generous for a loaded CI machine; the benchmark reports the p99.
	if worst > 300*time.Millisecond {
		t.Errorf("latest start %v after its due time", worst)
	}
	t.Logf("latest start after its due time: %v", worst)
}

func TestCoordinatorBadConfig(t *testing.T) {
	t.Parallel()
	env := asynctest.Redis(t)
	if _, err := coordinator.New(nil, nil); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := coordinator.New(env.RDB, &coordinator.Config{MaxSleep: time.Microsecond}); err == nil {
		t.Error("MaxSleep of 1µs accepted")
	}
}

type Job struct{ Fail bool }

func (Job) Kind() string { return "job" }

// One housekeeping pass trims streams, caps dead letters and sweeps the
// outbox of a queue no worker serves. On a Redis of its own: the pass
// covers every queue, and its small cap would purge other tests' dead
// letters.
func TestCoordinatorKeepsHouse(t *testing.T) {
	env := asynctest.IsolatedRedis(t, isolatedDB)
	served, unserved := asynctest.Queue(t), asynctest.Queue(t)+"-u"
	c := asynctest.Client(t, env)
	asynctest.StartWorker(t, env.RDB, served, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (int, error) {
			if j.Fail {
				return 0, worker.Permanent(errors.New("no"))
			}
			return 1, nil
		})
	}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var hs []*client.Handle
	for i := 0; i < 25; i++ {
		h, err := c.Enqueue(ctx, Job{Fail: i < 5}, &client.EnqueueOpts{Queue: served})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		_, _ = h.Outcome(ctx)
	}
	// A continuation whose parent ends in a queue no worker serves: the
	// outbox entry its end writes is left for the sweep.
	parent, err := c.Enqueue(ctx, Job{}, &client.EnqueueOpts{Queue: unserved, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cont, err := parent.ContinueWith(ctx, Job{}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: served}})
	if err != nil {
		t.Fatal(err)
	}
	uq := keys.ForQueue(unserved)
	_, pkey, _ := keys.SplitTaskID(parent.ID())
	if _, err := store.Cancel(ctx, env.RDB, uq, pkey, 60000, "test"); err != nil {
		t.Fatal(err)
	}
	if n, err := env.RDB.XLen(ctx, uq.Outbox()).Result(); err != nil || n != 1 {
		t.Fatalf("outbox of the unserved queue holds %d entries (%v), want 1", n, err)
	}
	if st, err := cont.State(ctx); err != nil || st != client.StateWaiting {
		t.Fatalf("continuation %q (%v) before the sweep", st, err)
	}
	sq := keys.ForQueue(served)
	if n, _ := env.RDB.XLen(ctx, sq.Stream()).Result(); n < 25 {
		t.Fatalf("stream holds %d entries before housekeeping", n)
	}

	co, err := coordinator.New(env.RDB, &coordinator.Config{DeadLetterCap: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := co.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cont.Outcome(ctx); err != nil {
		t.Fatalf("continuation after the sweep: %v", err)
	}
	dead, err := c.DeadTasks(ctx, served, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Errorf("%d dead letters kept, cap 2", len(dead))
	}
	if n, _ := env.RDB.XLen(ctx, sq.Stream()).Result(); n > 1 {
		t.Errorf("stream holds %d entries after housekeeping, want at most the continuation's", n)
	}
	qs, _ := env.RDB.SMembers(ctx, keys.Queues).Result()
	if !slices.Contains(qs, served) || !slices.Contains(qs, unserved) {
		t.Errorf("queue registry %v lacks %s or %s", qs, served, unserved)
	}
}

// isolatedDB is this package's database for asynctest.IsolatedRedis.
const isolatedDB = 10
