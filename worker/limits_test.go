package worker_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

type LimitedArgs struct {
	N     int
	Block bool
}

func (LimitedArgs) Kind() string { return "limited" }

// GatedArgs is LimitedArgs under another kind, so that the limits of
// parallel tests (global per kind) stay apart.
type GatedArgs struct {
	N     int
	Block bool
}

func (GatedArgs) Kind() string { return "gated" }

// peak tracks how many handlers run at once, and the most seen.
type peak struct{ cur, max atomic.Int32 }

func (p *peak) enter() {
	c := p.cur.Add(1)
	for m := p.max.Load(); c > m && !p.max.CompareAndSwap(m, c); m = p.max.Load() {
	}
}

func (p *peak) leave() { p.cur.Add(-1) }

// A kind limit holds across two workers; tasks that wait for a slot are woken
// as slots free (LimitWait is far longer than the test).
func TestKindLimitAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var pk peak
	for i := 0; i < 2; i++ {
		b.worker(t, &worker.Config{Concurrency: 8, KindLimits: map[string]int{"limited": 2}, LimitWait: time.Minute}, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a LimitedArgs) (int, error) {
				pk.enter()
				defer pk.leave()
				t := time.NewTimer(3 * time.Millisecond)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				return a.N, nil
			})
		})
	}
	ctx := ctxT(t)
	specs := make([]client.Spec, 30)
	for i := range specs {
		specs[i] = client.Spec{Args: LimitedArgs{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
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
		t.Errorf("most limited tasks running at once: %d, want 2 (the limit, reached)", m)
	}
}

// Tasks waiting for a full limit do not hold up other kinds on the same
// worker, nor tasks of other queues under a queue limit.
func TestLimitDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	var started atomic.Int32
	other := b.queue + "-other"
	b.worker(t, &worker.Config{Concurrency: 4, Queues: map[string]int{b.queue: 1, other: 1},
		KindLimits: map[string]int{"gated": 1}, QueueLimits: map[string]int{b.queue: 5}, LimitWait: time.Minute}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a GatedArgs) (int, error) {
			started.Add(1)
			if a.Block {
				select {
				case <-release:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			return a.N, nil
		})
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	ctx := ctxT(t)
	var limited []*client.Handle
	for i := 0; i < 10; i++ {
		h, err := b.c.Enqueue(ctx, GatedArgs{N: i, Block: true}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		limited = append(limited, h)
	}
	// With one limited task running (the limit is 1) and nine parked,
	// the worker's other slots serve other kinds, in both queues.
	for _, q := range []string{b.queue, other} {
		for i := 0; i < 20; i++ {
			h, err := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: q})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Result[UploadResult](ctx, h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := started.Load(); n != 1 {
		t.Errorf("%d limited tasks started, want 1", n)
	}
	close(release)
	for _, h := range limited {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLimitConfigRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		cfg  worker.Config
		want string
	}{
		{worker.Config{KindLimits: map[string]int{"bad kind": 1}}, "Config.KindLimits"},
		{worker.Config{KindLimits: map[string]int{"k": 0}}, `Config.KindLimits["k"] is 0`},
		{worker.Config{QueueLimits: map[string]int{"q": -2}}, `Config.QueueLimits["q"] is -2`},
		{worker.Config{LimitWait: -time.Second}, "Config.LimitWait"},
	} {
		_, err := worker.New(context.Background(), b.env.RDB, &tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
}

type LongArgs struct{ N int }

func (LongArgs) Kind() string { return "limited-long" }

// A slot held much longer than the lease (renewed by heartbeats) keeps the
// limit: the holders' set must not expire under it. (Real Redis expires
// keys by itself; miniredis only when told to, so the real pass is the one
// that would catch it.)
func TestLimitHeldPastTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var pk peak
	// A slot is held only while its task's lease is: a lease that lapses
	// (a starved machine can miss the 200 ms heartbeats) frees the slot
	// and the task runs again, and the limit may be exceeded until the
	// first run ends, as the worker warns. So a round where any task ran
	// twice, or saw its lease lost, proves nothing about the limit: it is
	// played again, up to rounds times.
	var mu sync.Mutex
	runs := map[int]int{}
	lapsed := false
	for i := 0; i < 2; i++ {
		b.worker(t, &worker.Config{Concurrency: 4, Lease: 200 * time.Millisecond,
			KindLimits: map[string]int{"limited-long": 1}, LimitWait: 100 * time.Millisecond}, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a LongArgs) (int, error) {
				mu.Lock()
				runs[a.N]++
				mu.Unlock()
				pk.enter()
				defer pk.leave()
				t := time.NewTimer(1200 * time.Millisecond) // six leases
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					mu.Lock()
					lapsed = true
					mu.Unlock()
					return 0, ctx.Err()
				}
				return a.N, nil
			})
		})
	}
	ctx := ctxT(t)
	const rounds = 5
	for r := 0; r < rounds; r++ {
		mu.Lock()
		lapsed = false
		mu.Unlock()
		pk.max.Store(0)
		var hs []*client.Handle
		for i := 0; i < 2; i++ {
			h, err := b.c.Enqueue(ctx, LongArgs{N: 2*r + i}, &client.EnqueueOpts{Queue: b.queue})
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		if err := client.WaitAll(ctx, hs...); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		clean := !lapsed && runs[2*r] == 1 && runs[2*r+1] == 1
		mu.Unlock()
		if !clean {
			t.Logf("round %d: a lease lapsed (runs %d and %d); the limit is not promised then, playing again", r, runs[2*r], runs[2*r+1])
			continue
		}
		if m := pk.max.Load(); m != 1 {
			t.Fatalf("tasks of a kind limited to 1 ran %d at once, with every lease held", m)
		}
		return
	}
	t.Fatalf("every one of %d rounds lost a 200 ms lease: the heartbeats never kept up on this machine", rounds)
}
