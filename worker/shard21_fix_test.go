package worker_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// A shard's name given as EnqueueOpts.Queue (a handler's own queue) stands
// for its queue: the task goes where placement puts it, so one id is one
// task, and no task lands on a shard the queue does not have.
func TestShardNameAsQueueStandsForItsQueue(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	for i, name := range names {
		id := "same-" + string(rune('a'+i))
		h1, err := b.c.Enqueue(ctx, ShardJob{N: 1}, &client.EnqueueOpts{Queue: name, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		h2, err := b.c.Enqueue(ctx, ShardJob{N: 2}, &client.EnqueueOpts{Queue: b.queue, ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if h1.ID() != h2.ID() || !h2.Duplicate() {
			t.Errorf("id %q through shard %s: %s, then through the queue: %s (duplicate %v); want one task", id, name, h1.ID(), h2.ID(), h2.Duplicate())
		}
	}
	for _, bogus := range []string{b.queue + "~9.zz", b.queue + "~0.0"} {
		h, err := b.c.Enqueue(ctx, ShardJob{N: 3}, &client.EnqueueOpts{Queue: bogus})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, h.Queue()) {
			t.Errorf("a task sent to %q went to %q, not one of the queue's shards %v", bogus, h.Queue(), names)
		}
	}
}

// Coordinators forward the due tasks of every shard and clear the shards'
// entries of the due index: a shard is a queue of its own to them.
func TestCoordinatorServesShards(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	const n = 40
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: ShardJob{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue, Delay: time.Millisecond}}
	}
	if _, err := b.c.EnqueueMany(ctx, specs); err != nil {
		t.Fatal(err)
	}
	co, err := coordinator.New(ctx, b.env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := inspect.New(b.env.RDB)
	testenv.Eventually(t, 30*time.Second, "the shards' delayed tasks forwarded by a coordinator", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := co.RunOnce(rctx); err != nil {
			t.Fatalf("RunOnce: %v (a pass must end, whatever the due index holds)", err)
		}
		waiting := int64(0)
		for _, name := range names {
			q, err := in.Queue(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			waiting += q.Waiting
		}
		return waiting == n
	})
	for _, name := range names {
		if s, err := b.env.RDB.ZScore(ctx, keys.DueIndex, name).Result(); err == nil {
			t.Errorf("shard %s still in the due index (score %v) with nothing scheduled", name, s)
		}
	}
}

// The inspector lists a sharded queue's shards as queues of their own.
func TestInspectorListsShards(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	names := declare(t, b, 4)
	for i := range 20 {
		if _, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue}); err != nil {
			t.Fatal(err)
		}
	}
	qs, err := inspect.New(b.env.RDB).Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One row for the sharded queue, its counts summed over its shards,
	// which its breakdown lists; no shard is a row of its own.
	var row *inspect.QueueInfo
	for i, q := range qs {
		if slices.Contains(names, q.Queue) {
			t.Errorf("shard %s listed as a queue", q.Queue)
		}
		if q.Queue == b.queue {
			row = &qs[i]
		}
	}
	if row == nil {
		t.Fatalf("queue %s not listed (queues %d)", b.queue, len(qs))
	}
	if row.Waiting != 20 {
		t.Errorf("the sharded queue holds %d waiting tasks, want 20", row.Waiting)
	}
	var listed []string
	for _, s := range row.Shards {
		if s.Index >= 0 {
			listed = append(listed, s.Queue)
		}
	}
	if !slices.Equal(listed, names) {
		t.Errorf("its breakdown lists %v, want %v", listed, names)
	}
}
