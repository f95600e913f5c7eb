package store_test

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// The due index and the queue registry are read through store: the queues
// due by a time, earliest first and bounded; the earliest due time; every
// registered queue. A server of its own: both keys are the fleet's.
func TestDueIndexAndRegistryReads(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.NextDue(ctx, rdb); ok || err != nil {
		t.Fatalf("empty index: ok %v, err %v; want nothing due", ok, err)
	}
	for q, at := range map[string]int64{"c": 300, "a": 100, "b": 200} {
		if err := store.MarkDue(ctx, rdb, q, at); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := store.DueQueues(ctx, rdb, 200, 10); err != nil || !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("due by 200: %v, %v; want [a b]", got, err)
	}
	if got, err := store.DueQueues(ctx, rdb, 1000, 1); err != nil || !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("due by 1000, at most 1: %v, %v; want [a]", got, err)
	}
	if at, ok, err := store.NextDue(ctx, rdb); !ok || err != nil || at != 100 {
		t.Fatalf("next due: %d, %v, %v; want 100", at, ok, err)
	}
	for _, q := range []string{"x", "y"} {
		if err := store.RegisterQueue(ctx, rdb, q); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.RegisteredQueues(ctx, rdb)
	sort.Strings(got)
	if err != nil || !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Fatalf("registered queues: %v, %v; want [x y]", got, err)
	}
}

// ReadNew returns new entries with their envelope and group fields, and an
// entry without an envelope with its fields as text; nothing, without
// error, when none is new; ErrNoGroup once the group is gone. Cancel
// requests are looked up per task.
func TestReadNewAndCancelRequested(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), Values: []any{"m", envelope("a"), "g", "grp"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), Values: []any{"x", "y"}}).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := store.ReadNew(ctx, rdb, []keys.Queue{q}, "c1", 10, -1)
	if err != nil || len(got) != 2 {
		t.Fatalf("read: %+v, %v; want 2 entries", got, err)
	}
	if e := got[0]; e.Queue != 0 || !e.HasM || e.Envelope != string(envelope("a")) || e.Group != "grp" || e.Fields != "" {
		t.Fatalf("entry with an envelope: %+v", e)
	}
	if e := got[1]; e.HasM || e.Fields != "map[x:y]" {
		t.Fatalf("entry without an envelope: %+v", e)
	}
	if again, err := store.ReadNew(ctx, rdb, []keys.Queue{q}, "c1", 10, time.Millisecond); err != nil || len(again) != 0 {
		t.Fatalf("read with nothing new: %+v, %v; want nothing", again, err)
	}
	if err := rdb.HSet(ctx, q.Task("b"), "cx", "cancelled").Err(); err != nil {
		t.Fatal(err)
	}
	if cx, err := store.CancelRequested(ctx, rdb, q, []string{"a", "b"}); err != nil || !reflect.DeepEqual(cx, []bool{false, true}) {
		t.Fatalf("cancel requests: %v, %v; want [false true]", cx, err)
	}
	if err := rdb.XGroupDestroy(ctx, q.Stream(), keys.Group).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ReadNew(ctx, rdb, []keys.Queue{q}, "c1", 10, -1); !errors.Is(err, store.ErrNoGroup) {
		t.Fatalf("read without a group: %v; want ErrNoGroup", err)
	}
}
