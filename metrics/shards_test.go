package metrics_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// A sharded queue is one queue in the metrics: its queue gauges are
// labelled by its name and hold the sums over its shards, no series names
// a shard as a queue, and async_queue_shard_tasks gives each shard's
// counts (shard = index, "plain" for the plain queue). Worker events on a
// shard count under the queue's name.
func TestShardedQueueMetrics(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	c := newClient(t, env.RDB)
	names, err := c.DeclareShards(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	const n = 9
	perShard := map[string]float64{}
	for i := range n {
		h, err := c.Enqueue(ctx, Mail{To: "a@example.com"}, &client.EnqueueOpts{Queue: q, ID: fmt.Sprintf("m%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		perShard[h.Queue()]++
	}
	m, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: time.Hour})
	waitSnapshot(t, reg)
	if got := value(t, reg, "async_queue_tasks", "queue", q, "state", "waiting"); got != n {
		t.Errorf("async_queue_tasks{queue=%q,state=waiting} = %v, want %d", q, got, n)
	}
	for i, name := range names {
		if _, ok := find(t, reg, "async_queue_tasks", "queue", name, "state", "waiting"); ok {
			t.Errorf("async_queue_tasks has shard %s as a queue", name)
		}
		if got := value(t, reg, "async_queue_shard_tasks", "queue", q, "shard", strconv.Itoa(i), "state", "waiting"); got != perShard[name] {
			t.Errorf("async_queue_shard_tasks{shard=%d,state=waiting} = %v, want %v", i, got, perShard[name])
		}
	}
	if got := value(t, reg, "async_queue_shard_tasks", "queue", q, "shard", "plain", "state", "waiting"); got != 0 {
		t.Errorf("the plain queue's waiting tasks: %v, want 0", got)
	}

	// An event of a task on a shard counts under the queue.
	m.Observe(worker.Event{Type: worker.EventSucceeded, Task: worker.Task{ID: names[2] + "/m1", Queue: names[2], Kind: "mail"}})
	if got := value(t, reg, "async_tasks_total", "queue", q, "kind", "mail", "outcome", "succeeded"); got != 1 {
		t.Errorf("async_tasks_total of a shard's task under its queue: %v, want 1", got)
	}
	if _, ok := find(t, reg, "async_tasks_total", "queue", names[2], "kind", "mail", "outcome", "succeeded"); ok {
		t.Errorf("async_tasks_total has shard %s as a queue", names[2])
	}

	// Without the shard series.
	_, reg2 := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: time.Hour, NoShardSeries: true})
	waitSnapshot(t, reg2)
	if _, ok := find(t, reg2, "async_queue_shard_tasks", "queue", q, "shard", "0", "state", "waiting"); ok {
		t.Error("NoShardSeries: async_queue_shard_tasks still exported")
	}
	if got := value(t, reg2, "async_queue_tasks", "queue", q, "state", "waiting"); got != n {
		t.Errorf("NoShardSeries: async_queue_tasks = %v, want %d", got, n)
	}
}
