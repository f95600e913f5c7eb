package engine

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"

	"github.com/taskfleet/async/internal/store"
)

// place on a queue that is not sharded is one cache lookup: what each
// Enqueue pays for sharded queues (issue 21).
func BenchmarkPlaceUnsharded(b *testing.B) {
	e := &Engine{}
	e.shardsOf.m.Store("q", &shardEntry{read: time.Now().Add(time.Hour)})
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if pl, err := e.place(ctx, "q", "", ""); err != nil || pl.queue != "q" {
			b.Fatal(pl, err)
		}
	}
}

// Placement: a partition key before an id, an id before round-robin, and
// the same key always on the same shard.
func TestPlace(t *testing.T) {
	names := []string{"q~0.a", "q~1.b", "q~2.c"}
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e := &Engine{rdb: rdb}
	e.shardsOf.m.Store("q", &shardEntry{set: &store.ShardSet{Queue: "q", N: 3, Names: names, Epoch: 1, CreatedMs: 1}, read: time.Now().Add(time.Hour)})
	ctx := context.Background()
	at := func(key, pk string) string {
		t.Helper()
		pl, err := e.place(ctx, "q", key, pk)
		q := pl.queue
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	for _, k := range []string{"a", "b", "user:1", "bt-x"} {
		if got, want := at("", k), names[ShardOf(k, 3)]; got != want {
			t.Errorf("partition key %q: %s, want %s", k, got, want)
		}
		if got, want := at(k+"-id", k), names[ShardOf(k, 3)]; got != want {
			t.Errorf("id and partition key %q: %s, want the key's %s", k, got, want)
		}
		if got, want := at(k, ""), names[ShardOf(k, 3)]; got != want {
			t.Errorf("id %q: %s, want %s", k, got, want)
		}
	}
	// A batch item goes with its batch.
	if got, want := at("bt-x.7", ""), names[ShardOf("bt-x", 3)]; got != want {
		t.Errorf("batch item: %s, want its batch's %s", got, want)
	}
	seen := map[string]int{}
	for range 9 {
		seen[at("", "")]++
	}
	for _, n := range names {
		if seen[n] != 3 {
			t.Errorf("round-robin over 9 tasks: %v", seen)
		}
	}
	// Resolve: an id of the queue's name goes to its key's shard when the
	// task is nowhere (or there), to the plain queue when it is there; a
	// generated key, a batch item's and a shard's id stay.
	mr.HSet(keys.ForQueue("q").Task("on-plain"), "st", "pending")
	for _, c := range []struct{ in, want Ref }{
		{Ref{Queue: "q", Key: "k1"}, Ref{Queue: names[ShardOf("k1", 3)], Key: "k1"}},
		{Ref{Queue: "q", Key: "1700000000000-0"}, Ref{Queue: "q", Key: "1700000000000-0"}},
		{Ref{Queue: "q~1.b", Key: "k1"}, Ref{Queue: "q~1.b", Key: "k1"}},
		{Ref{Queue: "q", Key: "on-plain"}, Ref{Queue: "q", Key: "on-plain"}},
		{Ref{Queue: "q", Key: "bt-x.7"}, Ref{Queue: "q", Key: "bt-x.7"}},
	} {
		got, err := e.Resolve(ctx, c.in)
		if err != nil || got != c.want {
			t.Errorf("Resolve(%v) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
