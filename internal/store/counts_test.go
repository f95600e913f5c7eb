package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// enqueueTasks adds tasks to q through enqueue.lua and returns their keys.
func enqueueTasks(t *testing.T, rdb redis.UniversalClient, q keys.Queue, op string, tasks ...store.NewTask) []string {
	t.Helper()
	ks, args := store.EnqueueArgs(q, op, 60000, tasks)
	v, err := script.Enqueue.Run(context.Background(), rdb, ks, args...).Result()
	if err != nil {
		t.Fatal(err)
	}
	es, err := store.ParseEnqueued(v, len(tasks))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

// wantCounts checks the counts of q that a test follows.
func wantCounts(t *testing.T, rdb redis.UniversalClient, q keys.Queue, what string, waiting, running, retrying, processed, failed int64) store.QueueCounts {
	t.Helper()
	got := statsOf(t, rdb, q)
	if got.Waiting != waiting || got.Running != running || got.Retrying != retrying ||
		got.Processed != processed || got.Failed != failed || got.WaitingFallback {
		t.Errorf("%s: %+v; want %d waiting, %d running, %d retrying, %d processed, %d failed, counted exactly",
			what, got, waiting, running, retrying, processed, failed)
	}
	return got
}

// Waiting stays exact, and no count goes below zero, through what moves
// entries of a stream: reads, cancels of waiting tasks (the -1 of `worker
// queues`), outcomes (recorded again by a resend), reclaims and trims.
func TestWaitingExactThroughCancelReclaimTrim(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	auto := enqueueTasks(t, rdb, q, "op1", store.NewTask{Envelope: envelope("")}, store.NewTask{Envelope: envelope("")},
		store.NewTask{Envelope: envelope("")}, store.NewTask{Envelope: envelope("")}, store.NewTask{Envelope: envelope("")})
	enqueueTasks(t, rdb, q, "op2", store.NewTask{UserKey: "k1", Envelope: envelope("k1")})
	wantCounts(t, rdb, q, "6 enqueued", 6, 0, 0, 0, 0)

	read := readEntries(t, rdb, q, 3)
	wantCounts(t, rdb, q, "3 read", 3, 3, 0, 0, 0)
	if st, err := store.Cancel(ctx, rdb, q, auto[4], 60000, "cancelled"); err != nil || st != "cancelled" {
		t.Fatalf("cancel a waiting task: %q, %v", st, err)
	}
	wantCounts(t, rdb, q, "a waiting one cancelled", 2, 3, 0, 0, 0)

	done := []store.Completion{
		{EntryID: read[0], Deliveries: 1, Key: read[0], Fresh: true, Attempt: 1, Outcome: store.Succeed([]byte("r"), 60000)},
		{EntryID: read[1], Deliveries: 1, Key: read[1], Fresh: true, Attempt: 1, Outcome: store.Retry(envelope(read[1]), time.Hour, "boom")},
	}
	for range 2 { // the second run is a resend: recorded already, counted once
		res, err := store.Complete(ctx, rdb, q, "c1", done)
		if err != nil || len(res) != 2 || res[0] != store.Recorded || res[1] != store.Recorded {
			t.Fatalf("complete: %v, %v", res, err)
		}
		wantCounts(t, rdb, q, "one succeeded, one to retry", 2, 1, 1, 2, 1)
	}

	_, claimed, err := store.Reclaim(ctx, rdb, q, "c2", 0, "0-0", 10, "rc1", time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].EntryID != read[2] {
		t.Fatalf("reclaim: %+v, %v", claimed, err)
	}
	wantCounts(t, rdb, q, "the running one reclaimed", 2, 1, 1, 2, 1)
	trimmed, _, err := store.Housekeep(ctx, rdb, q, time.Hour.Milliseconds())
	if err != nil || trimmed != 2 {
		t.Fatalf("housekeep below the pending entry: trimmed %d, %v; want 2", trimmed, err)
	}
	wantCounts(t, rdb, q, "trimmed below the pending entry", 2, 1, 1, 2, 1)

	if st, err := store.Cancel(ctx, rdb, q, "k1", 60000, "cancelled"); err != nil || st != "cancelled" {
		t.Fatalf("cancel a waiting keyed task: %q, %v", st, err)
	}
	wantCounts(t, rdb, q, "a keyed one cancelled", 1, 1, 1, 2, 1)
	res, err := store.Complete(ctx, rdb, q, "c2", []store.Completion{
		{EntryID: read[2], Deliveries: 2, Key: read[2], Fresh: true, Attempt: 1, Outcome: store.Dead(envelope(read[2]), "gave up")}})
	if err != nil || res[0] != store.Recorded {
		t.Fatalf("complete the reclaimed one: %v, %v", res, err)
	}
	wantCounts(t, rdb, q, "the reclaimed one dead", 1, 0, 1, 3, 2)
	if trimmed, _, err = store.Housekeep(ctx, rdb, q, time.Hour.Milliseconds()); err != nil || trimmed != 1 {
		t.Fatalf("housekeep with nothing pending: trimmed %d, %v; want 1", trimmed, err)
	}
	got := wantCounts(t, rdb, q, "trimmed with nothing pending", 1, 0, 1, 3, 2)
	if got.Length != 1 || got.Dead != 1 || got.Scheduled != 0 {
		t.Errorf("after the trims: %+v, want length 1, 1 dead, nothing delayed", got)
	}
	// The last one waiting read and cancelled while it runs: it stays
	// running until its worker records the end.
	read = readEntries(t, rdb, q, 1)
	if st, err := store.Cancel(ctx, rdb, q, read[0], 60000, "cancelled"); err != nil || st != "cancelling" {
		t.Fatalf("cancel a running task: %q, %v", st, err)
	}
	wantCounts(t, rdb, q, "the last one running, cancel requested", 0, 1, 1, 3, 2)
}

// A queue whose group an earlier version made has no exact count of the
// entries read and acknowledged: its Waiting comes the old way (and says
// so) until housekeeping establishes the count, when nothing is pending or
// when few entries lie from the oldest pending one to the last one read.
func TestWaitingFallbackBeforeUpgrade(t *testing.T) {
	t.Parallel()
	for _, pending := range []bool{false, true} {
		rdb, _ := env(t)
		ctx := context.Background()
		q := keys.ForQueue(testenv.Queue(t) + map[bool]string{false: "-idle", true: "-busy"}[pending])
		// As an earlier version did: XGROUP CREATE, and acks not counted.
		if err := rdb.XGroupCreateMkStream(ctx, q.Stream(), keys.Group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = store.DeleteQueue(context.Background(), rdb, q) })
		addEntries(t, rdb, q, 5)
		read := readEntries(t, rdb, q, 2)
		ackd := read
		if pending {
			ackd = read[:1]
		}
		if err := rdb.XAck(ctx, q.Stream(), keys.Group, ackd...).Err(); err != nil {
			t.Fatal(err)
		}
		running := int64(len(read) - len(ackd))
		if got := statsOf(t, rdb, q); !got.WaitingFallback || got.Waiting != 3 || got.Running != running {
			t.Errorf("pending %v, before housekeeping: %+v, want 3 waiting (counted the old way), %d running", pending, got, running)
		}
		if _, _, err := store.Housekeep(ctx, rdb, q, time.Hour.Milliseconds()); err != nil {
			t.Fatal(err)
		}
		if got := statsOf(t, rdb, q); got.WaitingFallback || got.Waiting != 3 || got.Running != running {
			t.Errorf("pending %v, after housekeeping: %+v, want 3 waiting counted exactly, %d running", pending, got, running)
		}
		// From then on the scripts keep it.
		if err := store.EnsureGroup(ctx, rdb, q); err != nil {
			t.Fatal(err)
		}
		read = readEntries(t, rdb, q, 1)
		res, err := store.Complete(ctx, rdb, q, "c1", []store.Completion{
			{EntryID: read[0], Deliveries: 1, Key: read[0], Fresh: true, Attempt: 1, Outcome: store.Succeed(nil, 1000)}})
		if err != nil || res[0] != store.Recorded {
			t.Fatalf("complete: %v, %v", res, err)
		}
		if got := statsOf(t, rdb, q); got.WaitingFallback || got.Waiting != 2 || got.Running != running || got.Processed != 1 {
			t.Errorf("pending %v, one more read and done: %+v, want 2 waiting counted exactly, %d running, 1 processed", pending, got, running)
		}
	}
}
