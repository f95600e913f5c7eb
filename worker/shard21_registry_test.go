package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// registryReads is a go-redis hook that counts the reads of one queue's
// shard registry entry and, while fail is set, fails every read of the
// registry.
type registryReads struct {
	queue string
	n     atomic.Int64
	fail  atomic.Bool
}

func (r *registryReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *registryReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (r *registryReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if len(a) == 3 && strings.EqualFold(fmt.Sprint(a[0]), "hget") && a[1] == keys.ShardRegistry {
			if a[2] == r.queue {
				defer r.n.Add(1)
			}
			if r.fail.Load() {
				err := errors.New("injected: the shard registry is unavailable")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// waitReads waits until the worker read the entry n more times than when
// called: n polls of the registry.
func (r *registryReads) waitReads(t *testing.T, n int64) {
	t.Helper()
	want := r.n.Load() + n
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("%d reads of the registry entry of %s", n, r.queue), func() bool { return r.n.Load() >= want })
}

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// count returns how many records at level have a message starting with
// msg and the attribute queue.
func (l *logRecords) count(level slog.Level, msg, queue string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level != level || !strings.HasPrefix(r.Message, msg) {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "queue" && a.Value.String() == queue {
				n++
				return false
			}
			return true
		})
	}
	return n
}

// registryWorker starts a worker of queues on a client of its own with a
// registryReads hook counting the reads of counted's entry, logging into
// a logRecords.
func registryWorker(t *testing.T, b *bundle, queues map[string]int, counted string, failing bool, handle func(context.Context, ShardJob) (int, error)) (*registryReads, *logRecords) {
	t.Helper()
	reads := &registryReads{queue: counted}
	reads.fail.Store(failing)
	rdb := testenv.NewClient(b.env.Addr)
	rdb.AddHook(reads)
	t.Cleanup(func() { _ = rdb.Close() }) // after the worker's Stop
	logs := &logRecords{}
	b.workerOn(t, rdb, &worker.Config{Concurrency: 4, Queues: queues, Logger: slog.New(logs)}, func(w *worker.Worker) {
		worker.Handle(w, handle)
	})
	return reads, logs
}

func double(_ context.Context, j ShardJob) (int, error) { return 2 * j.N, nil }

func wantResults(t *testing.T, ctx context.Context, hs []*client.Handle, what string) {
	t.Helper()
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatalf("%s: task %s: %v", what, h.ID(), err)
		}
	}
}

const (
	malformedMsg = "the queue's shard registry entry is malformed"
	unreadMsg    = "read the queue's shard registry entry"
	readsMsg     = "the queue's shard registry entry reads again"
)

