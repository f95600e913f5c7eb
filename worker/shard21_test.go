package worker_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// ShardJob is a task of the sharded queue tests.
type ShardJob struct {
	N    int
	Tag  string
	Hold bool
}

func (ShardJob) Kind() string { return "shard.job" }

// declare makes b.queue a sharded queue of n shards and returns its
// physical queues.
func declare(t *testing.T, b *bundle, n int) []string {
	t.Helper()
	names, err := b.c.DeclareShards(ctxT(t), b.queue, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != n {
		t.Fatalf("%d names for %d shards", len(names), n)
	}
	for i, name := range names {
		if q, j, ok := keys.ParseShard(name); !ok || q != b.queue || j != i {
			t.Fatalf("shard %d is %q, not a shard of %q", i, name, b.queue)
		}
	}
	// On a cluster, the shards cover the masters evenly.
	masters, err := store.SlotMasters(ctxT(t), b.env.RDB)
	if err != nil {
		t.Fatal(err)
	}
	per := map[int]int{}
	for _, m := range store.ShardMaster(names, masters) {
		per[m]++
	}
	for m := range masters {
		if lo := n / len(masters); per[m] < lo || per[m] > lo+1 {
			t.Fatalf("%d shards over %d masters: %v per master", n, len(masters), per)
		}
	}
	return names
}

// Declaring again with the same number keeps the shards; another number is
// refused; a bad number too.
func TestShardsDeclare(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	again, err := b.c.DeclareShards(ctx, b.queue, 4)
	if err != nil || strings.Join(again, ",") != strings.Join(names, ",") {
		t.Fatalf("declared again: %v, %v; want %v", again, err, names)
	}
	if _, err := b.c.DeclareShards(ctx, b.queue, 5); err == nil || !strings.Contains(err.Error(), "it has 4") {
		t.Fatalf("declared with 5 shards after 4: %v, want a refusal", err)
	}
	for _, n := range []int{0, -1, keys.MaxShards + 1} {
		if _, err := b.c.DeclareShards(ctx, testenv.Queue(t), n); err == nil {
			t.Errorf("declared with %d shards", n)
		}
	}
	if _, err := b.c.DeclareShards(ctx, "bad~name", 2); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("declared queue %q: %v, want ErrInvalidName", "bad~name", err)
	}
}

// Tasks without a key go round-robin: Enqueue and EnqueueMany spread them
// evenly over the shards.
func TestShardsRoundRobin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	count := map[string]int{}
	for i := 0; i < 41; i++ {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		count[h.Queue()]++
	}
	specs := make([]client.Spec, 43)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	many := map[string]int{}
	for _, h := range hs {
		many[h.Queue()]++
		if st, err := h.State(ctx); err != nil || st != client.StatePending {
			t.Fatalf("task %s: %v, %v; want pending", h.ID(), st, err)
		}
	}
	for _, c := range []map[string]int{count, many} {
		total := 0
		for _, n := range c {
			total += n
		}
		for _, name := range names {
			if c[name] < total/4 || c[name] > total/4+1 {
				t.Errorf("shard %s got %d of %d tasks, want %d or %d: %v", name, c[name], total, total/4, total/4+1, c)
			}
		}
	}
}

