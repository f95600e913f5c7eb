package worker_test

// Pausing a queue (inspect.Pause) across worker processes, and the workers'
// registry (inspect.Workers).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

type pzJob struct {
	N     int
	Block bool // wait for pzRelease(queue, N) (or the ctx)
}

func (pzJob) Kind() string { return "pz.job" }

// rolePZ: a worker (4 handlers, 1 s blocking reads, as by default) whose
// pz.job handler pushes "<Redis ms at its start>|<N>|<pid>" to pzStarts
// (and then, for a blocking job, waits for its release), until the test
// ends the process.
const rolePZ = "pz.worker"

func init() { extraRoles[rolePZ] = pzMain }

// pzStarts is the list the pz.job handlers of queue report their starts to.
func pzStarts(queue string) string { return "pztest:{q:" + queue + "}:starts" }

// pzRelease is the list a blocking pz.job N of queue waits on.
func pzRelease(queue string, n int) string {
	return "pztest:{q:" + queue + "}:release:" + strconv.Itoa(n)
}

func pzMain(string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	queue := os.Getenv(envQueue)
	leaseMs, _ := strconv.Atoi(os.Getenv(envLease))
	rdb := testenv.NewClient(os.Getenv(envAddr))
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
		if err := rdb.RPush(ctx, pzStarts(queue), fmt.Sprintf("%d|%d|%d", now.UnixMilli(), a.N, os.Getpid())).Err(); err != nil {
			return struct{}{}, err
		}
		for a.Block {
			// BLPOP's own timeout lets the loop see the ctx end.
			_, err := rdb.BLPop(ctx, time.Second, pzRelease(queue, a.N)).Result()
			switch {
			case err == nil:
				a.Block = false
			case ctx.Err() != nil:
				return struct{}{}, ctx.Err()
			case !errors.Is(err, redis.Nil):
				return struct{}{}, err
			}
		}
		return struct{}{}, nil
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

// pzStart is one start a pz.job handler reported: when (Redis ms), and in
// which process.
type pzStart struct {
	At  int64
	Pid int
}

// pzStarted returns the first start reported of each task, by task N.
func pzStarted(t *testing.T, b *bundle) map[int]pzStart {
	t.Helper()
	vs, err := b.env.RDB.LRange(context.Background(), pzStarts(b.queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]pzStart{}
	for _, v := range vs {
		f := strings.Split(v, "|")
		if len(f) != 3 {
			t.Fatalf("start %q; want ms|N|pid", v)
		}
		at, err1 := strconv.ParseInt(f[0], 10, 64)
		i, err2 := strconv.Atoi(f[1])
		pid, err3 := strconv.Atoi(f[2])
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("start %q: %v", v, err)
		}
		if _, seen := out[i]; !seen {
			out[i] = pzStart{At: at, Pid: pid}
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
// (Redis time) after Pause was called, enqueues are accepted meanwhile, a
// task running when Pause was called finishes, the queue and both workers
// report it paused, and once resumed every task runs.
func TestPauseStopsFetchingAcrossProcesses(t *testing.T) {
	b := setup(t)
	cleanSignals(t, b)
	const held = 7 // the task still running when the queue is paused
	t.Cleanup(func() {
		ks := []string{pzStarts(b.queue)}
		for i := 0; i <= held; i++ {
			ks = append(ks, pzRelease(b.queue, i))
		}
		_ = b.env.RDB.Del(context.Background(), ks...).Err()
	})
	ctx := ctxT(t)
	ins := inspect.New(b.env.RDB)
	lease := 5 * time.Second
	subs := []*subWorker{startSubWorker(t, b, rolePZ, subConfig{Lease: lease}), startSubWorker(t, b, rolePZ, subConfig{Lease: lease})}
	for range subs {
		waitSignal(t, b, evReady, 30*time.Second)
	}
	n := 0
	var hs []*client.Handle
	enqueue := func(block bool) {
		t.Helper()
		h, err := b.c.Enqueue(ctx, pzJob{N: n, Block: block}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		n++
	}
	release := func(i int) {
		t.Helper()
		if err := b.env.RDB.RPush(ctx, pzRelease(b.queue, i), "go").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The fleet runs tasks: eight that block, so that each process (four
	// handlers) runs four of them at once.
	for range held + 1 {
		enqueue(true)
	}
	testenv.Eventually(t, 20*time.Second, "the first tasks started", func() bool { return len(pzStarted(t, b)) == held+1 })
	ran := map[int]int{} // tasks started, by pid
	for _, st := range pzStarted(t, b) {
		ran[st.Pid]++
	}
	for _, s := range subs {
		if ran[s.pid()] == 0 {
			t.Fatalf("process %d ran no task before the pause (starts by pid: %v)", s.pid(), ran)
		}
	}
	for i := range held {
		release(i)
	}
	for _, h := range hs[:held] {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}

	t0 := redisNowMs(t, b)
	if err := ins.Pause(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	// Tasks keep coming for 2 s of Redis time after the pause, every 50 ms
	// of local time (the pace of the load, not a wait for a condition).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for redisNowMs(t, b) < t0+2000 {
		enqueue(false)
		<-tick.C
	}
	// Give any worker that would still fetch a second of Redis time to do
	// so (its blocking read returns as soon as an entry comes).
	last := redisNowMs(t, b)
	testenv.Eventually(t, 20*time.Second, "a second of Redis time to pass", func() bool { return redisNowMs(t, b) >= last+1000 })
	started := pzStarted(t, b)
	for i, st := range started {
		if st.At > t0+1000 {
			t.Errorf("task %d started at %d, %d ms after Pause was called; the promise is 1 s", i, st.At, st.At-t0)
		}
	}
	if len(started) >= n {
		t.Fatalf("all %d tasks ran while the queue was paused", n)
	}
	q, err := ins.Queue(ctx, b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Paused {
		t.Fatalf("queue info %+v; want it paused", q)
	}
	// The task that ran when the queue was paused finishes.
	release(held)
	if _, err := hs[held].Outcome(ctx); err != nil {
		t.Fatalf("the task running when the queue was paused: %v", err)
	}
	// Both workers report the queue paused in their registrations.
	testenv.Eventually(t, 10*time.Second, "both workers to report the queue paused", func() bool {
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
	testenv.Eventually(t, 30*time.Second, "every task to run after Resume", func() bool { return len(pzStarted(t, b)) == n })
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
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
	testenv.Eventually(t, 20*time.Second, "a second of Redis time to pass", func() bool { return redisNowMs(t, b) >= end+1000 })
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
	testenv.Eventually(t, 3*lease, "the killed worker to drop out", func() bool {
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
