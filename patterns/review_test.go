package patterns_test

// Regressions found in review: group states that could stay open forever,
// and bounds that could be exceeded.

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// A member handed back by a Stop that timed out, then cancelled, still
// ends its group.
func TestHandedBackMemberStillEndsItsGroup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started, release := make(chan struct{}, 1), make(chan struct{})
	w, err := worker.New(b.env.RDB, &worker.Config{Queues: map[string]int{b.queue: 1}, Concurrency: 2, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
		started <- struct{}{}
		<-release // deaf to the shutdown for a while
		return 0, context.Cause(ctx)
	})
	ctx := ctxT(t)
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_ = w.Stop(sctx) // times out: the task is handed back to the queue
	cancel()
	close(release)
	<-w.Stopped()
	if err := g.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := g.Wait(ctx)
	if err != nil || p.State != patterns.GroupCancelled {
		t.Fatalf("group %+v, %v", p, err)
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
	rdb := asynctest.NewClient(b.env.Addr)
	rdb.AddHook(&f)
	t.Cleanup(func() { _ = rdb.Close() })
	c2, err := client.New(rdb, nil)
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
	rdb := asynctest.NewClient(b.env.Addr)
	t.Cleanup(func() { _ = rdb.Close() })
	h := &cancelAfterAdd{c: b.c, group: keys.GroupID(b.queue, "midway")}
	rdb.AddHook(h)
	c2, err := client.New(rdb, nil)
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

// FailFast reaches a nested group whose join stands for it.
func TestFailFastCancelsNestedGroupWithJoin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	q := &client.EnqueueOpts{Queue: b.queue}
	inner := patterns.Sub([]client.Spec{{Args: Square{Block: true}, Opts: q}}, &client.Spec{Args: Sum{Tag: "inner"}, Opts: q}, nil)
	g, err := patterns.ForkJoin(ctx, b.c, []client.Spec{inner, {Args: Square{N: -1}, Opts: q}}, &client.Spec{Args: Sum{Tag: "outer"}, Opts: q}, &patterns.GroupOpts{FailFast: true})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := g.Wait(ctx); err != nil || p.State != patterns.GroupFailed {
		t.Fatalf("outer: %+v, %v", p, err)
	}
	js.wait(t, ctx, "outer")
	outs, _ := g.Outcome(ctx)
	// The nested group: its id is the join's minus ".join".
	sub, err := patterns.Open(b.c, "group:"+b.queue+"/"+strings.TrimSuffix(outs[0].ID[len(b.queue)+1:], ".join"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := sub.Wait(ctx)
	if err != nil || p.State != patterns.GroupCancelled {
		t.Errorf("nested group after its parent failed fast: %+v, %v", p, err)
	}
}

// A dead member of a running InvokeAll cannot be retried into the group
// (its slot went back when it died); once the group ended it can.
func TestRetryDeadInvokeAllMember(t *testing.T) {
	t.Parallel()
	b := setup(t)
	release := make(chan struct{})
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			if a.Block {
				select {
				case <-release:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
				return a.N * a.N, nil
			}
			return square(ctx, a)
		})
	})
	ctx := ctxT(t)
	specs := []client.Spec{{Args: Square{N: -1}, Opts: &client.EnqueueOpts{Queue: b.queue}}, {Args: Square{N: 2, Block: true}, Opts: &client.EnqueueOpts{Queue: b.queue}}}
	g, err := patterns.InvokeAll(ctx, b.c, specs, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := g.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asynctest.Eventually(t, 5*time.Second, "member 0 dead", func() bool {
		st, _ := hs[0].State(ctx)
		return st == client.StateDead
	})
	if _, err := b.c.RetryDead(ctx, hs[0].ID()); err == nil || !strings.Contains(err.Error(), "still runs at most 1") {
		t.Errorf("RetryDead while the group runs: %v", err)
	}
	close(release)
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.RetryDead(ctx, hs[0].ID()); err != nil {
		t.Errorf("RetryDead once the group ended: %v", err)
	}
}

// A group id used again after the group expired starts a fresh group: its
// members never meet the old group's records.
func TestGroupIDReusedAfterExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := b.queue + "-m"
	b.worker(t, &worker.Config{Concurrency: 4, Queues: map[string]int{b.queue: 1, other: 1}}, func(w *worker.Worker) { worker.Handle(w, square) })
	ctx := ctxT(t)
	specs := squares(other, -1, 2)
	start := func() *patterns.Group {
		g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: Square{N: 5}, Opts: &client.EnqueueOpts{Queue: other}},
			&patterns.GroupOpts{ID: "daily", Queue: b.queue, Retention: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := start()
	if p, err := g.Wait(ctx); err != nil || p.State != patterns.GroupFailed {
		t.Fatalf("%+v %v", p, err)
	}
	asynctest.Eventually(t, 5*time.Second, "the group expired", func() bool {
		if b.env.Mini != nil {
			b.env.Mini.FastForward(100 * time.Millisecond)
		}
		_, err := g.Progress(ctx)
		return errors.Is(err, patterns.ErrUnknownGroup)
	})
	g2 := start()
	if g2.Duplicate() {
		t.Fatal("a group started after its predecessor expired is a duplicate")
	}
	p, err := g2.Wait(ctx)
	if err != nil || p.State != patterns.GroupFailed || p.Done() != 2 {
		t.Fatalf("second group: %+v, %v", p, err)
	}
	jh, err := g2.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := client.Result[int](ctx, jh); err != nil || v != 25 {
		t.Errorf("the second group's join: %d, %v", v, err)
	}
}