// A task with an id goes to the shard of its id: enqueueing the id again
// finds it (Duplicate), and the id made of the queue's name and the key
// ("<queue>/<id>") names it for State, Cancel and Outcome.
func TestShardsIDIdempotentAndLogicalID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	seen := map[string]bool{}
	for i := 0; i < 16; i++ {
		id := "job-" + strconv.Itoa(i)
		h1, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		h2, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if h1.Duplicate() || !h2.Duplicate() || h1.ID() != h2.ID() {
			t.Fatalf("id %s: first %s (dup %v), second %s (dup %v); want one task, found again", id, h1.ID(), h1.Duplicate(), h2.ID(), h2.Duplicate())
		}
		if want := names[engine.ShardOf(id, 4)]; h1.Queue() != want {
			t.Fatalf("id %s went to %s, want %s", id, h1.Queue(), want)
		}
		seen[h1.Queue()] = true
		byName, err := b.c.Task(b.queue + "/" + id)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := byName.State(ctx); err != nil || st != client.StatePending {
			t.Fatalf("task %s/%s: %v, %v; want pending", b.queue, id, st, err)
		}
	}
	if len(seen) < 2 {
		t.Fatalf("16 ids all went to %v", seen)
	}
	// Cancel through the id of the queue's name, through the handle's.
	h, err := b.c.Task(b.queue + "/job-3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("outcome of the cancelled task: %v, want ErrCancelled", err)
	}
	phys, err := b.c.Task(names[engine.ShardOf("job-5", 4)] + "/job-5")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := phys.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	logical, _ := b.c.Task(b.queue + "/job-5")
	if st, err := logical.State(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("task job-5 cancelled through its shard's id: %v, %v", st, err)
	}
	missing, _ := b.c.Task(b.queue + "/no-such")
	if _, err := missing.State(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown id: %v, want ErrNotFound", err)
	}
}

