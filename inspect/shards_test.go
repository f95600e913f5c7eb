package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// A sharded queue is one queue in Queues and Queue: the sums of its plain
// queue and shards, with each in Shards (its index, counts, slot and, on
// a cluster, the master serving the slot); no shard is listed on its own.
// Its dead tasks, spread over the shards, are listed page by page, and
// retried and purged through the sharded queue's name; pausing the name
// shows on every shard.
func TestShardedQueueIsOneQueue(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	names, err := c.DeclareShards(ctx, queue, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Twelve tasks placed by their ids, four of them to die, and one
	// delayed.
	const n, dead = 12, 4
	var hs []*client.Handle
	for i := range n {
		h, err := c.Enqueue(ctx, Job{N: i, Fail: i < dead}, &client.EnqueueOpts{Queue: queue, ID: fmt.Sprintf("t%d", i), MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if _, err := c.Enqueue(ctx, Job{N: 99}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, h := range hs {
		used[h.Queue()] = true
	}
	if len(used) < 2 {
		t.Fatalf("the tasks went to %v; the test wants two shards or more", used)
	}

	// A task found by the id it was enqueued with, on its shard.
	for _, h := range hs[:3] {
		key := h.ID()[strings.IndexByte(h.ID(), '/')+1:]
		ti, err := in.Task(ctx, queue+"/"+key)
		if err != nil || ti.ID != h.ID() || ti.State != inspect.StateWaiting {
			t.Errorf("Task(%s/%s): %s %s, %v; want %s waiting", queue, key, ti.ID, ti.State, err, h.ID())
		}
	}

	// Waiting, before any worker.
	got := queueOf(t, in, queue)
	if got.Waiting != n || got.Scheduled != 1 || len(got.Shards) != 4 {
		t.Fatalf("before the worker: %+v, want %d waiting, 1 scheduled, 4 parts (plain and 3 shards)", got, n)
	}
	var w int64
	for k, s := range got.Shards {
		wantName, wantIndex := queue, -1
		if k > 0 {
			wantName, wantIndex = names[k-1], k-1
		}
		if s.Queue != wantName || s.Index != wantIndex || s.Slot != keys.QueueSlot(wantName) {
			t.Errorf("part %d: %s index %d slot %d, want %s index %d slot %d", k, s.Queue, s.Index, s.Slot, wantName, wantIndex, keys.QueueSlot(wantName))
		}
		w += s.Waiting
	}
	if w != n {
		t.Errorf("the parts hold %d waiting, want %d", w, n)
	}
	checkMasters(t, e, got)

	// Queues lists the queue once, with the same counts, and no shard.
	qs, err := in.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if keys.IsShard(q.Queue) {
			t.Errorf("Queues lists shard %s as a queue", q.Queue)
		}
	}
	if i := slices.IndexFunc(qs, func(q inspect.QueueInfo) bool { return q.Queue == queue }); i < 0 {
		t.Fatalf("Queues does not list %s", queue)
	} else if qs[i].Waiting != n || len(qs[i].Shards) != 4 {
		t.Errorf("Queues: %+v, want %d waiting over 4 parts", qs[i], n)
	}

	// Listing waiting tasks through the queue's name walks every shard.
	all := list(t, in, queue, inspect.ListOpts{State: inspect.StateWaiting, Limit: 5})
	if len(all) != n {
		t.Errorf("waiting tasks listed through %s: %d, want %d", queue, len(all), n)
	}
	ids := map[string]bool{}
	for _, tk := range all {
		ids[tk.ID] = true
	}
	for _, h := range hs {
		if !ids[h.ID()] {
			t.Errorf("task %s not listed", h.ID())
		}
	}
	// A shard's name lists that shard alone.
	one := list(t, in, names[0], inspect.ListOpts{State: inspect.StateWaiting})
	for _, tk := range one {
		if tk.Queue != names[0] {
			t.Errorf("shard %s lists %s of %s", names[0], tk.ID, tk.Queue)
		}
	}
	if _, err := in.Tasks(ctx, queue, inspect.ListOpts{State: inspect.StateWaiting, Cursor: "9:"}); !errors.Is(err, inspect.ErrBadCursor) {
		t.Errorf("a cursor past the parts: %v, want ErrBadCursor", err)
	}

	// A worker runs them: four die, on their shards.
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (int, error) {
			if j.Fail {
				return 0, worker.Permanent(errors.New("asked to fail"))
			}
			return j.N, nil
		})
	}, false)
	for _, h := range hs {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _ = h.Outcome(wctx)
		cancel()
	}
	got = queueOf(t, in, queue)
	if got.Dead != dead || got.Processed != n || got.Failed != dead || got.Succeeded != n-dead {
		t.Errorf("after the run: %+v, want %d dead, %d processed, %d failed", got, dead, n, dead)
	}
	hist, err := in.History(ctx, queue, 2)
	if err != nil {
		t.Fatal(err)
	}
	if p := hist[0].Processed + hist[1].Processed; p != n {
		// A turn of the minute between the runs and the read would put
		// some before the window's two minutes only if the test took a
		// minute.
		t.Errorf("History of the sharded queue: %d processed over its last two minutes, want %d", p, n)
	}

	// The dead tasks, listed two a page over the shards.
	deadList := list(t, in, queue, inspect.ListOpts{State: inspect.StateDead, Limit: 2})
	if len(deadList) != dead {
		t.Fatalf("dead tasks listed: %d, want %d", len(deadList), dead)
	}
	for _, tk := range deadList {
		if !keys.IsShard(tk.Queue) || tk.State != inspect.StateDead {
			t.Errorf("dead task %s: queue %s state %s, want a shard and dead", tk.ID, tk.Queue, tk.State)
		}
	}
	// Pausing the queue's name shows on every part.
	if err := in.Pause(ctx, queue); err != nil {
		t.Fatal(err)
	}
	got = queueOf(t, in, queue)
	if !got.Paused {
		t.Error("the sharded queue does not read as paused")
	}
	for _, s := range got.Shards {
		if !s.Paused {
			t.Errorf("part %s does not read as paused with its queue", s.Queue)
		}
	}
	if one := queueOf(t, in, names[1]); !one.Paused {
		t.Errorf("Queue(%s) does not read as paused with its queue", names[1])
	}
	if err := in.Resume(ctx, queue); err != nil {
		t.Fatal(err)
	}
	// Dead tasks purged and retried through their shards' ids by the
	// client, then through the queue's name by the inspector.
	for _, tk := range deadList[1:] {
		if err := c.PurgeDead(ctx, tk.ID); err != nil {
			t.Errorf("PurgeDead(%s): %v", tk.ID, err)
		}
	}
	if q := queueOf(t, in, queue); q.Dead != 1 {
		t.Errorf("after purging %d: %d dead, want 1", dead-1, q.Dead)
	}
	ended := func(processed int64) func() bool {
		return func() bool {
			q, err := in.Queue(ctx, queue)
			return err == nil && q.Processed == processed && q.Dead == 1 && q.Running == 0 && q.Waiting == 0
		}
	}
	if _, err := c.RetryDead(ctx, deadList[0].ID); err != nil {
		t.Fatalf("RetryDead(%s): %v", deadList[0].ID, err)
	}
	testenv.Eventually(t, 10*time.Second, "the task retried by its id dies again", ended(n+1))
	if k, err := in.RetryDead(ctx, queue, ""); err != nil || k != 1 {
		t.Errorf("RetryDead(%s): %d, %v; want 1", queue, k, err)
	}
	testenv.Eventually(t, 10*time.Second, "the task retried by its queue dies again", ended(n+2))
	if k, err := in.PurgeDead(ctx, queue, ""); err != nil || k != 1 {
		t.Errorf("PurgeDead(%s): %d, %v; want 1", queue, k, err)
	}
}

// checkMasters checks the shards' masters: none on one Redis, the master
// that serves each slot on a cluster.
func checkMasters(t *testing.T, e *testenv.Env, q inspect.QueueInfo) {
	t.Helper()
	ms, err := store.QueueMasters(context.Background(), e.RDB, []string{q.Queue})
	if err != nil {
		t.Fatal(err)
	}
	masters := map[string]bool{}
	shards := 0
	for _, s := range q.Shards {
		if ms == nil && s.Master != "" {
			t.Errorf("part %s: master %q on one Redis, want none", s.Queue, s.Master)
		}
		if ms != nil && s.Master == "" {
			t.Errorf("part %s: no master on a cluster", s.Queue)
		}
		if s.Index >= 0 {
			masters[s.Master] = true
			shards++
		}
	}
	// The placement puts shard i on master i mod M: as many shards as
	// masters or fewer are on masters of their own.
	all, err := store.SlotMasters(context.Background(), e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	if ms != nil && len(masters) != min(shards, len(all)) {
		t.Errorf("%d shards on %d masters (%v) of %d, want each on its own", shards, len(masters), masters, len(all))
	}
}

// A sharded queue's shards show under it even before anything was
// enqueued, and a bad registry entry is reported on its queue rather
// than failing the list.
func TestShardedQueueDeclaredOnly(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	if _, err := c.DeclareShards(ctx, queue, 2); err != nil {
		t.Fatal(err)
	}
	got := queueOf(t, in, queue)
	if len(got.Shards) != 3 || got.Waiting != 0 || got.Error != "" {
		t.Errorf("declared, unused: %+v, want 3 parts of zeros", got)
	}
	if n, err := in.Running(ctx, queue); err == nil || n != 0 {
		// Nothing set any part up yet.
		t.Errorf("Running of an unused sharded queue: %d, %v; want an error", n, err)
	}
	bad := testenv.Queue(t) + "-bad"
	if err := e.RDB.HSet(ctx, keys.ShardRegistry, bad, "\xc1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.RDB.HDel(context.Background(), keys.ShardRegistry, bad) })
	qs, err := in.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(qs, func(q inspect.QueueInfo) bool { return q.Queue == bad })
	if i < 0 || qs[i].ShardError == "" {
		t.Errorf("a queue with a bad registry entry: %+v, want it listed with ShardError", qs)
	}
}

// DeleteQueue of a sharded queue's name refuses while any shard holds
// tasks, and when forced empties every shard.
func TestDeleteShardedQueue(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	names, err := c.DeclareShards(ctx, queue, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := c.Enqueue(ctx, Job{N: i}, &client.EnqueueOpts{Queue: queue, ID: fmt.Sprintf("x%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := in.DeleteQueue(ctx, queue, false); !errors.Is(err, inspect.ErrQueueNotEmpty) {
		t.Fatalf("DeleteQueue of a sharded queue with tasks: %v, want ErrQueueNotEmpty", err)
	}
	if err := in.DeleteQueue(ctx, queue, true); err != nil {
		t.Fatal(err)
	}
	got := queueOf(t, in, queue)
	if got.Waiting != 0 || got.StreamLength != 0 || len(got.Shards) != 3 {
		t.Errorf("after DeleteQueue: %+v, want 0 waiting, the 3 parts still listed", got)
	}
	for _, n := range names {
		if q := queueOf(t, in, n); q.StreamLength != 0 {
			t.Errorf("shard %s keeps %d entries", n, q.StreamLength)
		}
	}
}

// A dead task left on a sharded queue's plain queue (enqueued with an id
// before the declaration) is retried by RetryDead of the queue's name, or
// the error names it: it is never counted as gone while it stays dead.
func TestRetryDeadOfPlainQueueIsNotSilent(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	h, err := c.Enqueue(ctx, Job{Fail: true}, &client.EnqueueOpts{Queue: queue, ID: "p1", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := testenv.StartWorker(t, e.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (int, error) { return 0, worker.Permanent(errors.New("dies")) })
	}, false)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := h.Outcome(wctx); !errors.Is(err, client.ErrDead) {
		t.Fatalf("the task: %v, want ErrDead", err)
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeclareShards(ctx, queue, 2); err != nil {
		t.Fatal(err)
	}
	n, err := in.RetryDead(ctx, queue, "")
	dead := queueOf(t, in, queue).Dead
	switch {
	case n == 1 && err == nil && dead == 0:
	case n == 0 && err != nil && strings.Contains(err.Error(), h.ID()) && dead == 1:
		t.Logf("RetryDead: %v", err) // the engine looks for it on its id's shard
	default:
		t.Errorf("RetryDead of the plain queue's dead task: %d, %v, %d dead; want it retried, or an error naming %s", n, err, dead, h.ID())
	}
}
