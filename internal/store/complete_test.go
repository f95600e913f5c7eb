package store_test

import (
	"context"
	"math"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// A retention Redis cannot set (near int64 max, or not positive) does not
// fail complete.lua halfway through a batch: each item of the batch is
// recorded and acked, the retention bounded.
func TestCompleteBoundsRetention(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var items []store.Completion
	for i, ret := range []int64{60000, math.MaxInt64, 0, 60000} {
		key := []string{"a", "b", "c", "d"}[i]
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), Values: []any{"m", envelope(key)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, store.Completion{Op: store.OpSucceed, EntryID: id, Deliveries: 1, Key: key, Attempt: 1, A1: "r", A2: ret})
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: "c1", Streams: []string{q.Stream(), ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	applied, err := store.Complete(ctx, rdb, q, "c1", items)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	for i, a := range applied {
		if a != store.Recorded {
			t.Fatalf("item %d: %v; want recorded", i, a)
		}
	}
	if n, err := rdb.XPending(ctx, q.Stream(), keys.Group).Result(); err != nil || n.Count != 0 {
		t.Fatalf("%+v pending (%v); want every entry acked", n, err)
	}
	for _, key := range []string{"a", "b", "d"} {
		if ttl, err := rdb.PTTL(ctx, q.Result(key)).Result(); err != nil || ttl <= 0 {
			t.Fatalf("result of %s: ttl %v (%v); want a retention", key, ttl, err)
		}
	}
}
