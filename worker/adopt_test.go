package worker_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// The reply of the read that delivers a task is lost: go-redis resends the
// XREADGROUP, whose resend returns only newer entries, and the task sits
// pending under the worker's own consumer. The worker takes it up at its
// next reclaim round, under the token of that delivery, instead of leaving
// it to wait out the lease and be taken over with a delivery more.
//
// Asserted: the handler runs once, with Deliveries 1 (the delivery the lost
// read made; a takeover after the lease would make it 2), and it starts,
// in Redis time, less than a lease after the worker started (before the
// delivery's lease could have ended); the task succeeds.
func TestLostReadReplyTaskRunsWithinLease(t *testing.T) {
	t.Parallel()
	const lease = 4 * time.Second
	env := testenv.Redis(t)
	if os.Getenv(testenv.EnvCluster) != "" {
		env = testenv.IsolatedRedis(t, 0) // a new miniredis: the proxy serves one address
	}
	queue := testenv.Queue(t)
	c := testenv.Client(t, env)
	ctx := ctxT(t)

	// The task waits in the stream: the worker's first read delivers it.
	h, err := c.Enqueue(ctx, faultArgs{N: 7}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewFaultProxy(t, env.Addr)
	p.DropReply(testenv.MatchName("XREADGROUP"), 1, 1)

	type run struct {
		deliveries int
		at         time.Time // Redis time as the handler started
	}
	var mu sync.Mutex
	var runs []run
	before, err := env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartWorker(t, p.NewClient(t, env), queue, &worker.Config{Lease: lease}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a faultArgs) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			now, err := env.RDB.Time(ctx).Result()
			if err != nil {
				return 0, err
			}
			mu.Lock()
			runs = append(runs, run{tk.Deliveries, now})
			mu.Unlock()
			return a.N, nil
		})
	}, false)

	got, err := client.Result[int](ctx, h)
	if err != nil || got != 7 {
		t.Fatalf("result %d, %v; want 7", got, err)
	}
	if n := p.Dropped(); n != 1 {
		t.Fatalf("the proxy dropped %d replies; want 1 (the first read's)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(runs) != 1 {
		t.Fatalf("the handler ran %d times; want once", len(runs))
	}
	if runs[0].deliveries != 1 {
		t.Errorf("the handler ran with Deliveries %d; want 1 (the lost read's delivery, taken up without another)", runs[0].deliveries)
	}
	if d := runs[0].at.Sub(before); d >= lease {
		t.Errorf("the handler started %v (Redis time) after the worker started; want under the lease, %v", d, lease)
	}
}

// A worker restarted under the same name does not take up an entry
// delivered to its consumer before it started: the run of its previous
// life may have died on that task, and a takeover after the lease counts
// the delivery toward MaxDeliveries.
//
// Asserted: the handler runs once, with Deliveries 2, at least a lease
// (Redis time) after the entry was delivered.
func TestRestartedWorkerLeavesEarlierDeliveryToLease(t *testing.T) {
	t.Parallel()
	const lease = 2 * time.Second
	b := setup(t)
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, faultArgs{N: 3}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	name := "fixed-" + b.queue
	q := keys.ForQueue(b.queue)
	if err := store.EnsureGroup(ctx, b.env.RDB, q); err != nil {
		t.Fatal(err)
	}
	before, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The worker's previous life read the task, then died.
	xs, err := b.env.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: name, Streams: []string{q.Stream(), ">"}, Count: 1, Block: -1}).Result()
	if err != nil || len(xs) != 1 || len(xs[0].Messages) != 1 {
		t.Fatalf("read %v, %v; want the one entry", xs, err)
	}

	var mu sync.Mutex
	var deliveries []int
	var at time.Time
	b.worker(t, &worker.Config{Name: name, Lease: lease}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a faultArgs) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			now, err := b.env.RDB.Time(ctx).Result()
			if err != nil {
				return 0, err
			}
			mu.Lock()
			deliveries = append(deliveries, tk.Deliveries)
			at = now
			mu.Unlock()
			return a.N, nil
		})
	})
	if got, err := client.Result[int](ctx, h); err != nil || got != 3 {
		t.Fatalf("result %d, %v; want 3", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deliveries) != 1 || deliveries[0] != 2 {
		t.Fatalf("the handler ran with Deliveries %v; want one run, with 2 (taken over after the lease)", deliveries)
	}
	if d := at.Sub(before); d < lease {
		t.Fatalf("the handler started %v (Redis time) after the delivery; want at least the lease, %v", d, lease)
	}
}
