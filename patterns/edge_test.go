package patterns_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/patterns"
)

// beforeScript is a go-redis hook that runs do before each call of one
// script whose arguments pass match; do's error, when not nil, is the call's
// answer and the call does not reach Redis (its caller died first).
type beforeScript struct {
	s     *redis.Script
	match func(args []any) bool
	do    func(ctx context.Context, args []any) error
}

func (h beforeScript) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h beforeScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if len(a) > 1 && a[0] == "evalsha" && a[1] == h.s.Hash() && (h.match == nil || h.match(a)) {
			if err := h.do(ctx, a); err != nil {
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// hooked returns a client of env's Redis with h on its Redis client.
func hooked(t *testing.T, env *asynctest.Env, h redis.Hook) *client.Client {
	t.Helper()
	rdb := asynctest.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(h)
	c, err := client.New(rdb, &client.Config{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A group that vanishes (expires) between Group.ContinueWith's look-up and
// its registration must not leave the continuation waiting for ever: the
// call cancels it and reports the group unknown.
func TestGroupContinueWithVanishedGroupLeavesNothing(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1, 2), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2 := hooked(t, b.env, beforeScript{s: script.GroupCont, do: func(ctx context.Context, args []any) error {
		// KEYS[1] is the group hash: it expires now.
		return b.env.RDB.Del(ctx, args[3].(string)).Err()
	}})
	g2, err := patterns.Open(c2, g.ID())
	if err != nil {
		t.Fatal(err)
	}
	_, err = g2.ContinueWith(ctx, Sum{}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: b.queue, ID: "after"}})
	if !errors.Is(err, patterns.ErrUnknownGroup) {
		t.Errorf("got %v; want ErrUnknownGroup", err)
	}
	h, err := b.c.Task(keys.TaskID(b.queue, "after"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := h.State(ctx); err == nil && st == client.StateWaiting {
		t.Fatal("the continuation of a vanished group was left waiting")
	}
}

// A ForkJoin whose creator dies before sealing leaves a group that expires
// after store.UnsealedTTL; its join's waiting record must go with it, and
// once a later call completes (seals) the group, the join must live until
// it runs.
func TestForkJoinUnsealedJoinExpiresWithGroup(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	dies := hooked(t, b.env, beforeScript{s: script.GroupEnd,
		match: func(args []any) bool { return slices.Contains(args, any(store.OpenMember)) },
		do:    func(context.Context, []any) error { return errors.New("creator died before sealing") }})
	specs := squares(b.queue, 1, 2)
	join := &client.Spec{Args: Sum{}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	_, err := patterns.ForkJoin(ctx, dies, specs, join, &patterns.GroupOpts{ID: "unsealed"})
	var inc *patterns.IncompleteError
	if !errors.As(err, &inc) {
		t.Fatalf("got %v; want an IncompleteError", err)
	}
	g, err := patterns.Open(b.c, inc.Group)
	if err != nil {
		t.Fatal(err)
	}
	jh, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(b.queue)
	_, jkey, _ := keys.SplitTaskID(jh.ID())
	gttl := b.env.RDB.PTTL(ctx, q.Group("unsealed")).Val()
	jttl := b.env.RDB.PTTL(ctx, q.Task(jkey)).Val()
	if gttl <= 0 {
		t.Fatalf("unsealed group's TTL %v; want it to expire", gttl)
	}
	if jttl <= 0 || jttl < gttl {
		t.Fatalf("join's record TTL %v (group's %v); want it to expire, not before the group", jttl, gttl)
	}
	// Completed by a second call: sealed, and the join kept.
	if _, err := patterns.ForkJoin(ctx, b.c, specs, join, &patterns.GroupOpts{ID: "unsealed"}); err != nil {
		t.Fatal(err)
	}
	if ttl := b.env.RDB.PTTL(ctx, q.Task(jkey)).Val(); ttl != -1 {
		t.Fatalf("join's record TTL %v after sealing; want none", ttl)
	}
	if st, _ := jh.State(ctx); st != client.StateWaiting {
		t.Fatalf("join %q; want waiting for its members", st)
	}
}
