package store_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// flushAfterFirstPipe flushes Redis' script cache once, right after the
// first pipeline that follows arm() (what a restart or a failover to a
// replica without the scripts does between two of cancelMembers' rounds).
type flushAfterFirstPipe struct {
	armed atomic.Bool
	rdb   *redis.Client
}

func (h *flushAfterFirstPipe) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *flushAfterFirstPipe) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *flushAfterFirstPipe) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		partition := false
		for _, c := range cmds {
			if cmd, ok := c.(*redis.Cmd); ok {
				if v, ok := cmd.Val().([]any); ok && len(v) == 2 && v[0] == "partition" {
					partition = true
				}
			}
		}
		if partition && h.armed.CompareAndSwap(true, false) {
			h.rdb.ScriptFlush(ctx)
		}
		return err
	}
}

// cancelMembers' second round (members waiting in a partition, called
// again with the list declared) loads the scripts again when Redis lost
// them meanwhile, and the member ends cancelled (found by a review: only
// the first round loaded them, and the second returned nil with the member
// still waiting).
func TestCancelMembersNoScriptSecondRound(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	h := &flushAfterFirstPipe{rdb: rdb}
	rdb.AddHook(h)
	ctx := context.Background()
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue("nsq")
	if err := store.EnsureGroup(ctx, rdb, q); err != nil {
		t.Fatal(err)
	}
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	g := store.GroupRef{Home: q, ID: "g1"}
	if st, _, err := store.NewGroup(ctx, rdb, g, store.GroupSettings{Members: 1}, ""); err != nil || st != "new" {
		t.Fatalf("NewGroup = %q, %v", st, err)
	}
	h.armed.Store(true)
	_, err := store.CancelMembers(ctx, rdb, g, []string{keys.TaskID(q.Name, "b")}, "stop", 60000)
	st := rdb.HGet(ctx, q.Task("b"), "st").Val()
	if err != nil || st != "cancelled" || h.armed.Load() {
		t.Fatalf("CancelMembers = %v, b is %q (list %v), flushed %v; want nil, cancelled, the scripts flushed between the rounds",
			err, st, rdb.LRange(ctx, q.Partition("pk"), 0, -1).Val(), !h.armed.Load())
	}
}
