package engine

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// A second SendMembers of the same members (completing a call that failed)
// adds nothing: each chunk's record says where its members went, and every
// member comes back with the key of the first call, marked a duplicate. The
// members span three chunks and their submission indices are not their
// positions, so a chunk number or index mixed up shows.
func TestSendMembersAgainReadsTheChunkRecords(t *testing.T) {
	addr := os.Getenv("ASYNC_REDIS_ADDR")
	if addr == "" {
		addr = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx := context.Background()
	e, err := New(ctx, rdb, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const n = 2*chunk + 203
	ref := store.GroupRef{Home: keys.ForQueue("members-again-" + newOpID()), ID: "g1"}
	if _, _, err := store.NewGroup(ctx, rdb, ref, store.GroupSettings{Members: 2*n + 1, RetainMs: 60000}, "x"); err != nil {
		t.Fatal(err)
	}
	items := make([]Item, n)
	idx := make([]int, n)
	for i := range items {
		items[i] = Item{Args: pingArgs{N: i}, Group: ref.String(), Index: 2*i + 1}
		idx[i] = 2*i + 1
	}
	p, err := e.PrepareItems(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.SendMembers(ctx, p, ref.String(), idx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.SendMembers(ctx, p, ref.String(), idx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		a, b := first[i], again[i]
		if a.Key == "" || a.Dup || !b.Dup || a.Key != b.Key || a.Queue != b.Queue {
			t.Fatalf("member %d: first %+v, again %+v; want the same task, a duplicate the second time", i, a, b)
		}
	}
}
