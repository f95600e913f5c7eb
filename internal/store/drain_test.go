package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// roundTrips counts the round trips a client makes: one per command, one per
// pipeline.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// fillOutbox creates n continuations of queue q waiting for a parent that
// succeeded, and the outbox entries that activate them. It writes in small
// pipelines with explicit entry ids: a pipeline resent after a slow reply
// fails rather than adding entries twice.
func fillOutbox(t *testing.T, rdb redis.UniversalClient, q keys.Queue, n int) []string {
	t.Helper()
	ctx := context.Background()
	ks := make([]string, n)
	for from := 0; from < n; from += 50 {
		pipe := rdb.Pipeline()
		for i := from; i < min(from+50, n); i++ {
			ks[i] = fmt.Sprintf("c%05d", i)
			script.Waiting.Run(ctx, pipe, []string{q.Task(ks[i]), q.Result(ks[i])}, envelope(ks[i]), "op-"+ks[i])
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), ID: fmt.Sprintf("1-%d", i+1),
				Values: []any{"s", store.ContSpec(q.Name, ks[i], true), "p", q.Name + "/parent", "st", "succeeded"}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}

// states counts the states of tasks ks of q.
func states(t *testing.T, rdb redis.UniversalClient, q keys.Queue, ks []string) map[string]int {
	t.Helper()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(ks))
	for i, k := range ks {
		cmds[i] = pipe.HGet(ctx, q.Task(k), "st")
	}
	_, _ = pipe.Exec(ctx)
	out := map[string]int{}
	for _, c := range cmds {
		out[c.Val()]++
	}
	return out
}

// Draining n continuations costs a few round trips per round of 100
// entries, not one (or more) per entry.
func TestDrainOutboxPipelinesActivations(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	const n = 450
	ks := fillOutbox(t, rdb, q, n)
	var rt roundTrips
	rdb.AddHook(&rt)
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	rounds := (n + 99) / 100
	if got, most := rt.n.Load(), int64(3*rounds); got > most {
		t.Errorf("draining %d continuations took %d round trips; want at most %d (3 per round of 100)", n, got, most)
	}
	if st := states(t, rdb, q, ks); st["pending"] != n {
		t.Errorf("states after the drain: %v; want all %d pending", st, n)
	}
	if l := rdb.XLen(ctx, q.Stream()).Val(); l != n {
		t.Errorf("stream holds %d entries; want %d (each continuation once)", l, n)
	}
	if l := rdb.XLen(ctx, q.Outbox()).Val(); l != 0 {
		t.Errorf("outbox holds %d entries after the drain; want 0", l)
	}
}

