package conformance

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// testkitRows are the writing calls of the public test kit (asynctest).
// ClaimTestKitDB has no row: it empties the database it runs in (the
// table's is shared); it deletes keys and sets a marker, and a resend does
// the same again.
func testkitRows() []Row {
	const lease = 60000 // ms
	lost := func(r *Run) string { return "lost-" + r.U }
	// Two tasks delivered to a consumer that is then lost.
	deliver := func(r *Run) {
		// In the script cache, as the other scripts are: the row's calls
		// are EVALSHA on every backend.
		r.Must(script.LeaseLapse.Load(r.Ctx, r.Env.RDB).Err())
		r.enqueue(1, nil)
		r.enqueue(2, nil)
		_, err := r.Env.RDB.XReadGroup(r.Ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: lost(r),
			Streams: []string{keys.ForQueue(r.Q).Stream(), ">"}, Count: 10, Block: -1}).Result()
		r.Must(err)
	}
	// pending notes each pending entry's consumer, delivery count (the
	// attempt's token), and whether it looks past its lease.
	pending := func(r *Run) {
		ps, err := r.Env.RDB.XPendingExt(r.Ctx, &redis.XPendingExtArgs{Stream: keys.ForQueue(r.Q).Stream(),
			Group: keys.Group, Start: "-", End: "+", Count: 10}).Result()
		r.Must(err)
		for i, p := range ps {
			who := p.Consumer
			if who == lost(r) {
				who = "the lost consumer"
			}
			r.Note("pending %d: %s, delivered %d, lapsed %v", i, who, p.RetryCount, p.Idle >= lease*time.Millisecond)
		}
	}
	// The run's own lock key (the kit's is keys.TestKitLock, one per
	// database).
	key := func(r *Run) string { return keys.TestKitLock + ":" + r.U }
	lock := func(r *Run) {
		v, err := r.Env.RDB.Get(r.Ctx, key(r)).Result()
		ttl := r.Env.RDB.PTTL(r.Ctx, key(r)).Val()
		r.Note("lock %q %v, ttl set %v", v, err, ttl > 0)
	}
	take := func(holder string) func(r *Run) {
		return func(r *Run) {
			ok, _, err := store.TakeTestKitLock(r.Ctx, r.Env.RDB, key(r), holder, time.Minute)
			r.Must(err)
			if !ok {
				r.T.Fatal("setup: lock not taken")
			}
		}
	}
	return []Row{
		{Name: "testkit.LapseLeases", Setup: deliver, Op: func(r *Run) string {
			ids, err := store.LapseLeases(r.Ctx, r.RDB, keys.ForQueue(r.Q), lost(r), lease)
			pending(r)
			return Answer(fmt.Sprintf("%d entries", len(ids)), err)
		}},
		{Name: "testkit.TakeLock", Op: func(r *Run) string {
			ok, other, err := store.TakeTestKitLock(r.Ctx, r.RDB, key(r), "fleet-a", time.Minute)
			lock(r)
			return Answer(fmt.Sprintf("taken=%v holder=%s", ok, other), err)
		}},
		{Name: "testkit.TakeLock/held", Setup: take("fleet-b"), Op: func(r *Run) string {
			ok, other, err := store.TakeTestKitLock(r.Ctx, r.RDB, key(r), "fleet-a", time.Minute)
			lock(r)
			return Answer(fmt.Sprintf("taken=%v holder=%s", ok, other), err)
		}},
		{Name: "testkit.ReleaseLock", Setup: take("fleet-a"), Op: func(r *Run) string {
			err := store.ReleaseTestKitLock(r.Ctx, r.RDB, key(r), "fleet-a")
			lock(r)
			return Answer("", err)
		}},
	}
}
