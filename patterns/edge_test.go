package patterns_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
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
func hooked(t *testing.T, env *testenv.Env, h redis.Hook) *client.Client {
	t.Helper()
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(h)
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: quietLog()})
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
	// The join's TTL first: read later, the group's can only have gone
	// down (read the other way round, a millisecond between the two reads
	// made the join's look shorter).
	jttl := b.env.RDB.PTTL(ctx, q.Task(jkey)).Val()
	gttl := b.env.RDB.PTTL(ctx, q.Group("unsealed")).Val()
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

// failEnqueue fails enqueue.lua calls while on, as if the caller lost
// Redis halfway through creating a group.
type failEnqueue struct{ on atomic.Bool }

func (*failEnqueue) DialHook(next redis.DialHook) redis.DialHook { return next }

func (*failEnqueue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (f *failEnqueue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); f.on.Load() && len(args) > 1 {
			if body, _ := args[1].(string); body == script.Enqueue.Hash() || strings.Contains(body, "enqueue.lua: adds") {
				err := errors.New("enqueue dropped by the test")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// A group whose creator failed halfway can be cancelled (it ends), and can
// be completed by a second call instead.
func TestHalfMadeGroupCancelledOrCompleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) { worker.Handle(w, square) })
	ctx := ctxT(t)
	var f failEnqueue
	f.on.Store(true)
	rdb := testenv.NewClient(b.env.Addr)
	rdb.AddHook(&f)
	t.Cleanup(func() { _ = rdb.Close() })
	c2, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	for _, cancelIt := range []bool{true, false} {
		id := "half-" + map[bool]string{true: "cancelled", false: "completed"}[cancelIt]
		specs := squares(b.queue+"-m", 1, 2, 3) // members in another queue: keyed, created by enqueue.lua
		_, err := patterns.InvokeAll(ctx, c2, specs, 1, &patterns.GroupOpts{ID: id, Queue: b.queue})
		var inc *patterns.IncompleteError
		if !errors.As(err, &inc) || inc.ID != id {
			t.Fatalf("first call: %v, want an IncompleteError naming %s", err, id)
		}
		g, err := patterns.Open(b.c, inc.Group)
		if err != nil {
			t.Fatal(err)
		}
		if cancelIt {
			if err := g.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			if p, err := g.Wait(ctx); err != nil || p.State != patterns.GroupCancelled || p.Failed != 3 {
				t.Fatalf("cancelled half-made group: %+v, %v", p, err)
			}
			continue
		}
		g2, err := patterns.InvokeAll(ctx, b.c, specs, 1, &patterns.GroupOpts{ID: id, Queue: b.queue})
		if err != nil || g2.ID() != g.ID() {
			t.Fatalf("completing call: %v", err)
		}
	}
}

// A group cancelled while its creator is still adding members ends. The
// members not added yet are refused; those added in other queues (whose
// tasks the creator enqueues next, in another slot) are cancelled by the
// creator right after, and may start in between.
func TestCancelWhileBeingMade(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ranHome atomic.Int32
	b.worker(t, &worker.Config{Concurrency: 4, Queues: map[string]int{b.queue: 1, b.queue + "-m": 1}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			if a.N >= 3 {
				ranHome.Add(1)
			}
			return square(ctx, a)
		})
	})
	ctx := ctxT(t)
	// Cancel the group from a hook, right after its members were added and
	// before any was enqueued.
	rdb := testenv.NewClient(b.env.Addr)
	t.Cleanup(func() { _ = rdb.Close() })
	h := &cancelAfterAdd{c: b.c, group: keys.GroupID(b.queue, "midway")}
	rdb.AddHook(h)
	c2, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	specs := append(squares(b.queue+"-m", 1, 2), squares(b.queue, 3, 4)...)
	g, err := patterns.ForkJoin(ctx, c2, specs, nil, &patterns.GroupOpts{ID: "midway", Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if !h.done.Load() {
		t.Fatal("the hook did not cancel the group")
	}
	p, err := g.Wait(ctx)
	if err != nil || p.State != patterns.GroupCancelled {
		t.Fatalf("group %+v, %v", p, err)
	}
	if n := ranHome.Load(); n != 0 {
		t.Errorf("%d members refused after the cancel ran", n)
	}
	// The two added ended (cancelled, or run); the two refused never
	// existed, and Outcome says so.
	if p.Done() != 2 {
		t.Errorf("%d members ended, want the 2 added", p.Done())
	}
	outs, _ := g.Outcome(ctx)
	for _, o := range outs[2:] {
		if !errors.Is(o.Err, patterns.ErrUnfinished) {
			t.Errorf("refused member: %+v", o)
		}
	}
}

// cancelAfterAdd cancels group once, after the first groupadd.lua call.
type cancelAfterAdd struct {
	c     *client.Client
	group string
	done  atomic.Bool
}

func (*cancelAfterAdd) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cancelAfterAdd) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if args := cmd.Args(); len(args) > 1 && args[1] == script.GroupAdd.Hash() && !h.done.Swap(true) {
				g, _ := patterns.Open(h.c, h.group)
				if cerr := g.Cancel(ctx); cerr != nil {
					return cerr
				}
			}
		}
		return err
	}
}

func (*cancelAfterAdd) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
