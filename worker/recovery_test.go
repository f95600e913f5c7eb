package worker_test

// Reliability tests: crashed, paused and partitioned workers, poison and
// malformed entries, kinds no running worker can handle. The tests that need
// worker processes or Redis' own idle-time bookkeeping call
// testenv.RequireReal; see subprocess_test.go for the worker subprocesses.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// leaseCfg is the configuration of an in-test worker with lease lease and
// everything else at its default.
func leaseCfg(lease time.Duration) *worker.Config {
	return &worker.Config{Lease: lease}
}

// pendingCount is the XPENDING summary count of b's queue.
func pendingCount(t *testing.T, b *bundle) int64 {
	t.Helper()
	p, err := b.env.RDB.XPending(context.Background(), keys.ForQueue(b.queue).Stream(), keys.Group).Result()
	if err != nil {
		t.Fatalf("XPENDING: %v", err)
	}
	return p.Count
}

func checkSucceeded(t *testing.T, ctx context.Context, h *client.Handle, attempt int) {
	t.Helper()
	in, err := h.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != client.StateSucceeded || in.Attempt != attempt {
		t.Fatalf("task %s: got state %q attempt %d; want succeeded, attempt %d", h.ID(), in.State, in.Attempt, attempt)
	}
}

func TestKillWorkerMidTaskLosesNothing(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	b := setup(t)
	cleanSignals(t, b)
	ctx := ctxT(t)
	const lease = time.Second

	h, err := b.c.Enqueue(ctx, rcvJob{N: 7}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	sub := startSubWorker(t, b, roleBlock, subConfig{Lease: lease})
	if st := waitSignal(t, b, evStarted, 15*time.Second); st.Pid != sub.pid() || st.Deliveries != 1 {
		t.Fatalf("got started signal %+v; want pid %d, deliveries 1", st, sub.pid())
	}

	// The second worker runs alongside the subprocess before it dies; the
	// subprocess' heartbeats keep the task from it until then.
	var runs atomic.Int32
	b.worker(t, leaseCfg(lease), func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			runs.Add(1)
			tk, _ := worker.TaskFromContext(ctx)
			return rcvResult{By: "test", N: a.N, Deliveries: tk.Deliveries}, nil
		})
	})
	sub.signal(syscall.SIGKILL)
	if code := sub.waitExit(10 * time.Second); code != -1 {
		t.Fatalf("worker subprocess exited with code %d; want killed by a signal", code)
	}

	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatalf("outcome after the worker was killed: %v", err)
	}
	if res.By != "test" || res.N != 7 {
		t.Fatalf("got result %+v; want the surviving worker's, N 7", res)
	}
	if res.Deliveries != 2 {
		t.Fatalf("the reclaimed attempt saw Deliveries %d; want 2", res.Deliveries)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the surviving worker ran the task %d times; want 1", n)
	}
	checkSucceeded(t, ctx, h, 1)
	if n := pendingCount(t, b); n != 0 {
		t.Fatalf("XPENDING count %d at the end; want 0", n)
	}
}

func TestPausedWorkerIsFenced(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	b := setup(t)
	cleanSignals(t, b)
	ctx := ctxT(t)
	const lease = time.Second

	h, err := b.c.Enqueue(ctx, rcvJob{N: 3}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	sub := startSubWorker(t, b, rolePause, subConfig{Lease: lease, Work: 3 * lease})
	if st := waitSignal(t, b, evStarted, 15*time.Second); st.Pid != sub.pid() || st.Deliveries != 1 {
		t.Fatalf("got started signal %+v; want pid %d, deliveries 1", st, sub.pid())
	}
	sub.signal(syscall.SIGSTOP)
	sub.waitStopped()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = sub.cmd.Process.Signal(syscall.SIGCONT)
		}
	})

	var runs atomic.Int32
	b.worker(t, leaseCfg(lease), func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			runs.Add(1)
			tk, _ := worker.TaskFromContext(ctx)
			return rcvResult{By: "test", N: a.N, Deliveries: tk.Deliveries}, nil
		})
	})
	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatalf("outcome while the first worker is paused: %v", err)
	}
	if res.By != "test" || res.Deliveries != 2 {
		t.Fatalf("got result %+v; want the second worker's, on delivery 2", res)
	}

	sub.signal(syscall.SIGCONT)
	resumed = true
	rep := waitSignal(t, b, evReport, 15*time.Second)
	if rep.Pid != sub.pid() {
		t.Fatalf("report from pid %d; want %d", rep.Pid, sub.pid())
	}
	if rep.Deliveries != 1 || !rep.LeaseLost || rep.CtxErr == "" {
		t.Fatalf("the paused worker's handler (delivery %d) ctx: err %q cause %q; want delivery 1 cancelled with cause worker.ErrLeaseLost",
			rep.Deliveries, rep.CtxErr, rep.Cause)
	}
	// The resumed worker stops, which records its handler's outcome (or
	// fails to, fenced) before the process exits.
	waitSignal(t, b, evStopped, 15*time.Second)
	if code := sub.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("resumed worker subprocess exited with code %d; want 0", code)
	}

	res2, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if res2 != res {
		t.Fatalf("after the paused worker finished, the result is %+v; want still %+v", res2, res)
	}
	checkSucceeded(t, ctx, h, 1)
	if n := runs.Load(); n != 1 {
		t.Fatalf("the second worker ran the task %d times; want 1", n)
	}
	if n := pendingCount(t, b); n != 0 {
		t.Fatalf("XPENDING count %d at the end; want 0", n)
	}
}

func TestHeartbeatKeepsLongTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const (
		lease = time.Second
		work  = 3 * time.Second
	)
	var runs atomic.Int32
	type run struct {
		worker string
		dlv    int
		ctxErr error
	}
	runsCh := make(chan run, 10)
	register := func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			runs.Add(1)
			tk, _ := worker.TaskFromContext(ctx)
			timer := time.NewTimer(work)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			runsCh <- run{worker: w.Name(), dlv: tk.Deliveries, ctxErr: context.Cause(ctx)}
			return rcvResult{By: w.Name(), N: a.N, Deliveries: tk.Deliveries}, ctx.Err()
		})
	}
	// Both workers take over expired leases; the heartbeats of the one
	// running the task must keep it from the other.
	b.worker(t, leaseCfg(lease), register)
	b.worker(t, leaseCfg(lease), register)

	start := time.Now()
	h, err := b.c.Enqueue(ctx, rcvJob{N: 1}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < work {
		t.Fatalf("task finished after %v; the handler works %v", d, work)
	}
	r := <-runsCh
	if r.ctxErr != nil || r.dlv != 1 {
		t.Fatalf("the run on %s: deliveries %d, ctx cause %v; want 1 and not cancelled", r.worker, r.dlv, r.ctxErr)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("handler ran %d times; want 1", n)
	}
	if res.By != r.worker || res.Deliveries != 1 {
		t.Fatalf("got result %+v; want by %s on delivery 1", res, r.worker)
	}
	checkSucceeded(t, ctx, h, 1)
}

// failHeartbeats is a go-redis hook that fails the heartbeat script's calls
// while on is set, and records when the last one that got through was sent.
type failHeartbeats struct {
	on     atomic.Bool
	failed atomic.Int32

	mu     sync.Mutex
	ok     int
	lastOK time.Time
}

func isHeartbeat(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	body, _ := args[1].(string)
	switch strings.ToLower(cmd.Name()) {
	case "evalsha", "evalsha_ro":
		return body == script.Heartbeat.Hash()
	case "eval", "eval_ro":
		return strings.Contains(body, "heartbeat.lua")
	}
	return false
}

func (f *failHeartbeats) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failHeartbeats) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (f *failHeartbeats) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isHeartbeat(cmd) {
			return next(ctx, cmd)
		}
		if f.on.Load() {
			f.failed.Add(1)
			err := errors.New("injected heartbeat failure")
			cmd.SetErr(err)
			return err
		}
		sent := time.Now()
		err := next(ctx, cmd)
		if err == nil {
			f.mu.Lock()
			f.ok++
			f.lastOK = sent
			f.mu.Unlock()
		}
		return err
	}
}

func (f *failHeartbeats) okCount() (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ok, f.lastOK
}