// A worker configured with the sharded queue's name drains every shard and
// the plain queue; Outcome works through the handles and the queue's ids.
func TestShardsWorkerDrainsEveryShard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var mu sync.Mutex
	ran := map[string]int{}
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			ran[tk.Queue]++
			mu.Unlock()
			return j.N * 2, nil
		})
	})
	// One task in the plain queue before the declaration: a producer that
	// did not know of the shards.
	plain, err := b.c.Enqueue(ctx, ShardJob{N: -1}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Queue() != b.queue {
		t.Fatalf("task before the declaration went to %s", plain.Queue())
	}
	names := declare(t, b, 4)
	var hs []*client.Handle
	for i := 0; i < 40; i++ {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	keyed, err := b.c.Enqueue(ctx, ShardJob{N: 100}, &client.EnqueueOpts{Queue: b.queue, ID: "keyed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WaitAll(ctx, append(hs, plain, keyed)...); err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if got, err := client.Result[int](ctx, h); err != nil || got != 2*i {
			t.Fatalf("task %d: %v, %v", i, got, err)
		}
	}
	byName, _ := b.c.Task(b.queue + "/keyed")
	if got, err := client.Result[int](ctx, byName); err != nil || got != 200 {
		t.Fatalf("task %s/keyed: %v, %v; want 200", b.queue, got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The queue was in use when it was declared (on a Redis whose stream
	// outlives its last entry): a task with an id keeps to the plain queue
	// for the grace of the declaration (store.DeclareShards).
	wantPlain := 1
	if keyed.Queue() == b.queue {
		wantPlain = 2
	}
	if ran[b.queue] != wantPlain {
		t.Errorf("the plain queue ran %d tasks, want %d: %v", ran[b.queue], wantPlain, ran)
	}
	for _, name := range names {
		if ran[name] < 10 {
			t.Errorf("shard %s ran %d tasks, want 10 or more: %v", name, ran[name], ran)
		}
	}
}

// The tasks of a partition key are on one shard and keep their order with
// a worker running every shard.
func TestShardsPartitionOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	log := newPartLog()
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	const keysN, perKey = 12, 8
	want := map[string][]int{}
	shardOf := map[string]string{}
	used := map[string]bool{}
	var hs []*client.Handle
	for s := 0; s < perKey; s++ {
		for k := 0; k < keysN; k++ {
			key := "user:" + strconv.Itoa(k)
			h, err := b.c.Enqueue(ctx, PartJob{Key: key, Seq: s}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: key})
			if err != nil {
				t.Fatal(err)
			}
			if s == 0 {
				shardOf[key] = h.Queue()
				used[h.Queue()] = true
			} else if h.Queue() != shardOf[key] {
				t.Fatalf("key %s: task %d went to %s, the first to %s", key, s, h.Queue(), shardOf[key])
			}
			hs = append(hs, h)
			want[key] = seqs(perKey)
		}
	}
	if len(used) < 2 {
		t.Fatalf("%d keys all on %v of %v", keysN, used, names)
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	log.check(t, want)
}

// A backlog in one shard does not hold up another: a task enqueued to the
// idle shard starts while the backlog still waits (counted in tasks run).
func TestShardsNoStarvation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 2)
	// Ids of shard 0 (the backlog) and one of shard 1.
	var busy []string
	idle := ""
	for i := 0; len(busy) < 100 || idle == ""; i++ {
		id := "s-" + strconv.Itoa(i)
		if engine.ShardOf(id, 2) == 0 {
			if len(busy) < 100 {
				busy = append(busy, id)
			}
		} else if idle == "" {
			idle = id
		}
	}
	specs := make([]client.Spec, len(busy))
	for i, id := range busy {
		specs[i] = client.Spec{Args: ShardJob{N: i, Tag: "busy"}, Opts: &client.EnqueueOpts{Queue: b.queue, ID: id}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h.Queue() != names[0] {
			t.Fatalf("task %s is not on shard 0 (%s)", h.ID(), names[0])
		}
	}
	var busyRan, busyBefore atomic.Int64
	busyBefore.Store(-1)
	first := make(chan struct{})
	var once sync.Once
	b.worker(t, &worker.Config{Concurrency: 1, FetchBatch: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			if j.Tag == "idle" {
				busyBefore.Store(busyRan.Load())
				return 0, nil
			}
			busyRan.Add(1)
			once.Do(func() { close(first) })
			return 0, nil
		})
	})
	select {
	case <-first:
	case <-ctx.Done():
		t.Fatal("the backlog did not start")
	}
	h, err := b.c.Enqueue(ctx, ShardJob{Tag: "idle"}, &client.EnqueueOpts{Queue: b.queue, ID: idle})
	if err != nil {
		t.Fatal(err)
	}
	if h.Queue() != names[1] {
		t.Fatalf("task %s is not on shard 1 (%s)", h.ID(), names[1])
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	// Each fetch tries the two shards (and the empty plain queue) in a
	// random order: the idle shard's task waits a few fetches at most,
	// each of one backlog task. Half the backlog left is a margin of
	// about 2^-50.
	if n := busyBefore.Load(); n < 0 || n >= int64(len(busy)/2) {
		t.Fatalf("the idle shard's task started after %d of the other shard's %d backlog tasks", n, len(busy))
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
}

// A queue declared sharded while a worker and another producer run: the
// producer keeps writing to the plain queue until it reads the registry
// again, the worker serves both, and takes up the shards.
func TestShardsDeclaredWhileRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	other := testenv.Client(t, b.env)
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) { return j.N, nil })
	})
	h0, err := other.Enqueue(ctx, ShardJob{N: 1}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h0.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	names := declare(t, b, 3)
	var hs []*client.Handle
	for i := 0; i < 9; i++ {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		if h.Queue() != names[i%3] {
			t.Fatalf("task %d went to %s, want %s", i, h.Queue(), names[i%3])
		}
		hs = append(hs, h)
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	// The other producer learns of the shards within its refresh period;
	// until then its tasks go to the plain queue and run all the same.
	testenv.Eventually(t, 10*time.Second, "the other producer places on a shard", func() bool {
		h, err := other.Enqueue(ctx, ShardJob{N: 7}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
		return h.Queue() != b.queue
	})
}

// ForkJoin members placed on several shards join once.
func TestShardsForkJoinAcrossShards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	home := testenv.Queue(t)
	declare(t, b, 4)
	var joins atomic.Int64
	b.worker(t, &worker.Config{Concurrency: 8, Queues: map[string]int{b.queue: 1, home: 1}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			if j.Tag == "join" {
				joins.Add(1)
			}
			return j.N, nil
		})
	})
	specs := make([]client.Spec, 12)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: ShardJob{Tag: "join", N: 99}, Opts: &client.EnqueueOpts{Queue: b.queue}},
		&patterns.GroupOpts{Queue: home, ID: "fj"})
	if err != nil {
		t.Fatal(err)
	}
	members, err := g.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for _, m := range members {
		on[m.Queue()] = true
	}
	if len(on) < 2 {
		t.Fatalf("12 members all on %v", on)
	}
	join, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := client.Result[int](ctx, join); err != nil || got != 99 {
		t.Fatalf("join: %v, %v", got, err)
	}
	if err := client.WaitAll(ctx, members...); err != nil {
		t.Fatal(err)
	}
	if n := joins.Load(); n != 1 {
		t.Fatalf("the join ran %d times", n)
	}
}

