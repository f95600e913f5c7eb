package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v  string
		ok bool
	}{
		{"6.2.0", true}, {"7.0.15", true}, {"10.0", true}, {"6.0.16", false}, {"5.0.7", false}, {"garbage", false},
	}
	for _, tt := range tests {
		err := store.CheckVersion(tt.v)
		if got := err == nil; got != tt.ok {
			t.Errorf("CheckVersion(%q) = %v; want ok=%v", tt.v, err, tt.ok)
		}
		if err != nil && !errors.Is(err, store.ErrRedisTooOld) {
			t.Errorf("CheckVersion(%q) = %v; want ErrRedisTooOld", tt.v, err)
		}
	}
}

func env(t *testing.T) (redis.UniversalClient, keys.Queue) {
	e := testenv.Redis(t)
	if err := script.Load(context.Background(), e.RDB); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(testenv.Queue(t))
	if err := store.EnsureGroup(context.Background(), e.RDB, q); err != nil {
		t.Fatal(err)
	}
	return e.RDB, q
}

func envelope(key string) []byte {
	return codec.AppendEnvelope(nil, &codec.Envelope{Key: key, Kind: "k", Attempt: 1, MaxAttempts: 3, RetainMs: 60000})
}

// enqueue.lua replayed with the same op id adds nothing and answers the same.
func TestEnqueueReplayIsIdempotent(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	tasks := []store.NewTask{{Envelope: envelope("")}, {UserKey: "u1", Envelope: envelope("u1")}}
	ks, args := store.EnqueueArgs(q, "op1", 10000, tasks)
	first, err := script.Enqueue.Run(ctx, rdb, ks, args...).Result()
	if err != nil {
		t.Fatal(err)
	}
	again, err := script.Enqueue.Run(ctx, rdb, ks, args...).Result()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := store.ParseEnqueued(first, 2)
	b, _ := store.ParseEnqueued(again, 2)
	if a[0] != b[0] || a[1] != b[1] || b[1].Existed {
		t.Fatalf("got %+v then %+v; want the same answer", a, b)
	}
	if n := rdb.XLen(ctx, q.Stream()).Val(); n != 2 {
		t.Fatalf("got %d entries after replay; want 2", n)
	}
}

func deliver(t *testing.T, rdb redis.UniversalClient, q keys.Queue, consumer string) string {
	t.Helper()
	res, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: keys.Group, Consumer: consumer, Streams: []string{q.Stream(), ">"}, Count: 1, Block: -1}).Result()
	if err != nil || len(res) == 0 || len(res[0].Messages) == 0 {
		t.Fatalf("deliver: %v", err)
	}
	return res[0].Messages[0].ID
}

// complete.lua: a replay of a recorded outcome reports applied and writes
// nothing more; another consumer, or a stale delivery count, writes nothing.
func TestCompleteFencedAndReplaySafe(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ks, args := store.EnqueueArgs(q, "op", 10000, []store.NewTask{{Envelope: envelope("")}, {Envelope: envelope("")}})
	if err := script.Enqueue.Run(ctx, rdb, ks, args...).Err(); err != nil {
		t.Fatal(err)
	}
	e1 := deliver(t, rdb, q, "w1")
	e2 := deliver(t, rdb, q, "w1")

	ok := store.Completion{EntryID: e1, Deliveries: 1, Key: e1, Attempt: 1, Outcome: store.Succeed([]byte("res"), 60000)}
	wrongConsumer := store.Completion{EntryID: e2, Deliveries: 1, Key: e2, Attempt: 1, Outcome: store.Succeed([]byte("x"), 60000)}
	staleCount := store.Completion{EntryID: e2, Deliveries: 2, Key: e2, Attempt: 1, Outcome: store.Succeed([]byte("x"), 60000)}

	got, err := store.Complete(ctx, rdb, q, "w1", []store.Completion{ok})
	if err != nil || got[0] != store.Recorded {
		t.Fatalf("first complete: %v %v", got, err)
	}
	got, err = store.Complete(ctx, rdb, q, "w1", []store.Completion{ok})
	if err != nil || got[0] != store.Recorded {
		t.Fatalf("replayed complete: %v %v; want applied", got, err)
	}
	got, err = store.Complete(ctx, rdb, q, "w2", []store.Completion{wrongConsumer})
	if err != nil || got[0] != store.LeaseLost {
		t.Fatalf("other consumer: %v %v; want lease lost", got, err)
	}
	got, err = store.Complete(ctx, rdb, q, "w1", []store.Completion{staleCount})
	if err != nil || got[0] != store.LeaseLost {
		t.Fatalf("stale delivery count: %v %v; want lease lost", got, err)
	}
	st, err := store.State(ctx, rdb, q, e2, "")
	if err != nil || st.State != "running" {
		t.Fatalf("fenced-out task state %+v, %v; want still running", st, err)
	}
	st, _ = store.State(ctx, rdb, q, e1, "")
	if st.State != "succeeded" || string(st.Result) != "res" {
		t.Fatalf("got %+v", st)
	}
}

