package patterns_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// SumPart is one partition's task: it returns the sum of its items and how
// many there were.
type SumPart struct {
	Key   string
	Items []int
}

func (SumPart) Kind() string { return "sumpart" }

type partSum struct{ Sum, N int }

func sumPart(ctx context.Context, a SumPart) (partSum, error) {
	s := 0
	for _, v := range a.Items {
		if keyOf(v) != a.Key {
			return partSum{}, worker.Permanent(fmt.Errorf("item %d is in partition %s", v, a.Key))
		}
		s += v
	}
	return partSum{s, len(a.Items)}, nil
}

func keyOf(v int) string { return "k" + strconv.Itoa(v%7) }

func TestPartitionPattern(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) { worker.Handle(w, sumPart) })
	ctx := ctxT(t)
	items := make([]int, 100)
	want := map[string]partSum{}
	for i := range items {
		items[i] = i
		w := want[keyOf(i)]
		want[keyOf(i)] = partSum{w.Sum + i, w.N + 1}
	}
	spec := func(key string, its []int) client.Spec {
		return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	p, err := patterns.Partition(ctx, b.c, items, keyOf, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := patterns.ResultsByKey[partSum](ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || len(p.Keys()) != 7 || p.Keys()[0] != "k0" {
		t.Fatalf("keys %v, results %v", p.Keys(), got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("partition %s: %+v, want %+v", k, got[k], w)
		}
	}
	outs, err := p.OutcomeByKey(ctx)
	if err != nil || len(outs) != 7 || outs["k3"].Err != nil {
		t.Fatalf("OutcomeByKey: %v, %v", outs, err)
	}
}

// Producers append from their own clients while flushes run: every item is
// started exactly once, in the partition of its key.
func TestPartitionerAppendAndFlush(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, &worker.Config{Concurrency: 16}, func(w *worker.Worker) { worker.Handle(w, sumPart) })
	ctx := ctxT(t)
	name := "uploads-" + b.queue[len(b.queue)-8:]
	spec := func(key string, its []int) client.Spec {
		return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	const producers, perProducer = 3, 200
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testenv.Client(t, b.env)
			pt, err := patterns.NewPartitioner[int](c, name, keyOf, &patterns.PartitionerOpts{Queue: b.queue})
			if err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < perProducer; i += 10 {
				batch := make([]int, 10)
				for j := range batch {
					batch[j] = p*perProducer + i + j
				}
				if err := pt.Append(ctx, batch...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	pt, err := patterns.NewPartitioner[int](b.c, name, keyOf, &patterns.PartitionerOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	var groups []*patterns.Partitioned
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	flush := func() {
		g, err := pt.Flush(ctx, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g != nil {
			groups = append(groups, g)
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(5 * time.Millisecond):
		}
		flush()
	}
	flush()
	if g, err := pt.Flush(ctx, spec, nil); err != nil || g != nil {
		t.Fatalf("flush with nothing appended: %v, %v", g, err)
	}
	total, sum := 0, 0
	for _, g := range groups {
		res, err := patterns.ResultsByKey[partSum](ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			total += r.N
			sum += r.Sum
		}
	}
	n := producers * perProducer
	if total != n || sum != n*(n-1)/2 {
		t.Fatalf("%d items (sum %d) started over %d flushes, want %d (sum %d)", total, sum, len(groups), n, n*(n-1)/2)
	}
	t.Logf("%d flushes", len(groups))
}

// A Flush that died after taking the items leaves a snapshot; the next
// Flush starts it.
func TestPartitionerLeftoverSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) { worker.Handle(w, sumPart) })
	ctx := ctxT(t)
	name := "left-" + b.queue[len(b.queue)-8:]
	pt, err := patterns.NewPartitioner[int](b.c, name, keyOf, &patterns.PartitionerOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if err := pt.Append(ctx, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(b.queue)
	// What a Flush does first, and then dies.
	if err := script.PartTake.Run(ctx, b.env.RDB, []string{q.Partitioner(name), q.PartitionerSnap(name, "dead1"), q.PartitionerSnaps(name), q.Op("pt." + name + ".dead1")}, "dead1", 1, 60000).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := pt.Len(ctx); n != 0 {
		t.Fatalf("%d items still appended after the take", n)
	}
	spec := func(key string, its []int) client.Spec {
		return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	if g, err := pt.Flush(ctx, spec, nil); err != nil || g != nil {
		t.Fatalf("Flush: %v, %v (nothing new was appended; the leftover starts in its own group)", g, err)
	}
	g, err := patterns.Open(b.c, keys.GroupID(b.queue, "pt."+name+".dead1"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := g.Wait(ctx); err != nil || p.Succeeded != 3 {
		t.Fatalf("leftover group: %+v, %v", p, err)
	}
	if n, _ := b.env.RDB.ZCard(ctx, q.PartitionerSnaps(name)).Result(); n != 0 {
		t.Fatalf("%d snapshots still pending", n)
	}
}