// Runs on both backends: the idle time it checks is miniredis' too, and the
// cancellation is the worker's own timer.
func TestHeartbeatFailureCancelsBeforeLeaseEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const lease = time.Second

	hook := &failHeartbeats{}
	rdb := testenv.NewClient(b.env.Addr)
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })

	type cancelled struct {
		at      time.Time
		cause   error
		pending []redis.XPendingExt
		err     error
	}
	started := make(chan string, 2)
	cancelCh := make(chan cancelled, 1)
	var runs atomic.Int32
	cfg := leaseCfg(lease)
	cfg.Queues = map[string]int{b.queue: 1}
	cfg.BlockTimeout = 50 * time.Millisecond
	w, err := worker.New(context.Background(), rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
		tk, _ := worker.TaskFromContext(ctx)
		if runs.Add(1) > 1 {
			// The retake after the lost lease: finish.
			return rcvResult{By: "second", Deliveries: tk.Deliveries}, nil
		}
		started <- tk.ID
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
		c := cancelled{at: time.Now(), cause: context.Cause(ctx)}
		_, key, _ := keys.SplitTaskID(tk.ID)
		c.pending, c.err = b.env.RDB.XPendingExt(context.Background(), &redis.XPendingExtArgs{
			Stream: keys.ForQueue(b.queue).Stream(), Group: keys.Group, Start: key, End: key, Count: 1,
		}).Result()
		cancelCh <- c
		return rcvResult{By: "first"}, ctx.Err()
	})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})

	h, err := b.c.Enqueue(ctx, rcvJob{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the handler did not start")
	}
	// Let one heartbeat through while the handler runs, then fail them all.
	testenv.Eventually(t, 5*time.Second, "a heartbeat while the handler runs", func() bool {
		n, _ := hook.okCount()
		return n >= 1
	})
	flipped := time.Now()
	hook.on.Store(true)

	var c cancelled
	select {
	case c = <-cancelCh:
	case <-ctx.Done():
		t.Fatal("the handler's ctx was not cancelled")
	}
	_, lastOK := hook.okCount()
	if !errors.Is(c.cause, worker.ErrLeaseLost) {
		t.Fatalf("handler ctx cause %v; want worker.ErrLeaseLost", c.cause)
	}
	if hook.failed.Load() == 0 {
		t.Fatal("no heartbeat failed before the cancel")
	}
	// Cancelled Lease/5 before the lease ends: 0.8 lease after the last
	// heartbeat that got through; well before another worker may take over.
	sinceOK := c.at.Sub(lastOK)
	sinceFlip := c.at.Sub(flipped)
	if sinceOK >= lease || sinceFlip >= lease {
		t.Fatalf("cancelled %v after the last good heartbeat, %v after heartbeats began to fail; want both under the lease %v", sinceOK, sinceFlip, lease)
	}
	if sinceOK < lease/2 {
		t.Fatalf("cancelled only %v after the last good heartbeat; the lease %v was far from its end", sinceOK, lease)
	}
	if c.err != nil || len(c.pending) != 1 {
		t.Fatalf("XPENDING of the entry at the cancel: %v, %+v; want the entry", c.err, c.pending)
	}
	if p := c.pending[0]; p.Consumer != w.Name() || p.RetryCount != 1 || p.Idle >= lease {
		t.Fatalf("at the cancel the entry is pending with %s, delivery %d, idle %v; want %s, delivery 1, idle under the lease %v",
			p.Consumer, p.RetryCount, p.Idle, w.Name(), lease)
	}

	// Heartbeats work again; the task comes back at once: the worker hands
	// back the run whose lease lapsed (a new entry, delivered once).
	hook.on.Store(false)
	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if res.By != "second" || res.Deliveries != 1 {
		t.Fatalf("got result %+v; want the second run's, on the handed-back entry's first delivery", res)
	}
	checkSucceeded(t, ctx, h, 1)
}

