package patterns_test

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

func TestThrottleSpacesStartsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	var starts []time.Time
	for i := 0; i < 2; i++ {
		b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				return a.N * a.N, nil
			})
		})
	}
	ctx := ctxT(t)
	g, err := patterns.Throttle(ctx, b.c, squares(b.queue, 0, 1, 2, 3, 4, 5, 6, 7), 20, time.Second) // one every 50ms
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
	for i := 1; i < len(starts); i++ {
		// Each start takes a token; tokens come 50ms apart.
		if d := starts[i].Sub(starts[0]); d < time.Duration(i)*50*time.Millisecond-5*time.Millisecond {
			t.Errorf("start %d came %v after the first, want at least %v", i, d, time.Duration(i)*50*time.Millisecond)
		}
	}
}

func TestThrottleBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	if _, err := patterns.Throttle(ctx, b.c, squares(b.queue, 1), 0, time.Second); err == nil || !strings.Contains(err.Error(), "Limit.Rate is 0") {
		t.Errorf("rate 0: %v", err)
	}
	if _, err := patterns.Throttle(ctx, b.c, squares(b.queue, 1), 1, 0); err == nil || !strings.Contains(err.Error(), "Limit.Per") {
		t.Errorf("every 0: %v", err)
	}
}
