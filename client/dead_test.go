package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// DeadTasks of a sharded queue lists the dead tasks of every shard
// together, newest first and paged without a gap or a repeat, each with
// the id that names its shard; a shard's name lists that shard's alone;
// RetryDead and PurgeDead take the ids it gives.
func TestDeadTasksOfShardedQueue(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, nil)
	ctx := context.Background()
	q := testenv.Queue(t)
	names, err := c.DeclareShards(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	const n = 9
	var hs []*client.Handle
	for i := range n {
		h, err := c.Enqueue(ctx, PingArgs{Msg: fmt.Sprint(i)}, &client.EnqueueOpts{Queue: q, ID: fmt.Sprintf("d%d", i), MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	testenv.StartWorker(t, env.RDB, q, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a PingArgs) (string, error) {
			return "", worker.Permanent(errors.New("dies " + a.Msg))
		})
	}, false)
	for _, h := range hs {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := h.Outcome(wctx); !errors.Is(err, client.ErrDead) {
			t.Fatalf("%s: %v, want ErrDead", h.ID(), err)
		}
		cancel()
	}

	// Pages of two, newest first, all of them once.
	var all []client.DeadTask
	for off := 0; ; off += 2 {
		page, err := c.DeadTasks(ctx, q, off, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if len(page) < 2 {
			break
		}
	}
	if len(all) != n {
		t.Fatalf("DeadTasks(%s) listed %d, want %d", q, len(all), n)
	}
	seen := map[string]bool{}
	for i, d := range all {
		if seen[d.ID] {
			t.Errorf("%s listed twice", d.ID)
		}
		seen[d.ID] = true
		if i > 0 && d.DiedAt.After(all[i-1].DiedAt) {
			t.Errorf("%s died at %v, after %s listed before it", d.ID, d.DiedAt, all[i-1].ID)
		}
		if qn, _, err := keys.SplitTaskID(d.ID); err != nil || !keys.IsShard(qn) || d.Kind != "ping" {
			t.Errorf("dead task %+v: want an id on a shard, kind ping", d)
		}
	}
	for _, h := range hs {
		if !seen[h.ID()] {
			t.Errorf("%s not listed", h.ID())
		}
	}

	// One shard's own.
	var onShards int
	for _, name := range names {
		ds, err := c.DeadTasks(ctx, name, 0, 100)
		if err != nil {
			t.Fatalf("DeadTasks(%s): %v", name, err)
		}
		for _, d := range ds {
			if qn, _, _ := keys.SplitTaskID(d.ID); qn != name {
				t.Errorf("DeadTasks(%s) lists %s", name, d.ID)
			}
		}
		onShards += len(ds)
	}
	if onShards != n {
		t.Errorf("the shards list %d dead tasks, want %d", onShards, n)
	}

	// Purge one and retry one by the ids listed.
	if err := c.PurgeDead(ctx, all[0].ID); err != nil {
		t.Errorf("PurgeDead(%s): %v", all[0].ID, err)
	}
	h, err := c.RetryDead(ctx, all[1].ID)
	if err != nil {
		t.Fatalf("RetryDead(%s): %v", all[1].ID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := h.Outcome(wctx); !errors.Is(err, client.ErrDead) {
		t.Errorf("the retried task: %v, want ErrDead again", err)
	}
	if ds, err := c.DeadTasks(ctx, q, 0, 100); err != nil || len(ds) != n-1 {
		t.Errorf("after one purge: %d dead tasks, %v; want %d", len(ds), err, n-1)
	}
	if _, err := c.DeadTasks(ctx, q+"~x", 0, 1); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("a name with '~' that is no shard's: %v, want ErrInvalidName", err)
	}
}
