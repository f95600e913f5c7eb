package store_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// Place keeps a key's tasks to the newest earlier layout until the change
// takes effect, then sends them to the new one and names the earlier
// layouts' queues still settling, newest first.
func TestShardSetPlace(t *testing.T) {
	names := []string{"q~0.a", "q~1.b", "q~2.c", "q~3.d"}
	s := store.ShardSet{Queue: "q", N: 4, Names: names, Epoch: 3, CreatedMs: 1,
		Prev: []store.ShardLayout{{N: 0, UntilMs: 500}, {N: 2, UntilMs: 2000}}, ActiveMs: 1000}
	for k := range 200 {
		key := "k" + string(rune('a'+k%26)) + string(rune('a'+k/26))
		old, cur := names[keys.JumpShard(key, 2)], names[keys.JumpShard(key, 4)]

		target, others := s.Place(key, 400) // before the change: 2 shards; the plain queue settling
		if target != old || !slices.Equal(others, []string{"q"}) {
			t.Fatalf("%s at 400: %s %v; want %s [q]", key, target, others, old)
		}
		target, others = s.Place(key, 700) // the plain queue settled
		if target != old || len(others) != 0 {
			t.Fatalf("%s at 700: %s %v; want %s []", key, target, others, old)
		}
		target, others = s.Place(key, 1500) // the change in effect
		var want []string
		if old != cur {
			want = []string{old}
		}
		if target != cur || !slices.Equal(others, want) {
			t.Fatalf("%s at 1500: %s %v; want %s %v", key, target, others, cur, want)
		}
		if target, others = s.Place(key, 2500); target != cur || len(others) != 0 {
			t.Fatalf("%s at 2500 (settled): %s %v; want %s []", key, target, others, cur)
		}
	}
}

// A queue whose plain queue holds tasks when it is declared keeps keyed
// tasks there for the grace and names it until it settles; one not in use
// is sharded at once.
func TestDeclareShardsInUse(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	fresh, used := testenv.Queue(t), testenv.Queue(t)+"u"
	forgetShards(t, env.RDB, fresh)
	forgetShards(t, env.RDB, used)
	stream := keys.ForQueue(used).Stream()
	t.Cleanup(func() { _ = env.RDB.Del(context.Background(), stream).Err() })
	if err := env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"m", "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	a, err := store.DeclareShards(ctx, env.RDB, fresh, 3, store.ShardChange{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Prev) != 0 || a.ActiveMs != 0 {
		t.Errorf("a queue not in use: earlier layouts %v, in effect at %d; want none, 0", a.Prev, a.ActiveMs)
	}
	ch := store.ShardChange{Grace: 40 * time.Second, Settle: time.Hour}
	b, err := store.DeclareShards(ctx, env.RDB, used, 3, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Prev) != 1 || b.Prev[0].N != 0 || b.Prev[0].UntilMs-b.CreatedMs != time.Hour.Milliseconds() || b.ActiveMs-b.CreatedMs != 40_000 {
		t.Fatalf("a queue in use: %+v; want the plain queue as the earlier layout for an hour, in effect after 40 s", b)
	}
	got, _, err := store.Shards(ctx, env.RDB, used)
	if err != nil || !slices.Equal(got.Names, b.Names) || got.ActiveMs != b.ActiveMs || len(got.Prev) != 1 {
		t.Fatalf("read back %+v %v; want %+v", got, err, b)
	}
	if target, others := got.Place("k", got.CreatedMs); target != used || len(others) != 0 {
		t.Errorf("a key during the grace goes to %s, looks in %v; want the plain queue, nowhere else", target, others)
	}
	if target, others := got.Place("k", got.ActiveMs); !keys.IsShard(target) || !slices.Equal(others, []string{used}) {
		t.Errorf("a key after the grace goes to %s, looks in %v; want a shard, then the plain queue", target, others)
	}
	for _, bad := range []store.ShardChange{{Grace: -1}, {Grace: time.Hour, Settle: time.Minute}} {
		if _, err := store.DeclareShards(ctx, env.RDB, used+"x", 2, bad); err == nil {
			t.Errorf("ShardChange %+v: no error", bad)
		}
	}
}

// Growing keeps the old names, adds new ones, makes the old layout the
// newest earlier one; growing to the count the queue has changes nothing;
// shrinking, an undeclared queue and a change before the previous took
// effect are refused.
func TestGrowShards(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	forgetShards(t, env.RDB, q)
	if _, err := store.GrowShards(ctx, env.RDB, q, 4, store.ShardChange{}); !errors.Is(err, store.ErrNotSharded) {
		t.Fatalf("growing a queue never declared: %v; want ErrNotSharded", err)
	}
	a, err := store.DeclareShards(ctx, env.RDB, q, 2, store.ShardChange{})
	if err != nil {
		t.Fatal(err)
	}
	ch := store.ShardChange{Grace: time.Millisecond, Settle: time.Hour}
	b, err := store.GrowShards(ctx, env.RDB, q, 5, ch)
	if err != nil {
		t.Fatal(err)
	}
	if b.N != 5 || len(b.Names) != 5 || !slices.Equal(b.Names[:2], a.Names) || b.Epoch != 2 || b.CreatedMs != a.CreatedMs ||
		len(b.Prev) != 1 || b.Prev[0].N != 2 || b.ActiveMs <= a.CreatedMs {
		t.Fatalf("grown %+v from %+v", b, a)
	}
	again, err := store.GrowShards(ctx, env.RDB, q, 5, ch)
	if err != nil || again.Epoch != 2 || !slices.Equal(again.Names, b.Names) {
		t.Fatalf("growing to 5 again: %+v %v; want the same set", again, err)
	}
	if _, err := store.GrowShards(ctx, env.RDB, q, 3, ch); !errors.Is(err, store.ErrShardCount) {
		t.Fatalf("shrinking: %v; want ErrShardCount", err)
	}
	// A change with a long grace refuses the next one until it passes.
	c, err := store.GrowShards(ctx, env.RDB, q, 6, store.ShardChange{Grace: time.Hour, Settle: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Prev) != 2 || c.Prev[0].N != 2 || c.Prev[1].N != 5 {
		t.Fatalf("grown twice: earlier layouts %+v; want 2 then 5", c.Prev)
	}
	if _, err := store.GrowShards(ctx, env.RDB, q, 8, ch); !errors.Is(err, store.ErrShardChangePending) {
		t.Fatalf("growing during the grace: %v; want ErrShardChangePending", err)
	}
}

// Processes growing one queue at once to the same count agree on one set.
func TestGrowShardsRace(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	forgetShards(t, env.RDB, q)
	if _, err := store.DeclareShards(ctx, env.RDB, q, 2, store.ShardChange{}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	sets := make([]store.ShardSet, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { sets[i], errs[i] = store.GrowShards(ctx, env.RDB, q, 4, store.ShardChange{}) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("grower %d: %v", i, errs[i])
		}
		if !slices.Equal(sets[i].Names, sets[0].Names) || sets[i].Epoch != 2 {
			t.Fatalf("grower %d got %+v, grower 0 %+v", i, sets[i], sets[0])
		}
	}
}
