package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// What KeepsLastID infers from INFO is what the server does: a stream whose
// last entry was deleted refuses an id below the deleted one, or not.
func TestKeepsLastIDMatchesTheServer(t *testing.T) {
	e := testenv.Redis(t)
	ctx := context.Background()
	said, err := store.KeepsLastID(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	did, err := store.ProbeKeepsLastID(ctx, e.RDB, keys.ForQueue(testenv.Queue(t)), "probe")
	if err != nil {
		t.Fatal(err)
	}
	if said != did {
		t.Fatalf("KeepsLastID says %v, the server does %v", said, did)
	}
	if e.Mini == nil && !did {
		t.Fatal("a real Redis went back to an id below a deleted last entry")
	}
}

// parseID splits an entry id ms-seq.
func parseID(t *testing.T, id string) (ms, seq int64) {
	t.Helper()
	if _, err := fmt.Sscanf(id, "%d-%d", &ms, &seq); err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return ms, seq
}

// A client held at one millisecond (its queue's stream ahead of the clock)
// gives strictly increasing ids that never repeat and keep within Lua's
// exact range, however many calls it makes; another queue keeps its own
// clock, and a queue far ahead gets no id.
func TestEntryIDsStrictlyIncreasingWhileHeld(t *testing.T) {
	g := store.NewEntryIDs()
	now := time.Now().UnixMilli()
	g.Saw("a", fmt.Sprintf("%d-0", now+5_000))
	var lastMs, lastSeq int64
	for i := 0; i <= 1<<16+10; i++ {
		id, ok := g.Next("a", now+int64(i)/50)
		if !ok {
			t.Fatalf("call %d: no id", i)
		}
		ms, seq := parseID(t, id)
		if ms < lastMs || (ms == lastMs && seq <= lastSeq) {
			t.Fatalf("call %d: %s after %d-%d", i, id, lastMs, lastSeq)
		}
		if ms == lastMs && seq-lastSeq < 1<<20 {
			t.Fatalf("call %d: %s only %d past the last id: an XADD * run after it could reach it", i, id, seq-lastSeq)
		}
		if seq >= 1e14 {
			t.Fatalf("call %d: seq %d past Lua's exact integers printed without an exponent", i, seq)
		}
		lastMs, lastSeq = ms, seq
	}
	if id, _ := g.Next("b", now); !strings.HasPrefix(id, fmt.Sprint(now)+"-") {
		t.Fatalf("queue b got %s: another queue's stream moved its clock", id)
	}
	g.Saw("c", fmt.Sprintf("%d-0", now+store.MaxAhead+1_000))
	if id, ok := g.Next("c", now); ok {
		t.Fatalf("queue c, its stream far ahead, got %s", id)
	}
}

// Two clients' first ids in one millisecond differ (no fixed prefix or
// counter shared by chance).
func TestEntryIDsOfTwoClientsDiffer(t *testing.T) {
	now := time.Now().UnixMilli()
	seen := map[string]bool{}
	for range 1000 {
		id, _ := store.NewEntryIDs().Next("q", now)
		if seen[id] {
			t.Fatalf("two clients chose %s", id)
		}
		seen[id] = true
	}
}

// A resend of a call whose task was added, reaching Redis once it is over
// its memory limit, answers the task's id (not "Redis is full", which tells
// the caller nothing was added).
func TestEnqueueOneResendAtMaxmemory(t *testing.T) {
	// A server of its own: maxmemory 1 on a shared one would refuse the
	// writes of every test running beside this one.
	rdb := redis.NewClient(&redis.Options{Addr: testenv.PrivateRedis(t)})
	defer rdb.Close()
	ctx := context.Background()
	q := keys.ForQueue(testenv.Queue(t))
	id, _ := store.NewEntryIDs().Next(q.Name, time.Now().UnixMilli())
	got, err := store.EnqueueOne(ctx, rdb, q, id, "op-oom", 60000, []byte("env"))
	if err != nil || got != id {
		t.Fatalf("first run: %q, %v", got, err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	again, err := store.EnqueueOne(ctx, rdb, q, id, "op-oom", 60000, []byte("env"))
	if err != nil || again != id {
		t.Fatalf("resend of a call whose task was added: %q, %v", again, err)
	}
	// A first run at the limit is refused, and adds nothing.
	next, _ := store.NewEntryIDs().Next(q.Name, time.Now().UnixMilli()+1)
	if _, err := store.EnqueueOne(ctx, rdb, q, next, "op-oom2", 60000, []byte("env2")); !store.IsOOM(err) {
		t.Fatalf("first run at the limit: %v, want the OOM refusal", err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if n := rdb.XLen(ctx, q.Stream()).Val(); n != 1 {
		t.Fatalf("stream holds %d entries, want 1", n)
	}
}

// A run of XADD * after one of a client's ids, in the same millisecond (the
// stream ahead of Redis' clock), does not reach the client's next id: a
// task that ran under such an id cannot pass for the client's next call.
func TestEnqueueOneNextIDPastAnXADDRun(t *testing.T) {
	e := testenv.Redis(t)
	if e.Mini != nil {
		t.Skip("needs a real Redis (miniredis forgets a stream's last id)")
	}
	ctx := context.Background()
	q := keys.ForQueue(testenv.Queue(t))
	g := store.NewEntryIDs()
	now := e.RDB.Time(ctx).Val().UnixMilli()
	g.Saw(q.Name, fmt.Sprintf("%d-0", now+5_000))
	a, _ := g.Next(q.Name, now)
	if got, err := store.EnqueueOne(ctx, e.RDB, q, a, "op-a", 60000, []byte("A")); err != nil || got != a {
		t.Fatalf("A: %q, %v", got, err)
	}
	p := e.RDB.Pipeline()
	for range 5000 {
		p.XAdd(ctx, &redis.XAddArgs{Stream: q.Stream(), ID: "*", Values: []string{"m", "bulk"}})
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := g.Next(q.Name, now)
	before := e.RDB.XLen(ctx, q.Stream()).Val()
	got, err := store.EnqueueOne(ctx, e.RDB, q, b, "op-b", 60000, []byte("B"))
	if err != nil || got != b {
		t.Fatalf("B: %q, %v (want its own id %s)", got, err, b)
	}
	if after := e.RDB.XLen(ctx, q.Stream()).Val(); after != before+1 {
		t.Fatalf("stream %d -> %d entries: B was not added", before, after)
	}
}
