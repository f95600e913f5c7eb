package store_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// listReads counts the LRANGE commands a client sends (alone or in
// pipelines).
type listReads struct{ n atomic.Int64 }

func (*listReads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *listReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h *listReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}

func (h *listReads) count(cmd redis.Cmder) {
	if strings.EqualFold(cmd.Name(), "lrange") {
		h.n.Add(1)
	}
}

// succeedHead takes the one entry of q's stream and records its task as
// succeeded, as a worker does.
func succeedHead(t *testing.T, rdb redis.UniversalClient, q keys.Queue, key string) {
	t.Helper()
	id := deliver(t, rdb, q, "c1")
	if _, err := store.Complete(context.Background(), rdb, q, "c1", []store.Completion{
		{EntryID: id, Deliveries: 1, Key: key, Attempt: 1, Outcome: store.Succeed([]byte("r"), 60000)},
	}); err != nil {
		t.Fatal(err)
	}
}

// The end of a partitioned task that partstep.lua started names the task
// behind it in its outbox entry: the drain starts that one without reading
// the partition's list. (The first task of a key went into the stream at
// its enqueue, when no task was behind it: its end is stepped with the
// list read first.)
func TestPartitionStepNamedByEndReadsNoList(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	var reads listReads
	rdb.AddHook(&reads)
	state := func(k string) string { return rdb.HGet(ctx, q.Task(k), "st").Val() }

	succeedHead(t, rdb, q, "a")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := state("b"); st != "pending" {
		t.Fatalf("b is %q after a ended and the outbox drained; want pending", st)
	}
	if nx := rdb.HGet(ctx, q.Task("b"), "nx").Val(); nx != "c" {
		t.Errorf("b's hash names %q as the task behind it; want c", nx)
	}
	before := reads.n.Load()
	succeedHead(t, rdb, q, "b")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := state("c"); st != "pending" {
		t.Fatalf("c is %q after b ended and the outbox drained; want pending", st)
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Errorf("stepping past b read the partition's list %d times; want 0 (its end names c)", n)
	}
	if got := rdb.LRange(ctx, q.Partition("pk"), 0, -1).Val(); len(got) != 1 || got[0] != "c" {
		t.Errorf("partition list %v; want [c]", got)
	}
}