// housekeep.lua trims acknowledged entries only: pending and unread ones stay.
func TestHousekeepTrimsOnlyAcked(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for i := 0; i < 6; i++ {
		tasks = append(tasks, store.NewTask{Envelope: envelope("")})
	}
	ks, args := store.EnqueueArgs(q, "op", 10000, tasks)
	if err := script.Enqueue.Run(ctx, rdb, ks, args...).Err(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, deliver(t, rdb, q, "w1"))
	}
	// Ack 1st, 2nd and 4th; the 3rd stays pending, the 5th and 6th unread.
	for _, i := range []int{0, 1, 3} {
		c := store.Completion{EntryID: ids[i], Deliveries: 1, Key: ids[i], Attempt: 1, Outcome: store.Succeed([]byte(""), 60000)}
		if _, err := store.Complete(ctx, rdb, q, "w1", []store.Completion{c}); err != nil {
			t.Fatal(err)
		}
	}
	trimmed, _, err := store.Housekeep(ctx, rdb, q, 3600000)
	if err != nil {
		t.Fatal(err)
	}
	if trimmed != 2 || rdb.XLen(ctx, q.Stream()).Val() != 4 {
		t.Fatalf("trimmed %d, %d left; want 2 trimmed, 4 left", trimmed, rdb.XLen(ctx, q.Stream()).Val())
	}
	// Ack the 3rd: now everything delivered is acked; unread entries stay.
	c := store.Completion{EntryID: ids[2], Deliveries: 1, Key: ids[2], Attempt: 1, Outcome: store.Succeed([]byte(""), 60000)}
	if _, err := store.Complete(ctx, rdb, q, "w1", []store.Completion{c}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Housekeep(ctx, rdb, q, 3600000); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, q.Stream()).Val(); n != 2 {
		t.Fatalf("got %d entries; want the 2 unread", n)
	}
	// Results survive the trim.
	if st, _ := store.State(ctx, rdb, q, ids[0], ""); st.State != "succeeded" {
		t.Fatalf("got %+v after trim", st)
	}
}

// A mark that comes after a coordinator read a queue keeps the queue's due
// entry: the coordinator's update, based on the older read, is refused.
func TestDueUpdateRefusedAfterMark(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if err := store.MarkDue(ctx, rdb, "q", 100); err != nil {
		t.Fatal(err)
	}
	gens, err := store.DueGens(ctx, rdb, []string{"q"})
	if err != nil {
		t.Fatal(err)
	}
	// A task due later than the entry: the score stays 100, the
	// generation moves.
	if err := store.MarkDue(ctx, rdb, "q", 200); err != nil {
		t.Fatal(err)
	}
	if err := store.UpdateDue(ctx, rdb, "q", gens[0], -1); err != nil {
		t.Fatal(err)
	}
	if s, err := rdb.ZScore(ctx, keys.DueIndex, "q").Result(); err != nil || s != 100 {
		t.Fatalf("entry %v, %v after a refused update; want 100", s, err)
	}
	gens, _ = store.DueGens(ctx, rdb, []string{"q"})
	if err := store.UpdateDue(ctx, rdb, "q", gens[0], 200); err != nil {
		t.Fatal(err)
	}
	if s, _ := rdb.ZScore(ctx, keys.DueIndex, "q").Result(); s != 200 {
		t.Fatalf("entry %v after an update with the current generation; want 200", s)
	}
}