// A malformed registry entry touches only its own queue: the worker
// starts, serves that queue's plain queue and the shards it knew before,
// takes up the shards of its other queues, logs the entry once per
// change (not at every poll), and takes up the queue's shards once the
// entry is repaired.
func TestShardsMalformedEntryTouchesOnlyItsQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	bad, good := b.queue, testenv.Queue(t)
	t.Cleanup(func() {
		// A later reader of the whole registry (on a shared real Redis)
		// does not meet the entries this test broke.
		_ = b.env.RDB.HDel(context.Background(), keys.ShardRegistry, bad, good).Err()
	})
	plain, err := b.c.Enqueue(ctx, ShardJob{N: 1}, &client.EnqueueOpts{Queue: bad})
	if err != nil {
		t.Fatal(err)
	}
	badNames, err := b.c.DeclareShards(ctx, bad, 2)
	if err != nil {
		t.Fatal(err)
	}
	goodNames, err := b.c.DeclareShards(ctx, good, 2)
	if err != nil {
		t.Fatal(err)
	}
	// b.c knows both queues' shards: its tasks go there.
	var onBad, onGood []*client.Handle
	for i := range 4 {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: bad})
		if err != nil {
			t.Fatal(err)
		}
		onBad = append(onBad, h)
		if h, err = b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: good}); err != nil {
			t.Fatal(err)
		}
		onGood = append(onGood, h)
	}
	entry, err := b.env.RDB.HGet(ctx, keys.ShardRegistry, bad).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.env.RDB.HSet(ctx, keys.ShardRegistry, bad, "not an entry").Err(); err != nil {
		t.Fatal(err)
	}
	reads, logs := registryWorker(t, b, map[string]int{bad: 1, good: 1}, bad, false, double)
	wantResults(t, ctx, append(onGood, plain), "the good queue's shards and the bad one's plain queue")
	reads.waitReads(t, 3)
	if n := logs.count(slog.LevelError, malformedMsg, bad); n != 1 {
		t.Fatalf("the malformed entry was logged %d times over Start and 3 polls, want once", n)
	}
	// Another malformed entry is a change: logged once more.
	if err := b.env.RDB.HSet(ctx, keys.ShardRegistry, bad, "not an entry either").Err(); err != nil {
		t.Fatal(err)
	}
	reads.waitReads(t, 3)
	if n := logs.count(slog.LevelError, malformedMsg, bad); n != 2 {
		t.Fatalf("two malformed entries, one after the other, were logged %d times, want twice", n)
	}
	// Repaired: the queue's shards are taken up.
	if err := b.env.RDB.HSet(ctx, keys.ShardRegistry, bad, entry).Err(); err != nil {
		t.Fatal(err)
	}
	wantResults(t, ctx, onBad, "the repaired queue's shards")
	for _, h := range onBad {
		if h.Queue() != badNames[0] && h.Queue() != badNames[1] {
			t.Fatalf("task %s is not on a shard of %v", h.ID(), badNames)
		}
	}
	if n := logs.count(slog.LevelInfo, readsMsg, bad); n != 1 {
		t.Fatalf("the repair was logged %d times, want once", n)
	}
	// The good queue's entry goes bad now: the shards known before are
	// served still.
	if err := b.env.RDB.HSet(ctx, keys.ShardRegistry, good, "broken").Err(); err != nil {
		t.Fatal(err)
	}
	// b.c keeps the shards it read before (its own read fails), and the
	// worker keeps serving them.
	reads.waitReads(t, 1)
	h, err := b.c.Enqueue(ctx, ShardJob{N: 6}, &client.EnqueueOpts{Queue: good})
	if err != nil {
		t.Fatal(err)
	}
	if h.Queue() != goodNames[0] && h.Queue() != goodNames[1] {
		t.Fatalf("task %s is not on a shard of %v", h.ID(), goodNames)
	}
	wantResults(t, ctx, []*client.Handle{h}, "a shard known before its entry broke")
}

// A registry that does not read at Start (a transient error) does not
// fail Start nor leave the worker without its shards: it serves the plain
// queue, logs the failure once, and takes up the shards at a later poll.
func TestShardsRegistryDownAtStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	plain, err := b.c.Enqueue(ctx, ShardJob{N: 1}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	names := declare(t, b, 3)
	var hs []*client.Handle
	for i := range 6 {
		h, err := b.c.Enqueue(ctx, ShardJob{N: i}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		if h.Queue() == b.queue {
			t.Fatalf("task %d on the plain queue, not on a shard of %v", i, names)
		}
		hs = append(hs, h)
	}
	reads, logs := registryWorker(t, b, nil, b.queue, true, double)
	wantResults(t, ctx, []*client.Handle{plain}, "the plain queue while the registry does not read")
	reads.waitReads(t, 2)
	if n := logs.count(slog.LevelWarn, unreadMsg, b.queue); n != 1 {
		t.Fatalf("the registry failing at Start and at 2 polls was logged %d times, want once", n)
	}
	reads.fail.Store(false)
	wantResults(t, ctx, hs, "the shards once the registry reads")
	if n := logs.count(slog.LevelInfo, readsMsg, b.queue); n != 1 {
		t.Fatalf("the registry reading again was logged %d times, want once", n)
	}
}
