package store_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// batchEnv splits a batch envelope around its (empty) key, as
// patterns.NewBatch does.
func batchEnv(t *testing.T) (pre, post []byte) {
	t.Helper()
	env := codec.AppendEnvelope(nil, &codec.Envelope{Kind: "bk", Attempt: 1, MaxAttempts: 3, RetainMs: 60000})
	hdr := 1
	if env[0] == 0xdc {
		hdr = 3
	}
	if env[hdr] != 0xa0 {
		t.Fatalf("unexpected envelope layout % x", env)
	}
	return env[:hdr], env[hdr+1:]
}

func batchItems(t *testing.T, from, n int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		b, err := codec.Marshal(from + i)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// batchKeys hands out batch keys bt-<prefix>1, bt-<prefix>2...
func batchKeys(prefix string) func() string {
	n := 0
	return func() string {
		n++
		return keys.BatchKeyPrefix + prefix + strconv.Itoa(n)
	}
}

// A batch cancelled while it waits never enters the stream, whatever runs
// before its items are ended (batchabort.lua, from the outbox): neither a
// Flush nor an Append that would fill it puts it back, and its items end
// cancelled.
func TestCancelledBatchStaysOut(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"flush", "fill"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			rdb, q := env(t)
			ctx := context.Background()
			pre, post := batchEnv(t)
			newKey := batchKeys("c")
			const kind, size = "bk", 4
			segs, ptr, _, err := store.AppendBatch(ctx, rdb, q, kind, "", newKey, pre, post, size, 3_600_000, batchItems(t, 0, 3))
			if err != nil || len(segs) != 1 || segs[0].Count != 3 || ptr != segs[0].Batch {
				t.Fatalf("append: %+v %q %v", segs, ptr, err)
			}
			bk := segs[0].Batch
			st, err := store.Cancel(ctx, rdb, q, bk, 60000, "cancelled")
			if err != nil || st != "cancelled" {
				t.Fatalf("cancel: %q %v", st, err)
			}
			// The drain that would end its items has not run yet.
			switch how {
			case "flush":
				flushed, err := store.FlushBatch(ctx, rdb, q, kind)
				if err != nil || flushed {
					t.Fatalf("flush after cancel = %v, %v; want false (no open batch)", flushed, err)
				}
			case "fill":
				segs, _, _, err := store.AppendBatch(ctx, rdb, q, kind, ptr, newKey, pre, post, size, 3_600_000, batchItems(t, 3, 1))
				if err != nil || len(segs) != 1 || segs[0].Batch == bk {
					t.Fatalf("append after cancel: %+v %v; want one new batch", segs, err)
				}
			}
			if n, err := rdb.XLen(ctx, q.Stream()).Result(); err != nil || n != 0 {
				t.Fatalf("stream holds %d entries (%v); the cancelled batch must not enter it", n, err)
			}
			if st, _ := rdb.HGet(ctx, q.Task(bk), "st").Result(); st != "cancelled" {
				t.Fatalf("batch state %q after cancel, want cancelled", st)
			}
			if _, err := store.AbortBatch(ctx, rdb, q, bk, "cancelled", "cancelled", 60000); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				st, err := rdb.HGet(ctx, q.Task(bk+"."+strconv.Itoa(i)), "st").Result()
				if err != nil || st != "cancelled" {
					t.Errorf("item %d: state %q %v, want cancelled", i, st, err)
				}
			}
		})
	}
}

// batchadd.lua's op marker outlives every resend of the client that wrote
// it (a resend past it would append the items a second time).
func TestBatchAddMarkerCoversResendWindow(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	pre, post := batchEnv(t)
	newKey := batchKeys("m")
	if _, _, _, err := store.AppendBatch(ctx, rdb, q, "bk", "", newKey, pre, post, 4, 60_000, batchItems(t, 0, 2)); err != nil {
		t.Fatal(err)
	}
	// The call's marker is named after the first key it drew.
	ttl, err := rdb.PTTL(ctx, q.Op("ba."+keys.BatchKeyPrefix+"m1")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if w := store.ResendWindow(rdb); ttl < w {
		t.Fatalf("marker lives %v, the client may resend for %v", ttl, w)
	}
}

// twice makes the client it hooks run every call of the script with hash
// sha twice, as go-redis does when the first reply is lost: the caller
// reads the second run's reply.
type twice struct{ sha string }

func (twice) DialHook(next redis.DialHook) redis.DialHook { return next }
func (twice) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h twice) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "evalsha" && len(a) > 1 && a[1] == h.sha {
			if err := next(ctx, cmd); err != nil {
				return err // not run (NOSCRIPT): go-redis falls back to EVAL
			}
		}
		return next(ctx, cmd)
	}
}

// A flush whose reply was lost and that was resent reports the batch it
// started (the resend finds the pointer gone, which alone would read as
// "nothing was open").
func TestBatchFlushResentReportsFlushed(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	if err := script.Load(ctx, e.RDB); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(testenv.Queue(t))
	if err := store.EnsureGroup(ctx, e.RDB, q); err != nil {
		t.Fatal(err)
	}
	pre, post := batchEnv(t)
	if _, _, _, err := store.AppendBatch(ctx, e.RDB, q, "bk", "", batchKeys("f"), pre, post, 4, 3_600_000, batchItems(t, 0, 2)); err != nil {
		t.Fatal(err)
	}
	rdb := testenv.NewEnvClient(e)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(twice{sha: script.BatchFlush.Hash()})
	flushed, err := store.FlushBatch(ctx, rdb, q, "bk")
	if err != nil || !flushed {
		t.Fatalf("resent flush: %v %v, want true", flushed, err)
	}
	if n, err := e.RDB.XLen(ctx, q.Stream()).Result(); err != nil || n != 1 {
		t.Fatalf("stream holds %d entries (%v), want the one batch", n, err)
	}
}