// Pausing the sharded queue's name pauses its shards: once the worker
// reports the queue paused (the same read of the flags pauses its shards),
// it runs none of their tasks until the queue is resumed, then runs them
// all.
func TestShardsPauseLogicalQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 3)
	ins := inspect.New(b.env.RDB)
	var resumed atomic.Bool
	w := b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			if !resumed.Load() {
				return 0, worker.Permanent(errors.New("ran while its queue was paused"))
			}
			return j.N, nil
		})
	})
	if err := ins.Pause(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the worker reports the queue paused", func() bool {
		ws, err := ins.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, wi := range ws {
			if wi.Name != w.Name() {
				continue
			}
			return slices.Contains(wi.Paused, b.queue)
		}
		return false
	})
	var hs []*client.Handle
	for i := 0; i < 6; i++ {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	resumed.Store(true)
	if err := ins.Resume(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for i, h := range hs {
		on[h.Queue()] = true
		if got, err := client.Result[int](ctx, h); err != nil || got != i {
			t.Fatalf("task %d on %s: %v, %v", i, h.Queue(), got, err)
		}
	}
	if len(on) != len(names) {
		t.Fatalf("6 tasks on %v, want the %d shards", on, len(names))
	}
}

// A sharded queue's share of the fetches against another configured queue
// is its weight, not its weight times its shards: with equal weights and
// both backlogged, each runs about half of the tasks.
func TestShardsShareOfWeight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	declare(t, b, 4)
	plain := testenv.Queue(t)
	const each, counted = 150, 100
	var specs []client.Spec
	for i := 0; i < each; i++ {
		specs = append(specs, client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}},
			client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: plain}})
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ran, sharded := 0, 0
	b.worker(t, &worker.Config{Concurrency: 1, FetchBatch: 1, Queues: map[string]int{b.queue: 1, plain: 1}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			defer mu.Unlock()
			if ran < counted {
				ran++
				if keys.IsShard(tk.Queue) {
					sharded++
				}
			}
			return 0, nil
		})
	})
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Half of 100 with a standard deviation of 5: 25 to 75 is five of
	// them. Weight times shards would give 80.
	if sharded < 25 || sharded > 75 {
		t.Fatalf("the sharded queue ran %d of the first %d tasks, want about half", sharded, counted)
	}
}

// Config.QueueLimits of a sharded queue holds for all its shards together:
// one limiter, not one per shard.
func TestShardsQueueLimitAcrossShards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	declare(t, b, 3)
	var pk peak
	b.worker(t, &worker.Config{Concurrency: 8, QueueLimits: map[string]int{b.queue: 2}, LimitWait: time.Minute}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			pk.enter()
			defer pk.leave()
			t := time.NewTimer(3 * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return j.N, nil
		})
	})
	specs := make([]client.Spec, 30)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if v, err := client.Result[int](ctx, h); err != nil || v != i {
			t.Fatalf("task %d: %d, %v", i, v, err)
		}
	}
	if m := pk.max.Load(); m != 2 {
		t.Errorf("most tasks of the sharded queue running at once: %d, want 2 (the limit, reached)", m)
	}
}
