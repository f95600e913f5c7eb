package worker_test

// Pausing a queue (inspect.Pause) across worker processes, and the workers'
// registry (inspect.Workers).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

type pzJob struct{ N int }

func (pzJob) Kind() string { return "pz.job" }

// rolePZ: a worker (4 handlers, 1 s blocking reads, as by default) whose
// pz.job handler pushes "<Redis ms at its start>|<N>" to pzStarts, until
// the test ends the process.
const rolePZ = "pz.worker"

func init() { extraRoles[rolePZ] = pzMain }

// pzStarts is the list the pz.job handlers of queue report their starts to.
func pzStarts(queue string) string { return "pztest:{q:" + queue + "}:starts" }

func pzMain(string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	queue := os.Getenv(envQueue)
	leaseMs, _ := strconv.Atoi(os.Getenv(envLease))
	rdb := asynctest.NewClient(os.Getenv(envAddr))
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "subprocess pz: "+format+"\n", args...)
		os.Exit(3)
	}
	w, err := worker.New(context.Background(), rdb, &worker.Config{
		Queues:      map[string]int{queue: 1},
		Lease:       time.Duration(leaseMs) * time.Millisecond,
		Concurrency: 4,
		Logger:      log,
	})
	if err != nil {
		fail("new worker: %v", err)
	}
	worker.Handle(w, func(ctx context.Context, a pzJob) (struct{}, error) {
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, rdb.RPush(ctx, pzStarts(queue), fmt.Sprintf("%d|%d", now.UnixMilli(), a.N)).Err()
	})
	if err := w.Start(context.Background()); err != nil {
		fail("start worker: %v", err)
	}
	b, _ := json.Marshal(rcvSignal{Pid: os.Getpid()})
	if err := rdb.RPush(context.Background(), signalKey(queue, evReady), b).Err(); err != nil {
		fail("signal ready: %v", err)
	}
	select {} // until the test kills us or closes stdin
}

