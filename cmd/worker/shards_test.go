package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

// `worker queues` shows a sharded queue as one row, the sums of its
// shards; -shards adds a row per shard under it; -json carries the
// breakdown. `worker tasks` lists the tasks of every shard through the
// queue's name, and one shard's through its own.
func TestCLIShardedQueue(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	names, err := c.DeclareShards(ctx, queue, 3)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	for i := range n {
		if _, err := c.Enqueue(ctx, Echo{N: i}, &client.EnqueueOpts{Queue: queue, ID: fmt.Sprintf("s%d", i)}); err != nil {
			t.Fatal(err)
		}
	}

	rows := jsonOf[[]queueRow](t, tg.cmd(t, 0, "queues", "-json"))
	found := false
	for _, r := range rows {
		if strings.HasPrefix(r.Queue, queue+"~") {
			t.Errorf("worker queues -json lists shard %s as a queue", r.Queue)
		}
		if r.Queue == queue {
			found = true
			if r.Waiting != n || len(r.Shards) != 4 {
				t.Errorf("worker queues -json: %+v, want %d waiting over 4 parts", r.QueueInfo, n)
			}
		}
	}
	if !found {
		t.Fatalf("worker queues -json does not list %s", queue)
	}

	plain := tg.cmd(t, 0, "queues")
	if strings.Contains(plain, queue+"~") {
		t.Errorf("worker queues shows shards without -shards:\n%s", plain)
	}
	wide := tg.cmd(t, 0, "queues", "-shards")
	if !strings.Contains(wide, "SHARD\tSLOT\tMASTER") && !strings.Contains(wide, "SHARD") {
		t.Errorf("worker queues -shards has no SHARD column:\n%s", wide)
	}
	for _, name := range names {
		if !strings.Contains(wide, "  "+name) {
			t.Errorf("worker queues -shards does not list shard %s:\n%s", name, wide)
		}
	}
	if !strings.Contains(wide, "3 shards") {
		t.Errorf("worker queues -shards does not say the queue has 3 shards:\n%s", wide)
	}

	page := jsonOf[inspect.TaskPage](t, tg.cmd(t, 0, "tasks", queue, "-state", "waiting", "-json"))
	if len(page.Tasks) != n {
		t.Errorf("worker tasks %s: %d tasks, want %d", queue, len(page.Tasks), n)
	}
	one := jsonOf[inspect.TaskPage](t, tg.cmd(t, 0, "tasks", names[1], "-state", "waiting", "-json"))
	for _, tk := range one.Tasks {
		if tk.Queue != names[1] {
			t.Errorf("worker tasks %s lists %s", names[1], tk.ID)
		}
	}
}
