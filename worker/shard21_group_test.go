package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// A ForkJoin homed on a sharded queue (the first member's queue, the queue
// named, or one of its shards' names) places its members on the queue's
// shards like any task, and the join runs once with every member's
// result; starting the group again adds nothing.
func TestShardsForkJoinHomedOnShardedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	var mu sync.Mutex
	joins := map[int]int{} // by group
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) {
			if j.Tag != "join" {
				return 10 * j.N, nil
			}
			mu.Lock()
			joins[j.N]++
			mu.Unlock()
			outs, err := patterns.JoinOutcomes(ctx)
			if err != nil {
				return 0, worker.Permanent(err)
			}
			sum := 0
			for i, o := range outs {
				v, err := patterns.ResultOf[int](o)
				if err != nil || v != 10*i {
					return 0, worker.Permanent(fmt.Errorf("member %d (%s): %v, %v", i, o.ID, v, err))
				}
				sum += v
			}
			return sum, nil
		})
	})
	const n = 12
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	for gi, home := range []string{"", b.queue, names[2]} {
		id := "fj-" + strconv.Itoa(gi)
		join := &client.Spec{Args: ShardJob{Tag: "join", N: gi}, Opts: &client.EnqueueOpts{Queue: b.queue}}
		g, err := patterns.ForkJoin(ctx, b.c, specs, join, &patterns.GroupOpts{Queue: home, ID: id})
		if err != nil {
			t.Fatalf("home %q: %v", home, err)
		}
		members, err := g.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		on := map[string]int{}
		for _, m := range members {
			if !slices.Contains(names, m.Queue()) {
				t.Fatalf("home %q: member %s is not on a shard of %v", home, m.ID(), names)
			}
			on[m.Queue()]++
		}
		if len(members) != n || len(on) < 2 {
			t.Fatalf("home %q: %d members on %v, want %d on several shards", home, len(members), on, n)
		}
		jh, err := g.Join(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := client.Result[int](ctx, jh); err != nil || got != 10*n*(n-1)/2 {
			t.Fatalf("home %q: join: %v, %v; want %d", home, got, err, 10*n*(n-1)/2)
		}
		if err := client.WaitAll(ctx, members...); err != nil {
			t.Fatal(err)
		}
		again, err := patterns.ForkJoin(ctx, b.c, specs, join, &patterns.GroupOpts{Queue: home, ID: id})
		if err != nil || !again.Duplicate() {
			t.Fatalf("home %q: the group started again: %v, duplicate %v; want a duplicate", home, err, again != nil && again.Duplicate())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for gi := range 3 {
		if joins[gi] != 1 {
			t.Errorf("the join of group %d ran %d times, want once: %v", gi, joins[gi], joins)
		}
	}
}

// InvokeAll and Throttle homed on a sharded queue place their members on
// its shards, and every member runs.
func TestShardsInvokeAllHomedOnShardedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) { return j.N, nil })
	})
	specs := make([]client.Spec, 9)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	start := map[string]func() (*patterns.Group, error){
		"InvokeAll": func() (*patterns.Group, error) { return patterns.InvokeAll(ctx, b.c, specs, 3, nil) },
		"Throttle":  func() (*patterns.Group, error) { return patterns.Throttle(ctx, b.c, specs, 1000, 1e9, nil) },
	}
	for what, f := range start {
		g, err := f()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		members, err := g.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		on := map[string]bool{}
		for i, m := range members {
			if !slices.Contains(names, m.Queue()) {
				t.Fatalf("%s: member %s is not on a shard of %v", what, m.ID(), names)
			}
			on[m.Queue()] = true
			if got, err := client.Result[int](ctx, m); err != nil || got != i {
				t.Fatalf("%s: member %d: %v, %v", what, i, got, err)
			}
		}
		if len(on) < 2 {
			t.Fatalf("%s: 9 members all on %v", what, on)
		}
		p, err := g.Wait(ctx)
		if err != nil || p.State != patterns.GroupSucceeded || p.Succeeded != len(specs) {
			t.Fatalf("%s: %+v, %v; want %d members succeeded", what, p, err, len(specs))
		}
	}
}
