package inspect_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// cmdLog records the commands a client sends and its round trips.
type cmdLog struct {
	mu    sync.Mutex
	names []string
	trips int
}

func (l *cmdLog) add(cmds ...redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trips++
	for _, c := range cmds {
		l.names = append(l.names, c.Name())
	}
}

func (l *cmdLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names, l.trips = nil, 0
}

func (l *cmdLog) get() ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.names...), l.trips
}

func (l *cmdLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *cmdLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add(cmd)
		return next(ctx, cmd)
	}
}

func (l *cmdLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.add(cmds...)
		return next(ctx, cmds)
	}
}

// The bug of `worker queues` (-1 waiting after `task cancel` of a waiting
// task in a queue no worker serves): cancel.lua deletes the entry, and Redis
// then reports no lag for the group. The count must stay exact without
// reading the stream: one round trip of O(1) work, however many wait.
func TestQueueCountsAfterCancelNoScan(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	specs := make([]client.Spec, 2500)
	for i := range specs {
		specs[i] = client.Spec{Args: Job{N: i}, Opts: &client.EnqueueOpts{Queue: queue}}
	}
	hs, err := c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	// A worker read the first one and holds it (the group has read past
	// the start: Redis' lag then depends on what was deleted after it).
	q := keys.ForQueue(queue)
	if err := e.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: "w1", Streams: []string{q.Stream(), ">"}, Count: 1, Block: -1}).Err(); err != nil {
		t.Fatal(err)
	}
	if st, err := hs[1000].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %v, %v", st, err)
	}

	rdb := testenv.NewEnvClient(e)
	t.Cleanup(func() { _ = rdb.Close() })
	log := &cmdLog{}
	rdb.AddHook(log)
	in := inspect.New(rdb)
	queueOf(t, in, queue) // loads the script
	log.reset()
	got := queueOf(t, in, queue)
	if got.Waiting != 2498 || got.Running != 1 || got.WaitingFallback || got.StreamLength != 2499 {
		t.Errorf("2500 enqueued, 1 read, 1 waiting cancelled: %+v, want 2498 waiting counted exactly, 1 running, length 2499", got)
	}
	// The HGET asks the shard registry whether the queue is sharded.
	if names, trips := log.get(); trips != 2 || !slices.Equal(names, []string{"hget", "evalsha"}) {
		t.Errorf("Queue sent %v in %d round trips, want the registry's HGET, then one EVALSHA (no read of the stream)", names, trips)
	}
}

// Block, Flaky, Dies and Limited are the kinds of the known workload.
type (
	Block   struct{ N int }
	Flaky   struct{}
	Dies    struct{}
	Limited struct{ N int }
)

func (Block) Kind() string   { return "inspect.block" }
func (Flaky) Kind() string   { return "inspect.flaky" }
func (Dies) Kind() string    { return "inspect.dies" }
func (Limited) Kind() string { return "inspect.limited" }

