package patterns_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Benchmarks of 10,000 no-op members against the same tasks enqueued plain;
// cmd/bench reports the same comparison with its baselines.
const benchN = 10_000

func benchSetup(b *testing.B) (*bundle, *atomic.Int64, chan struct{}) {
	if !testenv.Real() {
		b.Skip("set ASYNC_REDIS_ADDR: benchmarks measure real Redis")
	}
	t := &testing.T{}
	_ = t
	env := testenv.Redis(b)
	c, err := client.New(context.Background(), env.RDB, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	bu := &bundle{env: env, c: c, queue: testenv.Queue(b)}
	var done atomic.Int64
	joined := make(chan struct{}, 1)
	w, err := worker.New(context.Background(), env.RDB, &worker.Config{Queues: map[string]int{bu.queue: 1}, Concurrency: 200})
	if err != nil {
		b.Fatal(err)
	}
	worker.Handle(w, func(context.Context, Noop) (struct{}, error) { done.Add(1); return struct{}{}, nil })
	worker.Handle(w, func(context.Context, Sum) (int, error) { joined <- struct{}{}; return 0, nil })
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	return bu, &done, joined
}

func noops(queue string, n int) []client.Spec {
	specs := make([]client.Spec, n)
	o := &client.EnqueueOpts{Queue: queue}
	for i := range specs {
		specs[i] = client.Spec{Args: Noop{}, Opts: o}
	}
	return specs
}

func BenchmarkPlain10k(b *testing.B) {
	bu, done, _ := benchSetup(b)
	ctx := context.Background()
	specs := noops(bu.queue, benchN)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		done.Store(0)
		if _, err := bu.c.EnqueueMany(ctx, specs); err != nil {
			b.Fatal(err)
		}
		for done.Load() < benchN {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

func BenchmarkForkJoin10k(b *testing.B) {
	bu, _, joined := benchSetup(b)
	ctx := context.Background()
	specs := noops(bu.queue, benchN)
	join := &client.Spec{Args: Sum{}, Opts: &client.EnqueueOpts{Queue: bu.queue}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := patterns.ForkJoin(ctx, bu.c, specs, join, nil); err != nil {
			b.Fatal(err)
		}
		<-joined
	}
}

func BenchmarkEnqueueOnlyPlain10k(b *testing.B) {
	env := testenv.Redis(b)
	c, _ := client.New(context.Background(), env.RDB, nil)
	defer c.Close()
	specs := noops(testenv.Queue(b), benchN)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.EnqueueMany(context.Background(), specs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnqueueOnlyForkJoin10k(b *testing.B) {
	env := testenv.Redis(b)
	c, _ := client.New(context.Background(), env.RDB, nil)
	defer c.Close()
	specs := noops(testenv.Queue(b), benchN)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := patterns.ForkJoin(context.Background(), c, specs, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInvokeAllRelease measures one member's end to the next one's
// start at a limit of 1.
func BenchmarkInvokeAllRelease(b *testing.B) {
	bu, _, _ := benchSetup(b)
	ctx := context.Background()
	specs := noops(bu.queue, b.N)
	b.ResetTimer()
	g, err := patterns.InvokeAll(ctx, bu.c, specs, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		b.Fatal(err)
	}
}

// One Partitioner.Append of one item and of 100: the producers' hot path.
func BenchmarkPartitionerAppend(b *testing.B) {
	if !testenv.Real() {
		b.Skip("set ASYNC_REDIS_ADDR: benchmarks measure real Redis")
	}
	env := testenv.Redis(b)
	c, err := client.New(context.Background(), env.RDB, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	queue := testenv.Queue(b)
	for _, n := range []int{1, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			pt, err := patterns.NewPartitioner[int](c, "bench"+strconv.Itoa(n), func(v int) string { return strconv.Itoa(v % 7) }, &patterns.PartitionerOpts{Queue: queue})
			if err != nil {
				b.Fatal(err)
			}
			items := make([]int, n)
			for i := range items {
				items[i] = i
			}
			ctx := context.Background()
			for b.Loop() {
				if err := pt.Append(ctx, items...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			q := keys.ForQueue(queue)
			_ = env.RDB.Del(ctx, q.Partitioner("bench"+strconv.Itoa(n))).Err()
		})
	}
}
