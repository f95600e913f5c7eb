package worker_test

import (
	"context"
	"sync"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// StrictArgs is a task of TestStrictPriorityWithDefaultFetchBatch (a kind
// of its own).
type StrictArgs struct{ N int }

func (StrictArgs) Kind() string { return "strict" }

// StrictPriority holds at the default FetchBatch, while quick handlers
// drain a backlog of the lower queue (the case where a worker would read
// ahead of its free slots): once tasks of the higher queue are enqueued,
// no task of the lower one starts before them, but those already given a
// slot when the enqueue returned, at most Concurrency. An entry of the
// lower queue read ahead and still waiting for its slot would start before
// them.
func TestStrictPriorityWithDefaultFetchBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	high, low := b.queue+"-high", b.queue+"-low"
	ctx := ctxT(t)
	const (
		nLow   = 2000
		rounds = 5
		nHigh  = 20
		first  = 100000 // the Ns of the high queue's tasks begin here
	)
	specs := make([]client.Spec, nLow)
	for i := range specs {
		specs[i] = client.Spec{Args: StrictArgs{N: i}, Opts: &client.EnqueueOpts{Queue: low}}
	}
	if _, err := b.c.EnqueueMany(ctx, specs); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		order   []int // the Ns as their handlers started; -1 where an enqueue of the high queue returned
		lowRun  int
		trigger = make(chan struct{}, rounds)
	)
	b.worker(t, &worker.Config{Queues: map[string]int{high: 10, low: 1}, StrictPriority: true, Concurrency: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a StrictArgs) (struct{}, error) {
			mu.Lock()
			order = append(order, a.N)
			if a.N < first {
				lowRun++
				if lowRun%300 == 150 {
					select {
					case trigger <- struct{}{}:
					default:
					}
				}
			}
			mu.Unlock()
			return struct{}{}, nil
		})
	})
	for r := 0; r < rounds; r++ {
		select {
		case <-trigger:
		case <-ctx.Done():
			t.Fatalf("round %d: the lower queue's backlog did not drain: %v", r, ctx.Err())
		}
		hs := make([]client.Spec, nHigh)
		for i := range hs {
			hs[i] = client.Spec{Args: StrictArgs{N: first + 100*r + i}, Opts: &client.EnqueueOpts{Queue: high}}
		}
		handles, err := b.c.EnqueueMany(ctx, hs)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		order = append(order, -1)
		mu.Unlock()
		for _, h := range handles {
			if _, err := h.Outcome(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	r := 0
	for i, n := range order {
		if n != -1 {
			continue
		}
		lows := 0
		for _, m := range order[i+1:] {
			if m >= first {
				break
			}
			lows++
		}
		if lows > 1 {
			t.Errorf("round %d: %d tasks of the lower queue started after the higher queue's enqueue returned, before its first task; want at most 1 (Concurrency)", r, lows)
		}
		r++
	}
	if r != rounds {
		t.Fatalf("%d rounds recorded, want %d", r, rounds)
	}
}