func TestPoisonTaskDeadLettered(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	b := setup(t)
	cleanSignals(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const (
		lease         = 500 * time.Millisecond
		maxDeliveries = 3
	)

	poison, err := b.c.Enqueue(ctx, rcvPoison{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	var normals []*client.Handle
	enqueueNormals := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			h, err := b.c.Enqueue(ctx, rcvNormal{N: len(normals)}, &client.EnqueueOpts{Queue: b.queue})
			if err != nil {
				t.Fatal(err)
			}
			normals = append(normals, h)
		}
	}
	isDead := func() bool {
		in, err := poison.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return in.State == client.StateDead
	}

	// Crashing workers take the poison task, one after another, each time
	// it is delivered again after the last one's lease ended.
	var crashes []int // deliveries seen by each crashed handler
	for i := 0; !isDead(); i++ {
		if i > 2*maxDeliveries {
			t.Fatalf("poison task not dead after %d crashing workers", i)
		}
		sub := startSubWorker(t, b, roleCrash, subConfig{Lease: lease, MaxDeliveries: maxDeliveries})
		if i == 0 {
			// The first crash happens before anything else runs on the
			// queue. From then on a worker of the test runs the normal
			// tasks. Its lease is long, so it leaves the poison task to the
			// subprocesses (were it to take the task over, it would hand it
			// back for lack of a handler, carrying the lost deliveries in
			// the envelope: TestLostDeliveriesTravelWithTheTask covers that).
			if code := sub.waitExit(15 * time.Second); code != 2 {
				t.Fatalf("first worker subprocess exited with %d; want 2 (crash)", code)
			}
			crashes = append(crashes, waitSignal(t, b, evCrashing, 5*time.Second).Deliveries)
			b.worker(t, &worker.Config{Lease: time.Minute}, func(w *worker.Worker) {
				worker.Handle(w, func(ctx context.Context, a rcvNormal) (rcvResult, error) {
					return rcvResult{By: "test", N: a.N}, nil
				})
			})
			enqueueNormals(5)
			continue
		}
		enqueueNormals(5)
		crashed := false
		testenv.Eventually(t, 10*time.Second, "a crash or the poison task dead", func() bool {
			select {
			case <-sub.exited:
				crashed = true
				return true
			default:
				return isDead()
			}
		})
		if crashed {
			if code := sub.waitExit(5 * time.Second); code != 2 {
				t.Fatalf("worker subprocess exited with %d; want 2 (crash)", code)
			}
			crashes = append(crashes, waitSignal(t, b, evCrashing, 5*time.Second).Deliveries)
		}
	}

	if fmt.Sprint(crashes) != "[1 2 3]" {
		t.Fatalf("crashed handlers saw deliveries %v; want [1 2 3]", crashes)
	}
	_, err = poison.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || !errors.Is(err, client.ErrDead) {
		t.Fatalf("poison task outcome: %v; want dead", err)
	}
	for _, want := range []string{"poison", fmt.Sprintf("delivered %d times", maxDeliveries+1), fmt.Sprintf("limit %d", maxDeliveries)} {
		if !strings.Contains(te.Message, want) {
			t.Fatalf("poison task died with %q; want it to mention %q", te.Message, want)
		}
	}
	dead, err := b.c.DeadTasks(ctx, b.queue, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].ID != poison.ID() || dead[0].Kind != "rcv.poison" {
		t.Fatalf("got dead letters %+v; want only the poison task", dead)
	}
	for i, h := range normals {
		res, err := client.Result[rcvResult](ctx, h)
		if err != nil {
			t.Fatalf("normal task %s: %v", h.ID(), err)
		}
		if res.N != i {
			t.Fatalf("normal task %s: got result %+v; want N %d", h.ID(), res, i)
		}
		checkSucceeded(t, ctx, h, 1)
	}
}

func TestMalformedEntryDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvNormal) (rcvResult, error) {
			return rcvResult{By: "test", N: a.N}, nil
		})
	})
	stream := keys.ForQueue(b.queue).Stream()
	garbage, err := b.env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"m", "\xdd\xff\xff\xff\xff"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	noM, err := b.env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"x", "y"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.c.Enqueue(ctx, rcvNormal{N: 5}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatalf("normal task after the malformed entries: %v", err)
	}
	if res.N != 5 {
		t.Fatalf("got result %+v", res)
	}
	checkSucceeded(t, ctx, h, 1)

	want := map[string]bool{keys.TaskID(b.queue, garbage): true, keys.TaskID(b.queue, noM): true}
	var dead []client.DeadTask
	testenv.Eventually(t, 10*time.Second, "two dead letters", func() bool {
		dead, err = b.c.DeadTasks(ctx, b.queue, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(dead) >= 2
	})
	if len(dead) != 2 {
		t.Fatalf("got %d dead letters %+v; want 2", len(dead), dead)
	}
	for _, d := range dead {
		if !want[d.ID] || !strings.Contains(d.Error, "malformed") {
			t.Fatalf("got dead letter %s with error %q; want one of %v with a reason mentioning malformed", d.ID, d.Error, want)
		}
		delete(want, d.ID)
		dh, err := b.c.Task(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := dh.State(ctx); err != nil || st != client.StateDead {
			t.Fatalf("dead letter %s: state %q, %v; want dead", d.ID, st, err)
		}
	}
	if n := pendingCount(t, b); n != 0 {
		t.Fatalf("XPENDING count %d; want 0", n)
	}

	// The worker keeps running.
	h2, err := b.c.Enqueue(ctx, rcvNormal{N: 6}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := client.Result[rcvResult](ctx, h2); err != nil || res.N != 6 {
		t.Fatalf("task after the dead letters: %+v, %v", res, err)
	}
}

func TestUnknownKindLeftForCapableWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	a := b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, args rcvNormal) (rcvResult, error) {
			return rcvResult{By: "A"}, nil
		})
	})
	h, err := b.c.Enqueue(ctx, rcvJob{N: 9}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A hands the task back (it is scheduled, parked) and takes it again
	// when it returns. Wait until it did so at least twice: the task is
	// scheduled while its stream already holds a second entry (each
	// return is a new entry; the window in which it is pending or held is
	// too short to poll for). It never fails, and no attempt is counted.
	stream := keys.ForQueue(b.queue).Stream()
	seen := map[client.State]bool{}
	testenv.Eventually(t, 10*time.Second, "two hand-backs by worker A", func() bool {
		entries, err := b.env.RDB.XLen(ctx, stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		in, err := h.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if in.State.Final() || in.State == client.StateRetrying {
			t.Fatalf("a task no worker can run is %s (error %q); want it waiting", in.State, in.LastError)
		}
		// While A holds it, it shows as running its first attempt.
		if in.State == client.StateRunning && in.Attempt > 1 || in.State != client.StateRunning && in.Attempt != 0 {
			t.Fatalf("a task no worker can run shows attempt %d in state %s; want 0 (1 while held)", in.Attempt, in.State)
		}
		seen[in.State] = true
		return in.State == client.StateScheduled && entries >= 2
	})
	// With A still running, B's chance at the task would halve each time
	// A parks it for twice as long; stop A so the test does not wait for
	// that lottery.
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}

	var attempt atomic.Int32
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			tk, _ := worker.TaskFromContext(ctx)
			attempt.Store(int32(tk.Attempt))
			return rcvResult{By: "B", N: a.N}, nil
		})
	})
	res, err := client.Result[rcvResult](ctx, h)
	if err != nil {
		t.Fatalf("outcome once a capable worker runs (states seen before: %v): %v", seen, err)
	}
	if res.By != "B" || res.N != 9 || attempt.Load() != 1 {
		t.Fatalf("got result %+v on attempt %d; want B's on attempt 1", res, attempt.Load())
	}
	checkSucceeded(t, ctx, h, 1)
}