// pzStarted returns the Redis ms of each start reported, by task N.
func pzStarted(t *testing.T, b *bundle) map[int]int64 {
	t.Helper()
	vs, err := b.env.RDB.LRange(context.Background(), pzStarts(b.queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, v := range vs {
		ms, n, _ := strings.Cut(v, "|")
		at, _ := strconv.ParseInt(ms, 10, 64)
		i, _ := strconv.Atoi(n)
		if _, seen := out[i]; !seen {
			out[i] = at
		}
	}
	return out
}

func redisNowMs(t *testing.T, b *bundle) int64 {
	t.Helper()
	now, err := b.env.RDB.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return now.UnixMilli()
}

// TestPauseStopsFetchingAcrossProcesses pauses a queue that two worker
// processes serve while tasks keep coming: no task starts later than 1 s
// (Redis time) after Pause was called, enqueues are accepted meanwhile,
// both workers report the queue paused, and once resumed every task runs.
func TestPauseStopsFetchingAcrossProcesses(t *testing.T) {
	b := setup(t)
	cleanSignals(t, b)
	t.Cleanup(func() { _ = b.env.RDB.Del(context.Background(), pzStarts(b.queue)).Err() })
	ctx := ctxT(t)
	ins := inspect.New(b.env.RDB)
	lease := 5 * time.Second
	subs := []*subWorker{startSubWorker(t, b, rolePZ, subConfig{Lease: lease}), startSubWorker(t, b, rolePZ, subConfig{Lease: lease})}
	for range subs {
		waitSignal(t, b, evReady, 30*time.Second)
	}
	n := 0
	enqueue := func() {
		t.Helper()
		if _, err := b.c.Enqueue(ctx, pzJob{N: n}, &client.EnqueueOpts{Queue: b.queue}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	// The fleet runs tasks.
	for range 8 {
		enqueue()
	}
	asynctest.Eventually(t, 20*time.Second, "the first tasks started", func() bool { return len(pzStarted(t, b)) == 8 })

	t0 := redisNowMs(t, b)
	if err := ins.Pause(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	// Tasks keep coming for 2 s of Redis time after the pause, every 50 ms
	// of local time (the pace of the load, not a wait for a condition).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for redisNowMs(t, b) < t0+2000 {
		enqueue()
		<-tick.C
	}
	// Give any worker that would still fetch a second of Redis time to do
	// so (its blocking read returns as soon as an entry comes).
	last := redisNowMs(t, b)
	asynctest.Eventually(t, 20*time.Second, "a second of Redis time to pass", func() bool { return redisNowMs(t, b) >= last+1000 })
	started := pzStarted(t, b)
	for i, at := range started {
		if at > t0+1000 {
			t.Errorf("task %d started at %d, %d ms after Pause was called; the promise is 1 s", i, at, at-t0)
		}
	}
	if len(started) >= n {
		t.Fatalf("all %d tasks ran while the queue was paused", n)
	}
	q, err := ins.Queue(ctx, b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Paused && q.Waiting == 0 {
		t.Logf("queue info: %+v", q)
	}
	// Both workers say so in their registrations.
	asynctest.Eventually(t, 10*time.Second, "both workers to report the queue paused", func() bool {
		ws, err := ins.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		paused := 0
		for _, w := range ws {
			for _, s := range subs {
				if w.PID == s.pid() && len(w.Paused) == 1 && w.Paused[0] == b.queue {
					paused++
				}
			}
		}
		return paused == len(subs)
	})

	if err := ins.Resume(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	asynctest.Eventually(t, 30*time.Second, "every task to run after Resume", func() bool { return len(pzStarted(t, b)) == n })
}

// TestPausePolledWithoutNotice sets a queue's pause flag without the notice
// (as if it was lost): the worker finds it by polling, and starts nothing
// of the queue later than 1 s after the flag was set.
func TestPausePolledWithoutNotice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var last atomic.Int64 // Redis ms of the last start
	b.worker(t, &worker.Config{BlockTimeout: time.Second}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a pzJob) (struct{}, error) {
			now, err := b.env.RDB.Time(ctx).Result()
			if err != nil {
				return struct{}{}, err
			}
			last.Store(now.UnixMilli())
			return struct{}{}, nil
		})
	})
	h, err := b.c.Enqueue(ctx, pzJob{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := redisNowMs(t, b)
	if err := b.env.RDB.Set(ctx, keys.ForQueue(b.queue).Paused(), "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var hs []*client.Handle
	for redisNowMs(t, b) < t0+2000 {
		h, err := b.c.Enqueue(ctx, pzJob{}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		<-tick.C
	}
	end := redisNowMs(t, b)
	asynctest.Eventually(t, 20*time.Second, "a second of Redis time to pass", func() bool { return redisNowMs(t, b) >= end+1000 })
	if at := last.Load(); at > t0+1000 {
		t.Fatalf("a task started at %d, %d ms after the flag was set; the promise is 1 s", at, at-t0)
	}
	if err := b.env.RDB.Del(ctx, keys.ForQueue(b.queue).Paused()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWorkerRegistry: a worker lists itself once started, with what it
// serves, and Stop removes it.
func TestWorkerRegistry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	ins := inspect.New(b.env.RDB)
	before := redisNowMs(t, b)
	w := b.worker(t, &worker.Config{Concurrency: 3, Lease: 3 * time.Second}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a pzJob) (struct{}, error) { return struct{}{}, nil })
	})
	find := func() (inspect.WorkerInfo, bool) {
		ws, err := ins.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ws {
			if x.Name == w.Name() {
				return x, true
			}
		}
		return inspect.WorkerInfo{}, false
	}
	got, ok := find()
	if !ok {
		t.Fatalf("worker %s is not listed once started", w.Name())
	}
	host, _ := os.Hostname()
	if got.Host != host || got.PID != os.Getpid() || got.Concurrency != 3 || got.Queues[b.queue] != 1 || len(got.Queues) != 1 || len(got.Paused) != 0 {
		t.Fatalf("registration %+v", got)
	}
	if got.Started.UnixMilli() < before-1000 || got.LastHeartbeat.UnixMilli() < before {
		t.Fatalf("started %v, last heartbeat %v; the test began at %d (Redis ms)", got.Started, got.LastHeartbeat, before)
	}
	if pttl := b.env.RDB.PTTL(ctx, keys.Worker(w.Name())).Val(); pttl <= 0 || pttl > 3*time.Second {
		t.Fatalf("registration lives %v; the lease is 3s", pttl)
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := find(); ok {
		t.Fatal("worker still listed after Stop")
	}
	if n := b.env.RDB.ZScore(ctx, keys.WorkerIndex, w.Name()).Err(); n == nil {
		t.Fatal("worker still in the index after Stop")
	}
}

// TestKilledWorkerDropsOut kills a worker process: it is listed while its
// registration lives, never past its lease after the kill (Redis time),
// and then drops out.
func TestKilledWorkerDropsOut(t *testing.T) {
	b := setup(t)
	cleanSignals(t, b)
	ctx := ctxT(t)
	ins := inspect.New(b.env.RDB)
	lease := 2 * time.Second
	s := startSubWorker(t, b, rolePZ, subConfig{Lease: lease})
	waitSignal(t, b, evReady, 30*time.Second)
	listed := func() bool {
		ws, err := ins.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if w.PID == s.pid() && w.Queues[b.queue] == 1 {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatal("the worker process is not listed once ready")
	}
	s.signal(9)
	s.waitExit(10 * time.Second)
	killed := redisNowMs(t, b)
	if b.env.Mini != nil {
		// miniredis expires keys only when told time passed.
		b.env.Mini.FastForward(lease)
	}
	asynctest.Eventually(t, 3*lease, "the killed worker to drop out", func() bool {
		now := redisNowMs(t, b)
		if !listed() {
			return true
		}
		if b.env.Mini == nil && now > killed+lease.Milliseconds() {
			t.Fatalf("still listed at %d, %d ms after the kill; the lease is %v", now, now-killed, lease)
		}
		return false
	})
}
