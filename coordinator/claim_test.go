package coordinator_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// A coordinator whose housekeeping claim reply is lost keeps house that
// interval all the same: go-redis' resend finds the claim held by its own
// token. Every claim here loses its first reply, so a claim that does not
// recognise its own token never keeps house.
func TestHousekeepClaimSurvivesResend(t *testing.T) {
	env := testenv.IsolatedRedis(t, isolatedDB)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A continuation of a queue no worker serves, its parent ended: only
	// housekeeping activates it.
	q := keys.ForQueue(testenv.Queue(t))
	if err := store.RegisterQueue(ctx, env.RDB, q.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateWaiting(ctx, env.RDB, q, "c", []byte("x"), "op-claim"); err != nil {
		t.Fatal(err)
	}
	if err := env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), Values: []any{"s", store.ContSpec(q.Name, "c", false), "p", q.Name + "/p", "st", "succeeded"}}).Err(); err != nil {
		t.Fatal(err)
	}

	p := testenv.NewFaultProxy(t, env.Addr)
	p.DropReply(testenv.FirstSending(testenv.MatchArg(keys.HousekeepClaim)), 1, math.MaxInt)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), DB: env.DB})
	t.Cleanup(func() { _ = rdb.Close() })
	// A claim lives 9/10 of the interval: long past go-redis' resend (a
	// shorter one could expire before the resend came, and let it through).
	co, err := coordinator.New(context.Background(), rdb, &coordinator.Config{HousekeepInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = co.Stop(context.Background()) }()
	testenv.Eventually(t, 15*time.Second, "housekeeping to activate the continuation", func() bool {
		st, _ := env.RDB.HGet(ctx, q.Task("c"), "st").Result()
		return st == "pending"
	})
	if p.Dropped() == 0 {
		t.Fatal("no claim reply was lost: the test tests nothing")
	}
}
