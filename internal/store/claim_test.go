package store_test

import (
	"context"
	"math"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// A drain that takes a group's sweep claim, and whose claim reply is lost,
// still sweeps: go-redis' resend finds the claim held by its own token.
func TestGroupSweepClaimSurvivesResend(t *testing.T) {
	t.Parallel()
	addr := singleNode(t)
	ctx := context.Background()
	q := keys.ForQueue(testenv.Queue(t))
	g := store.GroupRef{Home: q, ID: "g1"}
	p := testenv.NewFaultProxy(t, addr)
	p.DropReply(testenv.FirstSending(testenv.MatchArg(q.GroupSweep(g.ID))), 1, math.MaxInt)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	// A cancel request for a group with no open member left: the sweep
	// has nothing to cancel, and deletes the entry.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), Values: []any{"x", g.String(), "why", "test"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if p.Dropped() == 0 {
		t.Fatal("no claim reply was lost: the test tests nothing")
	}
	if n := rdb.XLen(ctx, q.Outbox()).Val(); n != 0 {
		t.Errorf("outbox holds %d entries after the drain; want 0 (the sweep claimed and done)", n)
	}
	if n := rdb.Exists(ctx, q.GroupSweep(g.ID)).Val(); n != 0 {
		t.Errorf("the sweep claim is still held after the sweep")
	}
}
