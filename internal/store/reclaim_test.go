package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// setIdle moves entry id to consumer with an idle time of idle and a
// delivery count of dlv (miniredis counts a JUSTID claim as a delivery).
func setIdle(t *testing.T, rdb redis.UniversalClient, q keys.Queue, consumer, id string, idle time.Duration, dlv int) {
	t.Helper()
	if err := rdb.Do(context.Background(), "XCLAIM", q.Stream(), keys.Group, consumer, 0, id, "IDLE", idle.Milliseconds(), "RETRYCOUNT", dlv, "JUSTID").Err(); err != nil {
		t.Fatal(err)
	}
}

func pendingOf(t *testing.T, rdb redis.UniversalClient, q keys.Queue, id string) redis.XPendingExt {
	t.Helper()
	ps, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: q.Stream(), Group: keys.Group, Start: id, End: id, Count: 1}).Result()
	if err != nil || len(ps) != 1 {
		t.Fatalf("pending %s: %v, %v", id, ps, err)
	}
	return ps[0]
}

// reclaim.lua resent (same op id) reports what the first run took, with
// the same tokens and envelopes, and takes nothing more; an entry taken
// from it since is left out.
func TestReclaimResendReportsWhatItTook(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ks, args := store.EnqueueArgs(q, "op", 10000, []store.NewTask{{Envelope: envelope("")}, {Envelope: envelope("")}})
	if err := script.Enqueue.Run(ctx, rdb, ks, args...).Err(); err != nil {
		t.Fatal(err)
	}
	e1, e2 := deliver(t, rdb, q, "gone"), deliver(t, rdb, q, "gone")
	setIdle(t, rdb, q, "gone", e1, time.Hour, 1)
	setIdle(t, rdb, q, "gone", e2, time.Hour, 1)

	const lease = 60000
	next, first, err := store.Reclaim(ctx, rdb, q, "w1", lease, "0-0", 10, "rc1", 10*time.Second)
	if err != nil || len(first) != 2 {
		t.Fatalf("first reclaim: %v, %v; want both entries", first, err)
	}
	next2, again, err := store.Reclaim(ctx, rdb, q, "w1", lease, "0-0", 10, "rc1", 10*time.Second)
	if err != nil || next2 != next || len(again) != 2 {
		t.Fatalf("resent reclaim: %q %v, %v; want %q and the first run's two entries", next2, again, err, next)
	}
	for i := range first {
		if again[i].EntryID != first[i].EntryID || again[i].Deliveries != 2 || first[i].Deliveries != 2 ||
			string(again[i].Envelope) != string(first[i].Envelope) || len(first[i].Envelope) == 0 {
			t.Fatalf("entry %d: first %+v, resent %+v; want the same, 2 deliveries", i, first[i], again[i])
		}
	}
	for _, id := range []string{e1, e2} {
		if p := pendingOf(t, rdb, q, id); p.Consumer != "w1" || p.RetryCount != 2 {
			t.Fatalf("entry %s: %+v; want under w1, 2 deliveries", id, p)
		}
	}
	if _, other, err := store.Reclaim(ctx, rdb, q, "w1", lease, "0-0", 10, "rc2", 10*time.Second); err != nil || len(other) != 0 {
		t.Fatalf("another reclaim: %v, %v; want nothing (the leases are fresh)", other, err)
	}

	// e1 taken by another worker since (its lease ended there): a late
	// resend reports only e2.
	setIdle(t, rdb, q, "w2", e1, 0, 2)
	if _, late, err := store.Reclaim(ctx, rdb, q, "w1", lease, "0-0", 10, "rc1", 10*time.Second); err != nil || len(late) != 1 || late[0].EntryID != e2 {
		t.Fatalf("late resend: %v, %v; want only %s", late, err, e2)
	}
}

// adopt.lua takes up an entry pending under the consumer, fenced by its
// token, which it keeps, and resets its idle time; it leaves one of another
// consumer, of another token, idle too short a time or past the lease.
func TestAdoptFencedKeepsToken(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ks, args := store.EnqueueArgs(q, "op", 10000, []store.NewTask{{Envelope: envelope("")}, {Envelope: envelope("")}, {Envelope: envelope("")}})
	if err := script.Enqueue.Run(ctx, rdb, ks, args...).Err(); err != nil {
		t.Fatal(err)
	}
	mine, other, lapsed := deliver(t, rdb, q, "w1"), deliver(t, rdb, q, "w2"), deliver(t, rdb, q, "w1")
	setIdle(t, rdb, q, "w1", mine, 5*time.Second, 1)
	setIdle(t, rdb, q, "w2", other, 5*time.Second, 1)
	setIdle(t, rdb, q, "w1", lapsed, time.Hour, 1)

	const minIdle, lease = 1000, 60000
	ps, err := store.OwnPending(ctx, rdb, q, "w1", minIdle, 10)
	if err != nil || len(ps) != 2 || ps[0].EntryID != mine || ps[0].Deliveries != 1 || ps[1].EntryID != lapsed {
		t.Fatalf("own pending: %+v, %v; want %s and %s, 1 delivery each", ps, err, mine, lapsed)
	}

	wrong := []store.Lease{{EntryID: mine, Deliveries: 2}, {EntryID: other, Deliveries: 1}, {EntryID: lapsed, Deliveries: 1}}
	if got, err := store.Adopt(ctx, rdb, q, "w1", minIdle, lease, wrong); err != nil || len(got) != 0 {
		t.Fatalf("adopt another token, another consumer's, one past its lease: %v, %v; want none", got, err)
	}
	got, err := store.Adopt(ctx, rdb, q, "w1", minIdle, lease, []store.Lease{{EntryID: mine, Deliveries: 1}})
	if err != nil || len(got) != 1 || got[0].EntryID != mine || got[0].Deliveries != 1 || len(got[0].Envelope) == 0 {
		t.Fatalf("adopt: %+v, %v; want %s with its envelope, 1 delivery", got, err, mine)
	}
	if p := pendingOf(t, rdb, q, mine); p.Consumer != "w1" || p.RetryCount != 1 || p.Idle >= time.Duration(minIdle)*time.Millisecond {
		t.Fatalf("adopted entry: %+v; want under w1, 1 delivery, idle reset", p)
	}
	if got, err := store.Adopt(ctx, rdb, q, "w1", minIdle, lease, []store.Lease{{EntryID: mine, Deliveries: 1}}); err != nil || len(got) != 0 {
		t.Fatalf("adopt again at once: %v, %v; want none (its idle time was reset)", got, err)
	}
}
