package store_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
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
		items = append(items, store.Completion{EntryID: id, Deliveries: 1, Key: key, Attempt: 1, Outcome: store.Succeed([]byte("r"), ret)})
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

// A heartbeat that reaches Redis after its lease lapsed (the entry idle for
// the lease or longer, as after a stall) does not renew it: it reports the
// lease lost and leaves the entry idle, for a takeover. Within the lease it
// renews as before.
func TestHeartbeatAfterLeaseLapsedRenewsNothing(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), Values: []any{"m", envelope("hb")}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: "c1", Streams: []string{q.Stream(), ">"}, Count: 1}).Err(); err != nil {
		t.Fatal(err)
	}
	const leaseMs = 20
	idle := func() time.Duration {
		p, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.Stream(), Group: keys.Group, Start: id, End: id, Count: 1}).Result()
		if err != nil || len(p) != 1 {
			t.Fatalf("XPENDING: %+v, %v", p, err)
		}
		return p[0].Idle
	}
	testenv.Eventually(t, 5*time.Second, "the entry idle past the lease", func() bool { return idle() >= leaseMs*time.Millisecond })
	leases := []store.Lease{{EntryID: id, Deliveries: 1}}
	beats, err := store.HeartbeatWithin(ctx, rdb, q, "c1", leaseMs, leases, []string{"hb"})
	if err != nil || len(beats) != 1 || beats[0] != store.BeatLost {
		t.Fatalf("heartbeat after the lease: %v, %v; want lost", beats, err)
	}
	if d := idle(); d < leaseMs*time.Millisecond {
		t.Fatalf("idle %v after the late heartbeat; want it left past the lease", d)
	}
	beats, err = store.HeartbeatWithin(ctx, rdb, q, "c1", 60000, leases, []string{"hb"})
	if err != nil || len(beats) != 1 || beats[0] != store.BeatOK {
		t.Fatalf("heartbeat within the lease: %v, %v; want extended", beats, err)
	}
}
