package coordinator_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

type Timed struct {
	ID    int
	DueMs int64 // local clock
}

func (Timed) Kind() string { return "timed" }

// Delayed tasks are moved into their streams at their due time by the
// coordinators, each exactly once with five coordinators running, and not
// by a coordinator's periodic look: the coordinators here look only once a
// minute unless woken, and no worker runs (workers move their own queues'
// due tasks once a second) until every task was moved. Times are Redis':
// a task's entry id is the Redis time it entered the stream.
func TestCoordinatorsMoveDelayedTasksOnTime(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	queue := testenv.Queue(t)
	const maxSleep = time.Minute
	for i := 0; i < 5; i++ {
		rdb := testenv.NewEnvClient(env)
		co, err := coordinator.New(context.Background(), rdb, &coordinator.Config{MaxSleep: maxSleep})
		if err != nil {
			t.Fatal(err)
		}
		if err := co.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := co.Stop(ctx); err != nil {
				t.Error(err)
			}
			_ = rdb.Close()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	c, err := client.New(context.Background(), env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 40
	due := make([]int64, n)
	for i := 0; i < n; i++ {
		at := time.Now().Add(300*time.Millisecond + time.Duration(i)*10*time.Millisecond)
		due[i] = at.UnixMilli()
		if _, err := c.Enqueue(ctx, Timed{ID: i, DueMs: due[i]}, &client.EnqueueOpts{Queue: queue, ProcessAt: at, ID: "t" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	q := keys.ForQueue(queue)
	testenv.Eventually(t, 40*time.Second, "every delayed task moved into the stream", func() bool {
		n, err := env.RDB.ZCard(ctx, q.Scheduled()).Result()
		return err == nil && n == 0
	})
	worst := time.Duration(0)
	for i := 0; i < n; i++ {
		st, err := store.State(ctx, env.RDB, q, "t"+strconv.Itoa(i), "")
		if err != nil {
			t.Fatal(err)
		}
		entered, err := strconv.ParseInt(strings.SplitN(st.EntryID, "-", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("task %d: state %q, entry id %q: %v", i, st.State, st.EntryID, err)
		}
		// The client turns ProcessAt into Redis time with its measured
		// clock offset (one machine here: a millisecond at most).
		if entered < due[i]-2 {
			t.Errorf("task %d entered the stream %d ms before its due time", i, due[i]-entered)
		}
		late := time.Duration(entered-due[i]) * time.Millisecond
		// A task moved only by a coordinator's periodic look would be up
		// to a minute late; half of that separates the two with room for
		// any busy machine.
		if late > maxSleep/2 {
			t.Errorf("task %d moved %v after its due time: not woken, moved by a periodic look", i, late)
		}
		worst = max(worst, late)
	}
	t.Logf("latest move into the stream after its due time (Redis time): %v", worst)

	// Each moved once: every task runs exactly once.
	var mu sync.Mutex
	runs := map[int]int{}
	done := make(chan struct{}, n)
	w, err := worker.New(context.Background(), env.RDB, &worker.Config{Queues: map[string]int{queue: 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a Timed) (int, error) {
		mu.Lock()
		runs[a.ID]++
		mu.Unlock()
		done <- struct{}{}
		return a.ID, nil
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop(context.Background()) }()
	for i := 0; i < n; i++ {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("%d of %d delayed tasks ran", i, n)
		}
	}
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		if runs[i] != 1 {
			t.Errorf("task %d ran %d times", i, runs[i])
		}
	}
}

func TestCoordinatorBadConfig(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	if _, err := coordinator.New(context.Background(), nil, nil); err == nil {
		t.Error("nil client accepted")
	}
	if _, err := coordinator.New(context.Background(), env.RDB, &coordinator.Config{MaxSleep: time.Microsecond}); err == nil {
		t.Error("MaxSleep of 1µs accepted")
	}
	if _, err := coordinator.New(context.Background(), env.RDB, &coordinator.Config{Retention: time.Microsecond}); err == nil || !strings.Contains(err.Error(), "Config.Retention") {
		t.Errorf("Retention of 1µs: %v; want refused", err)
	}
}

type Job struct{ Fail bool }

func (Job) Kind() string { return "job" }

// One housekeeping pass trims streams, caps dead letters and sweeps the
// outbox of a queue no worker serves. On a Redis of its own: the pass
// covers every queue, and its small cap would purge other tests' dead
// letters.
func TestCoordinatorKeepsHouse(t *testing.T) {
	env := testenv.IsolatedRedis(t, isolatedDB)
	served, unserved := testenv.Queue(t), testenv.Queue(t)+"-u"
	c := testenv.Client(t, env)
	testenv.StartWorker(t, env.RDB, served, nil, func(w *worker.Worker) {
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

	co, err := coordinator.New(context.Background(), env.RDB, &coordinator.Config{DeadLetterCap: 2})
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

// isolatedDB is this package's database for testenv.IsolatedRedis.
const isolatedDB = 10

// A continuation housekeeping ends without a run (its parent did not
// succeed) is kept for the coordinator's Config.Retention.
func TestSweptContinuationKeptForCoordinatorRetention(t *testing.T) {
	env := testenv.IsolatedRedis(t, isolatedDB)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := keys.ForQueue(testenv.Queue(t))
	if err := store.RegisterQueue(ctx, env.RDB, q.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateWaiting(ctx, env.RDB, q, "c", []byte("x"), "op-retain"); err != nil {
		t.Fatal(err)
	}
	if err := env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), Values: []any{"s", store.ContSpec(q.Name, "c", true), "p", q.Name + "/p", "st", "dead"}}).Err(); err != nil {
		t.Fatal(err)
	}
	const retention = time.Hour
	co, err := coordinator.New(context.Background(), env.RDB, &coordinator.Config{Retention: retention})
	if err != nil {
		t.Fatal(err)
	}
	if err := co.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := env.RDB.HGet(ctx, q.Task("c"), "st").Result(); err != nil || st != "cancelled" {
		t.Fatalf("continuation of a dead parent: state %q, %v; want cancelled", st, err)
	}
	if ttl := env.RDB.PTTL(ctx, q.Task("c")).Val(); ttl <= 0 || ttl > retention {
		t.Fatalf("cancelled continuation kept for %v; want the coordinator's retention, %v", ttl, retention)
	}
}