// An entry that fails does not hold up the ones behind it, and stays in the
// outbox for the next drain.
func TestDrainOutboxSkipsFailingEntry(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ks := fillOutbox(t, rdb, q, 5)
	// The first continuation's hash is a string: activate.lua fails on it.
	if err := rdb.Set(ctx, q.Task(ks[0]), "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := store.DrainOutbox(ctx, rdb, q, 60000)
	if err == nil || !strings.Contains(err.Error(), keys.TaskID(q.Name, ks[0])) {
		t.Errorf("DrainOutbox = %v; want the error of %s", err, ks[0])
	}
	if st := states(t, rdb, q, ks[1:]); st["pending"] != 4 {
		t.Errorf("states of the continuations behind the failing one: %v; want all 4 pending", st)
	}
	left, err2 := rdb.XRange(ctx, q.Outbox(), "-", "+").Result()
	if err2 != nil {
		t.Fatal(err2)
	}
	if len(left) != 1 || !strings.Contains(fmt.Sprint(left[0].Values["s"]), "/"+ks[0]+"|") {
		t.Errorf("outbox after the drain: %v; want only the failing entry", left)
	}
	// Once the cause is gone, the next drain applies it.
	if err := rdb.Del(ctx, q.Task(ks[0])).Err(); err != nil {
		t.Fatal(err)
	}
	script.Waiting.Run(ctx, rdb, []string{q.Task(ks[0]), q.Result(ks[0])}, envelope(ks[0]), "op-"+ks[0])
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := states(t, rdb, q, ks); st["pending"] != 5 {
		t.Errorf("states after the second drain: %v; want all 5 pending", st)
	}
}

// Under network latency, a drain whose deadline is shorter than the whole
// drain deletes the entries it applied as it goes: the next one starts
// where it stopped. Nothing is lost, nothing activated twice.
func TestDrainOutboxUnderLatencyKeepsProgress(t *testing.T) {
	t.Parallel()
	addr := singleNode(t)
	direct := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = direct.Close() })
	ctx := context.Background()
	if err := script.Load(ctx, direct); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(testenv.Queue(t))
	if err := store.EnsureGroup(ctx, direct, q); err != nil {
		t.Fatal(err)
	}
	const n = 2500
	ks := fillOutbox(t, direct, q, n)

	// 25ms added to each round trip: a drain of 25 rounds of a few round
	// trips each takes about two seconds, twice the deadline.
	p := testenv.NewFaultProxy(t, addr)
	p.Latency(func(testenv.Command) bool { return true }, 25*time.Millisecond)
	slow := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = slow.Close() })
	var rt roundTrips
	slow.AddHook(&rt)

	dctx, cancel := context.WithTimeout(ctx, time.Second)
	err := store.DrainOutbox(dctx, slow, q, 60000)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DrainOutbox under a short deadline = %v; want it to stop at the deadline", err)
	}
	left, err2 := direct.XRange(ctx, q.Outbox(), "-", "+").Result()
	if err2 != nil {
		t.Fatal(err2)
	}
	if len(left) == n {
		t.Fatalf("the drain deleted none of the %d entries in %d round trips", n, rt.n.Load())
	}
	t.Logf("a 1s drain at 25ms a round trip applied and deleted %d of %d entries in %d round trips", n-len(left), n, rt.n.Load())
	// Every entry deleted was applied.
	waitingLeft := map[string]bool{}
	for _, e := range left {
		_, key, err := keys.SplitTaskID(strings.TrimSuffix(fmt.Sprint(e.Values["s"]), "|1"))
		if err != nil {
			t.Fatal(err)
		}
		waitingLeft[key] = true
	}
	var gone []string
	for _, k := range ks {
		if !waitingLeft[k] {
			gone = append(gone, k)
		}
	}
	if st := states(t, direct, q, gone); st["pending"] != len(gone) {
		t.Errorf("states of the continuations whose entry was deleted: %v; want all %d pending", st, len(gone))
	}
	// The next drain finishes the work.
	if err := store.DrainOutbox(ctx, direct, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := states(t, direct, q, ks); st["pending"] != n {
		t.Errorf("states after the last drain: %v; want all %d pending", st, n)
	}
	if l := direct.XLen(ctx, q.Stream()).Val(); l != n {
		t.Errorf("stream holds %d entries; want %d (each continuation once)", l, n)
	}
	if l := direct.XLen(ctx, q.Outbox()).Val(); l != 0 {
		t.Errorf("outbox holds %d entries after the last drain; want 0", l)
	}
}

// singleNode returns the address of a single Redis node for t: the
// configured server, or a miniredis of its own in the cluster pass (a
// proxy fronts one node).
func singleNode(t *testing.T) string {
	t.Helper()
	if os.Getenv(testenv.EnvCluster) != "" {
		return miniredis.RunT(t).Addr()
	}
	return testenv.Redis(t).Addr
}

// Continuations of other queues (other slots, on a cluster other nodes)
// are activated from one outbox in the same pipelined rounds.
func TestDrainOutboxAcrossQueues(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var others []keys.Queue
	for i := range 3 {
		o := keys.ForQueue(fmt.Sprintf("%s-%d", q.Name, i))
		if err := store.EnsureGroup(ctx, rdb, o); err != nil {
			t.Fatal(err)
		}
		others = append(others, o)
	}
	const n = 150
	for i := range n {
		o, key := others[i%len(others)], fmt.Sprintf("x%04d", i)
		if _, err := store.CreateWaiting(ctx, rdb, o, key, envelope(key), "op-"+key); err != nil {
			t.Fatal(err)
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), Values: []any{"s", store.ContSpec(o.Name, key, false), "p", q.Name + "/parent", "st", "failed"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	want := int64(n / len(others))
	for _, o := range others {
		if l := rdb.XLen(ctx, o.Stream()).Val(); l != want {
			t.Errorf("stream of %s holds %d entries; want %d (each continuation once)", o.Name, l, want)
		}
	}
	if l := rdb.XLen(ctx, q.Outbox()).Val(); l != 0 {
		t.Errorf("outbox holds %d entries after the drain; want 0", l)
	}
}