// Every count after a known workload. Queue a, served: four tasks running,
// held by handlers that block (one plain, the head of a partition, the
// holder of a kind limit of 1, the one admitted member of an InvokeAll of
// limit 1); held: the task parked by that limit, the two waiting behind
// the partition's head, the two InvokeAll members waiting for a slot;
// retrying: one whose attempt failed (backoff an hour); dead: one; one
// delayed. Queue b, unserved and paused: three enqueued, one of them
// cancelled, one delayed. Then the handlers return, and the counts and
// totals follow.
func TestQueueCountsKnownWorkload(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	qa, qb := testenv.Queue(t)+"-a", testenv.Queue(t)+"-b"
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	enqueue := func(args client.Args, opts *client.EnqueueOpts) *client.Handle {
		t.Helper()
		h, err := c.Enqueue(ctx, args, opts)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	// Queue b first: nothing serves it.
	var bs []*client.Handle
	for i := range 3 {
		bs = append(bs, enqueue(Job{N: i}, &client.EnqueueOpts{Queue: qb}))
	}
	enqueue(Job{N: 9}, &client.EnqueueOpts{Queue: qb, Delay: time.Hour})
	if st, err := bs[1].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %v, %v", st, err)
	}
	if err := e.RDB.Set(ctx, keys.ForQueue(qb).Paused(), "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	gotB := queueOf(t, in, qb)
	if want := (inspect.QueueInfo{Queue: qb, Waiting: 2, Scheduled: 1, Paused: true, StreamLength: 2, Read: gotB.Read}); !reflect.DeepEqual(gotB, want) {
		t.Errorf("queue b: %+v, want %+v", gotB, want)
	}

	release := make(chan struct{})
	block := func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	testenv.StartWorker(t, e.RDB, qa, &worker.Config{Concurrency: 8, KindLimits: map[string]int{Limited{}.Kind(): 1},
		LimitWait: time.Hour, Backoff: func(int) time.Duration { return time.Hour }}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, b Block) (int, error) { return b.N, block(ctx) })
		worker.Handle(w, func(ctx context.Context, l Limited) (int, error) { return l.N, block(ctx) })
		worker.Handle(w, func(context.Context, Flaky) (int, error) { return 0, errors.New("flaky") })
		worker.Handle(w, func(context.Context, Dies) (int, error) { return 0, worker.Permanent(errors.New("dies")) })
	}, true)
	enqueue(Block{N: 1}, &client.EnqueueOpts{Queue: qa})
	enqueue(Limited{N: 1}, &client.EnqueueOpts{Queue: qa})
	enqueue(Limited{N: 2}, &client.EnqueueOpts{Queue: qa})
	for i := range 3 {
		enqueue(Block{N: 10 + i}, &client.EnqueueOpts{Queue: qa, PartitionKey: "p1"})
	}
	members := make([]client.Spec, 3)
	for i := range members {
		members[i] = client.Spec{Args: Block{N: 20 + i}, Opts: &client.EnqueueOpts{Queue: qa}}
	}
	if _, err := patterns.InvokeAll(ctx, c, members, 1, nil); err != nil {
		t.Fatal(err)
	}
	enqueue(Flaky{}, &client.EnqueueOpts{Queue: qa, MaxAttempts: 3})
	enqueue(Dies{}, &client.EnqueueOpts{Queue: qa})
	enqueue(Block{N: 30}, &client.EnqueueOpts{Queue: qa, Delay: time.Hour})

	var got inspect.QueueInfo
	testenv.Eventually(t, 15*time.Second, "the workload settled", func() bool {
		got = queueOf(t, in, qa)
		return got.Running == 4 && got.Held == 5 && got.Retrying == 1 && got.Dead == 1
	})
	got = queueOf(t, in, qa)
	want := inspect.QueueInfo{Queue: qa, Running: 4, Scheduled: 1, Retrying: 1, Held: 5, Dead: 1,
		Processed: 2, Failed: 2, ProcessedLastMinute: 2, FailedLastMinute: 2, StreamLength: got.StreamLength, Read: got.Read}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("queue a, settled: %+v, want %+v", got, want)
	}

	close(release)
	testenv.Eventually(t, 15*time.Second, "the blocked tasks done", func() bool {
		got = queueOf(t, in, qa)
		return got.Processed == 11
	})
	want = inspect.QueueInfo{Queue: qa, Scheduled: 1, Retrying: 1, Dead: 1,
		Processed: 11, Succeeded: 9, Failed: 2, ProcessedLastMinute: 11, FailedLastMinute: 2, StreamLength: got.StreamLength, Read: got.Read}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("queue a, done: %+v, want %+v", got, want)
	}
}

