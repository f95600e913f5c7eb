package store_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// keysOf records the keys of every EVALSHA of one script made through the
// client it hooks (the store loads the scripts first: no EVAL fallback).
type keysOf struct {
	sha  string
	mu   sync.Mutex
	seen [][]string
}

func (*keysOf) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*keysOf) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *keysOf) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 2 && a[0] == "evalsha" && a[1] == h.sha {
			n, _ := strconv.Atoi(toString(a[2]))
			ks := make([]string, 0, n)
			for _, k := range a[3 : 3+n] {
				ks = append(ks, toString(k))
			}
			h.mu.Lock()
			h.seen = append(h.seen, ks)
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	}
	return ""
}

// partappend.lua's op marker outlives every resend of the client that
// wrote it (a resend past it would append the items a second time).
func TestPartitionerAppendMarkerCoversResendWindow(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	h := &keysOf{sha: script.PartAppend.Hash()}
	rdb.AddHook(h)
	if err := store.AppendPartitioner(ctx, rdb, q, "m", [][]byte{[]byte("a"), []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if len(h.seen) != 1 || len(h.seen[0]) != 2 {
		t.Fatalf("calls of partappend: %v, want one with 2 keys", h.seen)
	}
	ttl, err := rdb.PTTL(ctx, h.seen[0][1]).Result()
	if err != nil {
		t.Fatal(err)
	}
	if w := store.ResendWindow(rdb); ttl < w {
		t.Fatalf("marker %s lives %v, the client may resend for %v", h.seen[0][1], ttl, w)
	}
}

// One append of more items than a Lua call can unpack at once keeps them
// all, in order.
func TestPartitionerAppendManyItems(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	const n = 20_001
	items := make([][]byte, n)
	for i := range items {
		items[i] = []byte(strconv.Itoa(i))
	}
	if err := store.AppendPartitioner(ctx, rdb, q, "many", items); err != nil {
		t.Fatal(err)
	}
	got, err := rdb.LRange(ctx, q.Partitioner("many"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d items in the list, want %d", len(got), n)
	}
	for i, s := range got {
		if s != strconv.Itoa(i) {
			t.Fatalf("item %d is %q", i, s)
		}
	}
}
