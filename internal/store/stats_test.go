package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// statsOf reads one queue's counts.
func statsOf(t *testing.T, rdb redis.UniversalClient, q keys.Queue) store.QueueCounts {
	t.Helper()
	cs, err := store.QueueStats(context.Background(), rdb, []keys.Queue{q})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Queue != q.Name {
		t.Fatalf("QueueStats(%s) = %+v", q.Name, cs)
	}
	return cs[0]
}

// addEntries appends n entries to q's stream and returns their ids.
func addEntries(t *testing.T, rdb redis.UniversalClient, q keys.Queue, n int) []string {
	t.Helper()
	ctx := context.Background()
	cmds := make([]*redis.StringCmd, n)
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), Values: []string{"k", "x"}})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, c := range cmds {
		ids[i] = c.Val()
	}
	return ids
}

// readEntries reads n entries through the workers' group.
func readEntries(t *testing.T, rdb redis.UniversalClient, q keys.Queue, n int) []string {
	t.Helper()
	ss, err := rdb.XReadGroup(context.Background(), &redis.XReadGroupArgs{Group: keys.Group, Consumer: "c1", Streams: []string{q.Stream(), ">"}, Count: int64(n), Block: -1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ss[0].Messages {
		ids = append(ids, m.ID)
	}
	if len(ids) != n {
		t.Fatalf("read %d entries, want %d", len(ids), n)
	}
	return ids
}

// ack acknowledges entries of q's stream as the scripts that acknowledge
// do: counting those acknowledged in the queue's stats.
func ack(t *testing.T, rdb redis.UniversalClient, q keys.Queue, ids ...string) {
	t.Helper()
	ctx := context.Background()
	n, err := rdb.XAck(ctx, q.Stream(), keys.Group, ids...).Result()
	if err == nil {
		err = rdb.HIncrBy(ctx, q.Stats(), "ack", n).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// The counts of a queue through its life: waiting, read, acknowledged,
// scheduled and dead, exact on miniredis and real Redis alike.
func TestQueueStatsCounts(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	if got := statsOf(t, rdb, q); got != (store.QueueCounts{Queue: q.Name, Read: got.Read}) || got.Read != 0 && got.Read != -1 {
		t.Errorf("empty queue: %+v, want zeros (Read 0 or -1: unknown)", got)
	}
	addEntries(t, rdb, q, 5)
	if got := statsOf(t, rdb, q); got.Waiting != 5 || got.Running != 0 || got.Length != 5 {
		t.Errorf("5 entries, none read: %+v", got)
	}
	read := readEntries(t, rdb, q, 2)
	ack(t, rdb, q, read[0])
	if err := rdb.ZAdd(ctx, q.Scheduled(), redis.Z{Score: 1, Member: "a"}, redis.Z{Score: 2, Member: "b"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: "c"}).Err(); err != nil {
		t.Fatal(err)
	}
	got := statsOf(t, rdb, q)
	want := store.QueueCounts{Queue: q.Name, Waiting: 3, Running: 1, Scheduled: 2, Dead: 1, Length: 5, Read: got.Read}
	if got != want {
		t.Errorf("2 read, 1 acknowledged: %+v, want %+v", got, want)
	}
	if got.Read != 2 && got.Read != -1 {
		t.Errorf("Read = %d, want 2 (or -1: unknown)", got.Read)
	}
	n, err := store.RunningCount(ctx, rdb, q)
	if err != nil || n != 1 {
		t.Errorf("RunningCount = %d, %v; want 1", n, err)
	}
}

// An entry deleted ahead of the readers (a task cancelled while it waited)
// leaves Redis without a lag for the group; Waiting is still exact, counted
// past the group's last delivered id (over more than one page), and never
// negative (`worker queues` showed -1 there).
func TestQueueStatsAfterDeleteAhead(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ids := addEntries(t, rdb, q, 2500)
	readEntries(t, rdb, q, 10)
	if err := rdb.XDel(ctx, q.Stream(), ids[100], ids[2400]).Err(); err != nil {
		t.Fatal(err)
	}
	got := statsOf(t, rdb, q)
	if got.Waiting != 2488 || got.Running != 10 || got.Length != 2498 {
		t.Errorf("2500 entries, 10 read, 2 waiting deleted: %+v, want 2488 waiting, 10 running, length 2498", got)
	}
	// Every waiting entry deleted: none wait.
	rest, err := rdb.XRange(ctx, q.Stream(), "("+ids[9], "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	del := make([]string, len(rest))
	for i, m := range rest {
		del[i] = m.ID
	}
	if err := rdb.XDel(ctx, q.Stream(), del...).Err(); err != nil {
		t.Fatal(err)
	}
	if got := statsOf(t, rdb, q); got.Waiting != 0 || got.Running != 10 || got.Length != 10 {
		t.Errorf("every waiting entry deleted: %+v, want 0 waiting, 10 running, length 10", got)
	}
}

// A registered queue with no stream, or a stream without the workers'
// group, counts every entry as waiting and none as running.
func TestQueueStatsWithoutGroup(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	none := keys.ForQueue(q.Name + "-none")
	bare := keys.ForQueue(q.Name + "-bare")
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: bare.Stream(), Values: []string{"k", "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Del(context.Background(), bare.Stream()).Err() })
	cs, err := store.QueueStats(ctx, rdb, []keys.Queue{none, q, bare})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[0] != (store.QueueCounts{Queue: none.Name}) || cs[1].Queue != q.Name ||
		cs[2] != (store.QueueCounts{Queue: bare.Name, Waiting: 1, Length: 1}) {
		t.Errorf("QueueStats = %+v", cs)
	}
	if _, err := store.RunningCount(ctx, rdb, bare); err == nil {
		t.Error("RunningCount of a stream without the group: no error")
	}
}

// QueueNames lists the registered queues in order, without members that are
// not queue names.
func TestQueueNames(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	other := q.Name + "-a"
	bad := q.Name + "{bad}"
	if err := rdb.SAdd(ctx, keys.Queues, other, bad).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.SRem(context.Background(), keys.Queues, other, bad).Err() })
	names, err := store.QueueNames(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSorted(names) {
		t.Errorf("QueueNames not sorted: %v", names)
	}
	i := slices.Index(names, q.Name)
	if i < 0 || i+1 >= len(names) || names[i+1] != other {
		t.Errorf("QueueNames = %v, want %s then %s", names, q.Name, other)
	}
	if slices.Contains(names, bad) {
		t.Errorf("QueueNames lists %q", bad)
	}
}

// DeleteQueue removes every key of the queue, and nothing of another queue
// whose name it prefixes; the queue stays registered.
func TestDeleteQueue(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	other := keys.ForQueue(q.Name + "x")
	if err := store.EnsureGroup(ctx, rdb, other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.DeleteQueue(context.Background(), rdb, other) })
	addEntries(t, rdb, q, 3)
	for _, k := range []string{q.Task("a"), q.Result("b"), other.Task("a")} {
		if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: "a"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := store.DeleteQueue(ctx, rdb, q); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{q.Stream(), q.Task("a"), q.Result("b"), q.Dead()} {
		if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Errorf("%s still exists (%v)", k, err)
		}
	}
	for _, k := range []string{other.Stream(), other.Task("a")} {
		if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 1 {
			t.Errorf("%s of another queue is gone (%v)", k, err)
		}
	}
	names, err := store.QueueNames(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, q.Name) || !slices.Contains(names, other.Name) {
		t.Errorf("after DeleteQueue, QueueNames = %v", names)
	}
}