// Totals and History after N successes and M failures: each minute of the
// window once, oldest first, the current minute of Redis time last, and
// their sums the totals.
func TestTotalsAndHistory(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	start, err := e.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	const n, m = 7, 3
	var hs []*client.Handle
	for i := range n + m {
		h, err := c.Enqueue(ctx, Job{N: i, Fail: i >= n}, &client.EnqueueOpts{Queue: queue, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (int, error) {
			if j.Fail {
				return 0, errors.New("asked to fail")
			}
			return j.N, nil
		})
	}, false)
	for _, h := range hs {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _ = h.Outcome(wctx)
		cancel()
	}
	got := queueOf(t, in, queue)
	if got.Processed != n+m || got.Succeeded != n || got.Failed != m || got.Dead != m {
		t.Errorf("totals: %+v, want %d processed, %d succeeded, %d failed, %d dead", got, n+m, n, m, m)
	}
	hist, err := in.History(ctx, queue, 5)
	if err != nil {
		t.Fatal(err)
	}
	end, err := e.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 5 {
		t.Fatalf("History of 5 minutes: %d entries", len(hist))
	}
	var p, f int64
	for i, s := range hist {
		if i > 0 && !s.Minute.Equal(hist[i-1].Minute.Add(time.Minute)) {
			t.Errorf("History minutes not consecutive: %v after %v", s.Minute, hist[i-1].Minute)
		}
		p, f = p+s.Processed, f+s.Failed
	}
	last := hist[4].Minute
	if last.Before(start.Truncate(time.Minute)) || last.After(end) || last.Second() != 0 {
		t.Errorf("History's last minute %v, want the minute of Redis time between %v and %v", last, start, end)
	}
	if end.Sub(start) < 4*time.Minute && (p != n+m || f != m) {
		// Everything ended within the window's five minutes.
		t.Errorf("History sums to %d processed, %d failed; want %d, %d: %+v", p, f, n+m, m, hist)
	}
	if end.Sub(start) < 59*time.Second && (got.ProcessedLastMinute != n+m || got.FailedLastMinute != m) {
		// Everything ended within the last 60 s of Redis time.
		t.Errorf("last minute: %d processed, %d failed; want %d, %d", got.ProcessedLastMinute, got.FailedLastMinute, n+m, m)
	}

	for _, bad := range []int{0, -1, inspect.MaxHistoryMinutes + 1} {
		if _, err := in.History(ctx, queue, bad); err == nil {
			t.Errorf("History of %d minutes: no error", bad)
		}
	}
	if _, err := in.History(ctx, "a b", 1); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("History of a bad queue name: %v, want ErrInvalidName", err)
	}
	empty, err := in.History(ctx, queue+"-none", inspect.MaxHistoryMinutes)
	if err != nil || len(empty) != inspect.MaxHistoryMinutes {
		t.Fatalf("History of a day of an unused queue: %d entries, %v", len(empty), err)
	}
	for _, s := range empty {
		if s.Processed != 0 || s.Failed != 0 {
			t.Errorf("unused queue: %+v", s)
		}
	}
}

// Held tasks leave the count however they leave: InvokeAll members held
// when their group is cancelled, a task waiting behind its partition's head
// when it is cancelled. In a queue no worker serves, so nothing else moves.
func TestHeldCountsAfterCancels(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	members := make([]client.Spec, 4)
	for i := range members {
		members[i] = client.Spec{Args: Job{N: i}, Opts: &client.EnqueueOpts{Queue: queue}}
	}
	g, err := patterns.InvokeAll(ctx, c, members, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ps []*client.Handle
	for i := range 3 {
		h, err := c.Enqueue(ctx, Job{N: 10 + i}, &client.EnqueueOpts{Queue: queue, PartitionKey: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, h)
	}
	// One member admitted (in the stream), three held; the partition's
	// head in the stream, two behind it.
	var got inspect.QueueInfo
	testenv.Eventually(t, 10*time.Second, "the first member admitted", func() bool {
		got = queueOf(t, in, queue)
		return got.Waiting == 2
	})
	if got.Waiting != 2 || got.Held != 5 || got.Running != 0 || got.Scheduled != 0 || got.Retrying != 0 {
		t.Errorf("InvokeAll of 4 (limit 1) and a partition of 3: %+v, want 2 waiting, 5 held", got)
	}
	if st, err := ps[2].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel the last of the partition: %v, %v", st, err)
	}
	if got = queueOf(t, in, queue); got.Waiting != 2 || got.Held != 4 {
		t.Errorf("the last of the partition cancelled: %+v, want 2 waiting, 4 held", got)
	}
	if err := g.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the group's members cancelled", func() bool {
		got = queueOf(t, in, queue)
		return got.Held == 1 && got.Waiting == 1
	})
	if got.Waiting != 1 || got.Held != 1 || got.Running != 0 {
		t.Errorf("group cancelled: %+v, want the partition's head waiting and one behind it held", got)
	}
}
