package patterns_test

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Throttle's members take their tokens one every 50 ms across two workers.
// The promise is about the tokens, which Redis times: a handler's start, read
// on the local clock, follows its token by a delay that a busy machine
// stretches at will, so the test reads the tokens' times in Redis
// (testenv.RecordTokens) and holds them to the spacing exactly.
func TestThrottleSpacesStartsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	starts := 0
	var logs []*testenv.TokenLog
	for i := 0; i < 2; i++ {
		rdb := testenv.NewEnvClient(b.env)
		t.Cleanup(func() { _ = rdb.Close() })
		logs = append(logs, testenv.RecordTokens(rdb))
		b.workerOn(t, rdb, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
				mu.Lock()
				starts++
				mu.Unlock()
				return a.N * a.N, nil
			})
		})
	}
	ctx := ctxT(t)
	const interval = 50 * time.Millisecond
	g, err := patterns.Throttle(ctx, b.c, squares(b.queue, 0, 1, 2, 3, 4, 5, 6, 7), 20, time.Second, nil) // one every 50ms
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
	var takes []testenv.Take
	for _, l := range logs {
		takes = append(takes, l.Takes()...)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(takes) != starts {
		t.Fatalf("%d handler starts and %d tokens taken or refunded: %+v", starts, len(takes), takes)
	}
	for _, tk := range takes {
		if tk.Err != nil || tk.Refund || tk.N != 1 {
			t.Fatalf("token %+v: want one token taken, at a known time", tk)
		}
	}
	// Token i was taken between takes[i].Early and takes[i].Late (Redis µs).
	// Any two tokens must be an interval apart: it is a failure when even
	// the farthest placement within the readings brings two closer.
	sort.Slice(takes, func(i, j int) bool { return takes[i].Early < takes[j].Early })
	us := interval.Microseconds()
	for i := range takes {
		for j := i + 1; j < len(takes); j++ {
			if far := max(takes[j].Late-takes[i].Early, takes[i].Late-takes[j].Early); far < us {
				t.Errorf("tokens %d and %d were taken at most %v apart by Redis' clock, want at least %v", i, j, time.Duration(far)*time.Microsecond, interval)
			}
		}
	}
	if n := len(takes); n > 1 {
		if span := takes[n-1].Late - takes[0].Early; span < int64(n-1)*us {
			t.Errorf("%d tokens taken within %v by Redis' clock, want at least %v", n, time.Duration(span)*time.Microsecond, time.Duration(n-1)*interval)
		}
	}
}

func TestThrottleBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	if _, err := patterns.Throttle(ctx, b.c, squares(b.queue, 1), 0, time.Second, nil); err == nil || !strings.Contains(err.Error(), "Limit.Rate is 0") {
		t.Errorf("rate 0: %v", err)
	}
	if _, err := patterns.Throttle(ctx, b.c, squares(b.queue, 1), 1, 0, nil); err == nil || !strings.Contains(err.Error(), "Limit.Per") {
		t.Errorf("every 0: %v", err)
	}
}
