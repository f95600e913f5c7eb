package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

type faultArgs struct{ N int }

func (faultArgs) Kind() string { return "fault" }

// faultRig is a worker whose Redis client goes through a holeProxy, with
// go-redis' defaults but a read timeout far past the lease (as a client
// without ContextTimeoutEnabled waits on a dead connection), and a client
// that talks to Redis directly.
type faultRig struct {
	p     *holeProxy
	c     *client.Client
	queue string
}

func newFaultRig(t *testing.T, cfg *worker.Config, h func(ctx context.Context, a faultArgs) (int, error)) *faultRig {
	t.Helper()
	b := setup(t)
	target := standaloneAddr(t, b.env)
	p := startProxy(t, target)
	direct := redis.NewClient(&redis.Options{Addr: target})
	t.Cleanup(func() { _ = direct.Close() })
	c, err := client.New(context.Background(), direct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	viaProxy := redis.NewClient(&redis.Options{Addr: p.addr(), ReadTimeout: 30 * time.Second})
	t.Cleanup(func() { _ = viaProxy.Close() })
	testenv.StartWorker(t, viaProxy, b.queue, cfg, func(w *worker.Worker) {
		worker.Handle(w, h)
	}, true)
	// Heal before the worker stops (cleanups run last first): its calls
	// stuck on black-holed connections fail and are resent.
	t.Cleanup(p.heal)
	return &faultRig{p: p, c: c, queue: b.queue}
}

// A heartbeat stuck on a dead pooled connection (its reply never comes,
// and the client waits out its read timeout) does not hold up the next
// heartbeats: they take other connections, the lease holds, and the handler
// runs to its end.
func TestHeartbeatsPassAStuckConnection(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	started, release := make(chan struct{}, 1), make(chan struct{})
	var cancelled atomic.Value // the cause, once cancelled
	r := newFaultRig(t, &worker.Config{Lease: lease}, func(ctx context.Context, a faultArgs) (int, error) {
		started <- struct{}{}
		select {
		case <-release:
			return a.N, nil
		case <-ctx.Done():
			cancelled.Store(fmt.Sprint(context.Cause(ctx)))
			return 0, ctx.Err()
		}
	})
	ctx := ctxT(t)
	h, err := r.c.Enqueue(ctx, faultArgs{N: 7}, &client.EnqueueOpts{Queue: r.queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.p.holeNext(script.Heartbeat.Hash())
	// Six heartbeats passed on after the stuck one: 1.5 leases without an
	// answer on that connection.
	testenv.Eventually(t, 10*time.Second, "a heartbeat stuck and six more sent", func() bool {
		holed, beats := r.p.stats()
		return holed == 1 && beats >= 6 || cancelled.Load() != nil
	})
	if c := cancelled.Load(); c != nil {
		t.Fatalf("the handler was cancelled (%v) although Redis answered on other connections", c)
	}
	close(release)
	if n, err := client.Result[int](ctx, h); err != nil || n != 7 {
		t.Fatalf("got %v, %v; want 7", n, err)
	}
	in, err := h.Info(ctx)
	if err != nil || in.Attempt != 1 {
		t.Fatalf("info %+v, %v; want attempt 1", in, err)
	}
}

// When no heartbeat gets an answer, the handler is cancelled (cause
// ErrLeaseLost) before its lease ends, whatever the stuck calls do.
func TestLeaseLapsesWhenHeartbeatsBlock(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	started := make(chan struct{}, 2)
	type end struct {
		at    time.Time
		cause error
	}
	ended := make(chan end, 2)
	var runs atomic.Int64
	r := newFaultRig(t, &worker.Config{Lease: lease}, func(ctx context.Context, a faultArgs) (int, error) {
		if runs.Add(1) > 1 {
			return a.N, nil
		}
		started <- struct{}{}
		<-ctx.Done()
		ended <- end{time.Now(), context.Cause(ctx)}
		return 0, ctx.Err()
	})
	ctx := ctxT(t)
	h, err := r.c.Enqueue(ctx, faultArgs{N: 3}, &client.EnqueueOpts{Queue: r.queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	// Every heartbeat that got through was sent before this.
	holed := time.Now()
	r.p.holeAll()
	var e end
	select {
	case e = <-ended:
	case <-ctx.Done():
		t.Fatal(errStillRunning)
	}
	if !errors.Is(e.cause, worker.ErrLeaseLost) {
		t.Fatalf("handler cancelled with cause %v; want ErrLeaseLost", e.cause)
	}
	if d := e.at.Sub(holed); d >= lease {
		t.Fatalf("the handler ran %v after the last heartbeat that got through; want it cancelled within the lease (%v)", d, lease)
	}
	r.p.heal()
	if n, err := client.Result[int](ctx, h); err != nil || n != 3 {
		t.Fatalf("got %v, %v; want the task run again and succeeded", n, err)
	}
}

// Outcomes Redis refuses for lack of memory (OOM) are kept and retried,
// with backoff, while heartbeats hold the lease: the handler does not run
// again, and the refusal is logged at error level once per interval.
func TestOutcomeKeptWhileRedisRefusesForMemory(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	var runs atomic.Int64
	r := newFaultRig(t, &worker.Config{Lease: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		func(ctx context.Context, a faultArgs) (int, error) {
			runs.Add(1)
			return a.N, nil
		})
	const refusals = 8 // more than the tries an ordinary error gets
	r.p.refuse(script.Complete.Hash(), refusals, "OOM command not allowed when used memory > 'maxmemory'. script: x, on @user_script:1.")
	ctx := ctxT(t)
	h, err := r.c.Enqueue(ctx, faultArgs{N: 9}, &client.EnqueueOpts{Queue: r.queue})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := client.Result[int](ctx, h); err != nil || n != 9 {
		t.Fatalf("got %v, %v; want 9", n, err)
	}
	if left := r.p.refusing(); left != 0 {
		t.Fatalf("%d refusals left; want the outcome recorded after all %d", left, refusals)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times; want once", n)
	}
	if in, err := h.Info(ctx); err != nil || in.Attempt != 1 {
		t.Fatalf("info %+v, %v; want attempt 1", in, err)
	}
	if n := strings.Count(logs.String(), "over its maxmemory"); n != 1 {
		t.Fatalf("logged the refusal %d times; want once (once per interval):\n%s", n, logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A run cancelled because its lease lapsed while Redis stalled (CLIENT
// PAUSE longer than the lease, a heartbeat waiting in Redis all along) is
// handed back when Redis wakes: the task runs again at once, not a full
// lease later, when the heartbeat queued in the stall renewed the lease of
// the dropped run. Measured in Redis time.
func TestLapsedLeaseHandedBackAfterStall(t *testing.T) {
	t.Parallel()
	addr := privateRedis(t)
	const lease = 2 * time.Second
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctl := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer ctl.Close()
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queue := testenv.Queue(t)
	started := make(chan struct{}, 1)
	again := make(chan int64, 1) // Redis ms at the start of the second run
	var runs atomic.Int64
	wrdb := redis.NewClient(&redis.Options{Addr: addr})
	defer wrdb.Close()
	testenv.StartWorker(t, wrdb, queue, &worker.Config{Lease: lease}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a faultArgs) (int, error) {
			if runs.Add(1) > 1 {
				ms, err := redisMs(ctx, ctl)
				if err != nil {
					return 0, err
				}
				again <- ms
				return a.N, nil
			}
			started <- struct{}{}
			<-ctx.Done()
			return 0, ctx.Err()
		})
	}, true)
	ctx := ctxT(t)
	h, err := c.Enqueue(ctx, faultArgs{N: 5}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	const stall = lease + lease/2
	if err := ctl.Do(ctx, "CLIENT", "PAUSE", stall.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	// Answered once the pause ends.
	woke, err := redisMs(ctx, ctl)
	if err != nil {
		t.Fatal(err)
	}
	var at int64
	select {
	case at = <-again:
	case <-ctx.Done():
		t.Fatal("the task did not run again")
	}
	if d := time.Duration(at-woke) * time.Millisecond; d >= lease/2 {
		t.Fatalf("the task ran again %v (Redis time) after Redis woke; want it handed back at once, well within a lease (%v)", d, lease)
	}
	if n, err := client.Result[int](ctx, h); err != nil || n != 5 {
		t.Fatalf("got %v, %v; want 5", n, err)
	}
}

// At maxmemory with noeviction a backlog still drains: outcomes are
// recorded although Redis refuses writes that grow memory (the outcome
// script's first write is one it allows), and no handler runs twice for a
// refused outcome.
func TestBacklogDrainsAtMaxmemory(t *testing.T) {
	t.Parallel()
	addr := privateRedis(t, "--maxmemory-policy", "noeviction")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	queue := testenv.Queue(t)
	const n = 300
	pad := strings.Repeat("p", 1000)
	var hs []*client.Handle
	for i := 0; i < n; i++ {
		h, err := c.Enqueue(ctx, faultPad{N: i, Pad: pad}, &client.EnqueueOpts{Queue: queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if err := createGroup(ctx, rdb, queue); err != nil {
		t.Fatal(err)
	}
	used, err := usedMemory(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(used-256<<10)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "async:probe", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("a write over maxmemory got %v; want OOM (the test needs Redis over its limit)", err)
	}
	// Waiting for an outcome works at the limit too (the registration of
	// the waiter is refused by nothing).
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = hs[n-1].Outcome(wctx)
	wcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Outcome over maxmemory before any worker ran: %v; want it to wait (context.DeadlineExceeded)", err)
	}
	var mu sync.Mutex
	ran := map[int]int{}
	testenv.StartWorker(t, rdb, queue, &worker.Config{Lease: 2 * time.Second}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a faultPad) (int, error) {
			mu.Lock()
			ran[a.N]++
			mu.Unlock()
			return a.N, nil
		})
	}, false)
	for i, h := range hs {
		if got, err := client.Result[int](ctx, h); err != nil || got != i {
			t.Fatalf("task %d: %v, %v", i, got, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		if ran[i] != 1 {
			t.Fatalf("task %d ran %d times; want once", i, ran[i])
		}
	}
}

type faultPad struct {
	N   int
	Pad string
}

func (faultPad) Kind() string { return "fault.pad" }

func usedMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			var n int64
			_, err := fmt.Sscan(strings.TrimSpace(v), &n)
			return n, err
		}
	}
	return 0, errors.New("INFO memory has no used_memory")
}

// createGroup creates the queue's consumer group before Redis is
// pushed over its limit.
func createGroup(ctx context.Context, rdb redis.UniversalClient, queue string) error {
	err := rdb.XGroupCreateMkStream(ctx, keys.ForQueue(queue).Stream(), keys.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return err
	}
	return nil
}
