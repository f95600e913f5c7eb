package worker_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// untilInEffect waits, in Redis time, until the change of queue's layout
// takes effect, and returns the set.
func untilInEffect(t *testing.T, b *bundle, queue string) store.ShardSet {
	t.Helper()
	ctx := ctxT(t)
	s, ok, err := store.Shards(ctx, b.env.RDB, queue)
	if err != nil || !ok {
		t.Fatalf("shards of %s: %v %v", queue, ok, err)
	}
	testenv.Eventually(t, 10*time.Second, "the change takes effect (Redis time)", func() bool {
		now, err := b.env.RDB.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.UnixMilli() >= s.ActiveMs
	})
	return s
}

// growCase is what a change of layout must keep: per partition key, the
// tasks enqueued before and after it run in enqueue order; an id enqueued
// before is found after (one task), through Enqueue and by its id.
func growCase(t *testing.T, b *bundle, change func() (old func(key string) string)) {
	ctx := ctxT(t)
	const keysN, before, after = 16, 3, 3
	want := map[string][]int{}
	var hs []*client.Handle
	enqueue := func(key string, seq int) *client.Handle {
		t.Helper()
		h, err := b.c.Enqueue(ctx, PartJob{Key: key, Seq: seq}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: key})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		want[key] = append(want[key], seq)
		return h
	}
	// No worker yet: every key's tasks wait where they were placed.
	at := map[string]string{}
	for k := range keysN {
		key := "user:" + strconv.Itoa(k)
		for s := range before {
			at[key] = enqueue(key, s).Queue()
		}
	}
	ids := map[string]string{}
	for i := range keysN {
		id := "job-" + strconv.Itoa(i)
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		ids[id] = h.Queue()
	}
	old := change()
	s := untilInEffect(t, b, b.queue)
	moved := 0
	for k := range keysN {
		key := "user:" + strconv.Itoa(k)
		if at[key] != old(key) {
			t.Fatalf("key %s was on %s before the change; the test's old layout says %s", key, at[key], old(key))
		}
		if s.Physical(s.N, key) != at[key] {
			moved++
		}
		for s := before; s < before+after; s++ {
			if got := enqueue(key, s).Queue(); got != at[key] {
				t.Fatalf("key %s, task %d after the change went to %s; its waiting tasks are on %s", key, s, got, at[key])
			}
		}
	}
	if moved == 0 {
		t.Fatalf("no key of %d moved: the test proves nothing", keysN)
	}
	for id, q := range ids {
		h, err := b.c.Enqueue(ctx, ShardJob{}, &client.EnqueueOpts{Queue: b.queue, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if !h.Duplicate() || h.Queue() != q {
			t.Fatalf("id %s again after the change: %s (duplicate %v); want the task on %s", id, h.Queue(), h.Duplicate(), q)
		}
		byID, err := b.c.Task(b.queue + "/" + id)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := byID.State(ctx); err != nil || st != client.StatePending {
			t.Fatalf("task %s/%s after the change: %v %v; want pending", b.queue, id, st, err)
		}
	}
	// A key never used goes by the new layout at once.
	for k := range 64 {
		key := "fresh:" + strconv.Itoa(k)
		if q := s.Physical(s.N, key); q != old(key) {
			if got := enqueue(key, 0).Queue(); got != q {
				t.Fatalf("new key %s went to %s, want %s", key, got, q)
			}
			break
		}
	}
	log := newPartLog()
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, log.handle)
		worker.Handle(w, func(ctx context.Context, j ShardJob) (int, error) { return j.N, nil })
	})
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	log.check(t, want)
}

// Growing a live queue from 2 to 5 shards loses and reorders nothing
// (issue 21): the keys that move keep to their old shard while it holds
// their tasks.
func TestShardsGrowKeepsOrderAndIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	names := declare(t, b, 2)
	growCase(t, b, func() func(string) string {
		grown, err := b.c.GrowShards(ctxT(t), b.queue, 5, &client.ShardChange{Grace: time.Millisecond, Settle: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if len(grown) != 5 || grown[0] != names[0] || grown[1] != names[1] {
			t.Fatalf("grown to %v from %v", grown, names)
		}
		return func(key string) string { return names[keys.JumpShard(key, 2)] }
	})
}

// Declaring a queue in use loses and reorders nothing: the keys with tasks
// waiting on the plain queue keep to it.
func TestShardsDeclareInUseKeepsOrderAndIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	growCase(t, b, func() func(string) string {
		if _, err := b.c.GrowShards(ctxT(t), b.queue, 3, &client.ShardChange{Grace: time.Millisecond, Settle: time.Hour}); err != nil {
			t.Fatal(err)
		}
		return func(string) string { return b.queue }
	})
}

// A task with both an id and a partition key is found again after a
// growth moved its key, once it ended too (its record kept, its key's
// partition list gone): one id stays one task (found by a review).
func TestShardsGrowIDWithPartitionKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	declare(t, b, 1)
	key := ""
	for k := 0; key == ""; k++ {
		if c := "user:" + strconv.Itoa(k); keys.JumpShard(c, 2) == 1 {
			key = c // moves to the new shard
		}
	}
	b.worker(t, &worker.Config{Concurrency: 2}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j PartJob) (int, error) { return j.Seq, nil })
	})
	h1, err := b.c.Enqueue(ctx, PartJob{Key: key, Seq: 1}, &client.EnqueueOpts{Queue: b.queue, ID: "one", PartitionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.GrowShards(ctx, b.queue, 2, &client.ShardChange{Grace: time.Millisecond, Settle: time.Hour}); err != nil {
		t.Fatal(err)
	}
	untilInEffect(t, b, b.queue)
	h2, err := b.c.Enqueue(ctx, PartJob{Key: key, Seq: 2}, &client.EnqueueOpts{Queue: b.queue, ID: "one", PartitionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !h2.Duplicate() || h2.Queue() != h1.Queue() {
		t.Fatalf("id one with key %s again after the growth: %s (duplicate %v); want the task on %s", key, h2.Queue(), h2.Duplicate(), h1.Queue())
	}
}