// TestIdleWorkerReclaims checks that an idle worker with the default
// Concurrency and FetchBatch (a fetch loop that holds every free slot while
// it blocks in XREADGROUP) takes over a task whose consumer vanished without
// a trace: it read the entry and never heartbeats or acks.
func TestIdleWorkerReclaims(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	const lease = 200 * time.Millisecond
	h, err := b.c.Enqueue(ctx, rcvJob{N: 4}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.env.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: keys.Group, Consumer: "ghost", Streams: []string{keys.ForQueue(b.queue).Stream(), ">"}, Count: 1,
	}).Result()
	if err != nil || len(got) != 1 || len(got[0].Messages) != 1 {
		t.Fatalf("ghost read: %v, %+v", err, got)
	}
	b.worker(t, &worker.Config{Lease: lease}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			tk, _ := worker.TaskFromContext(ctx)
			return rcvResult{By: w.Name(), N: a.N, Deliveries: tk.Deliveries}, nil
		})
	})
	wctx, cancel := context.WithTimeout(ctx, 25*lease)
	defer cancel()
	res, err := client.Result[rcvResult](wctx, h)
	if err != nil {
		t.Fatalf("task of a vanished consumer not taken over within %v (%d leases) by an idle worker with default Concurrency and FetchBatch: %v", 25*lease, 25, err)
	}
	if res.Deliveries != 2 || res.N != 4 {
		t.Fatalf("got result %+v; want delivery 2", res)
	}
}

// A cancel sent to a worker that died is honoured by the worker that takes
// the task over, before its handler starts.
func TestTakeoverHonoursCancelSentToDeadWorker(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue})
	// a worker that read it and died
	if err := b.env.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: "ghost", Streams: []string{q.Stream(), ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	st, err := h.Cancel(ctx)
	t.Logf("cancel: %s %v", st, err)
	var ran bool
	b.worker(t, &worker.Config{Lease: 200 * time.Millisecond}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			ran = true
			return UploadResult{Size: 1}, nil
		})
	})
	_, err = h.Outcome(ctx)
	if err == nil {
		t.Errorf("cancelled task ran (%v) and succeeded", ran)
	} else {
		t.Log(err)
	}
}
