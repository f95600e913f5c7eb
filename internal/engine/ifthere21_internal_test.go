package engine

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

type ifThereArgs struct{ N int }

func (ifThereArgs) Kind() string { return "ifthere" }

// endAfterLook deletes a partition list right after the first pipelined
// look for earlier tasks (EXISTS of it) returned: the key's last task in
// its old shard ended between the look and the write.
type endAfterLook struct {
	list string
	rdb  *redis.Client
	done atomic.Bool
}

func (h *endAfterLook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *endAfterLook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *endAfterLook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if a := c.Args(); len(a) >= 2 && c.Name() == "exists" && a[1] == h.list && h.done.CompareAndSwap(false, true) {
				h.rdb.Del(ctx, h.list)
			}
		}
		return err
	}
}

// A task sent to its key's old shard, whose tasks ended between the look
// and the write, is not written there (a new list there would put the
// key's tasks on two shards at once) but on its new shard (found by a
// review of the growth).
func TestTaskSentToOldShardMovesWhenItsKeyEnded(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	e, err := New(ctx, rdb, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.DeclareShards(ctx, "q", 1, false, store.ShardChange{}); err != nil {
		t.Fatal(err)
	}
	key := ""
	for k := 0; key == ""; k++ {
		if c := "user:" + string(rune('a'+k%26)) + string(rune('a'+k/26)); keys.JumpShard(c, 2) == 1 {
			key = c
		}
	}
	first, err := e.Enqueue(ctx, ifThereArgs{1}, &Opts{Queue: "q", PartitionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	names, err := e.DeclareShards(ctx, "q", 2, true, store.ShardChange{Grace: time.Millisecond, Settle: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mr.SetTime(time.Now().Add(time.Second)) // past the change's grace, in Redis time
	e.shardsOf.m.Delete("q")
	old := keys.ForQueue(first.Queue).Partition(key)
	rdb.AddHook(&endAfterLook{list: old, rdb: redis.NewClient(&redis.Options{Addr: mr.Addr()})})
	second, err := e.Enqueue(ctx, ifThereArgs{2}, &Opts{Queue: "q", PartitionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if second.Queue != names[1] || second.Dup {
		t.Fatalf("the second task went to %s (dup %v); its key's tasks in %s ended: want its new shard %s", second.Queue, second.Dup, first.Queue, names[1])
	}
	if mr.Exists(old) {
		t.Fatalf("the old shard has a list of key %s again: %v", key, mr.Exists(old))
	}
	if !mr.Exists(keys.ForQueue(names[1]).Partition(key)) {
		t.Fatal("the new shard has no list of the key")
	}
}

// A task placed by the old layout during a change's grace that reaches
// Redis after the change took effect (Redis time) is written in the old
// place only if its key has a task there; else it goes to its new shard.
func TestTaskPlacedInGraceLandingAfterIt(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	e, err := New(ctx, rdb, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if _, err := e.DeclareShards(ctx, "q", 1, false, store.ShardChange{}); err != nil {
		t.Fatal(err)
	}
	var moving []string // keys that go to shard 1 of 2
	for k := 0; len(moving) < 2; k++ {
		if c := "user:" + string(rune('a'+k%26)) + string(rune('a'+k/26)); keys.JumpShard(c, 2) == 1 {
			moving = append(moving, c)
		}
	}
	busy, idle := moving[0], moving[1]
	first, err := e.Enqueue(ctx, ifThereArgs{1}, &Opts{Queue: "q", PartitionKey: busy}) // waits on shard 0
	if err != nil {
		t.Fatal(err)
	}
	names, err := e.DeclareShards(ctx, "q", 2, true, store.ShardChange{Grace: time.Hour, Settle: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The engine read the change an instant ago: for it, the grace runs.
	// Redis' clock is past it when the writes arrive.
	mr.SetTime(time.Now().Add(90 * time.Minute))
	h, err := e.Enqueue(ctx, ifThereArgs{2}, &Opts{Queue: "q", PartitionKey: busy})
	if err != nil {
		t.Fatal(err)
	}
	if h.Queue != first.Queue {
		t.Errorf("key %s, whose task waits on %s: the next went to %s", busy, first.Queue, h.Queue)
	}
	h, err = e.Enqueue(ctx, ifThereArgs{3}, &Opts{Queue: "q", PartitionKey: idle})
	if err != nil {
		t.Fatal(err)
	}
	if h.Queue != names[1] {
		t.Errorf("key %s, with no task: placed by the old layout in the grace, reaching Redis after it, went to %s; want its new shard %s", idle, h.Queue, names[1])
	}
}
