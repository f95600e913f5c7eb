package patterns_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// BenchmarkForkJoin10kReporting is BenchmarkForkJoin10k with members that
// report a total and return at once: each writes its total to the group's
// progress hash when it ends (one gpset call), none to its own.
func BenchmarkForkJoin10kReporting(b *testing.B) {
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
	joined := make(chan struct{}, 1)
	w, err := worker.New(context.Background(), env.RDB, &worker.Config{Queues: map[string]int{queue: 1}, Concurrency: 200})
	if err != nil {
		b.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, q Quick) (struct{}, error) {
		worker.ReportProgress(ctx, 0, q.Size)
		return struct{}{}, nil
	})
	worker.Handle(w, func(context.Context, Sum) (int, error) { joined <- struct{}{}; return 0, nil })
	if err := w.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	})
	ctx := context.Background()
	specs := make([]client.Spec, benchN)
	o := &client.EnqueueOpts{Queue: queue}
	for i := range specs {
		specs[i] = client.Spec{Args: Quick{Size: 1000}, Opts: o}
	}
	join := &client.Spec{Args: Sum{}, Opts: o}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g, err := patterns.ForkJoin(ctx, c, specs, join, nil)
		if err != nil {
			b.Fatal(err)
		}
		<-joined
		if i == 0 {
			b.StopTimer()
			p, err := g.Progress(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(p.WorkTotal)/benchN, "reported-bytes/member")
			b.StartTimer()
		}
	}
}
