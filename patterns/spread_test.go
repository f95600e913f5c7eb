package patterns_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

func TestSpreadStartsEvenly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	co, err := coordinator.New(b.env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop(context.Background()) })
	var mu sync.Mutex
	var starts []time.Time
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return a.N * a.N, nil
		})
	})
	ctx := ctxT(t)
	const n, within = 10, 500 * time.Millisecond
	ns := make([]int, n)
	for i := range ns {
		ns[i] = i
	}
	begin := time.Now()
	g, err := patterns.Spread(ctx, b.c, within, squares(b.queue, ns...))
	if err != nil {
		t.Fatal(err)
	}
	res, err := patterns.Results[int](ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res {
		if v != i*i {
			t.Fatalf("result %d: %d", i, v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(starts, func(a, b int) bool { return starts[a].Before(starts[b]) })
	for i, s := range starts {
		due := time.Duration(i) * within / n
		if d := s.Sub(begin); d < due-5*time.Millisecond || d > due+150*time.Millisecond {
			t.Errorf("start %d at %v, due at %v", i, d, due)
		}
	}
}
