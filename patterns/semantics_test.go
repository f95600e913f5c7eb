package patterns_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

func TestForkJoinFailFast(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	var started atomic.Int32
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			started.Add(1)
			return square(ctx, a)
		})
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	specs := []client.Spec{
		{Args: Square{Block: true}, Opts: &client.EnqueueOpts{Queue: b.queue}},
		{Args: Square{Block: true}, Opts: &client.EnqueueOpts{Queue: b.queue}},
		{Args: Square{N: -1}, Opts: &client.EnqueueOpts{Queue: b.queue}},
	}
	g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: Sum{Tag: "ff"}, Opts: &client.EnqueueOpts{Queue: b.queue}}, &patterns.GroupOpts{FailFast: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Wait(ctx)
	if err != nil || p.State != patterns.GroupFailed {
		t.Fatalf("wait: %+v, %v", p, err)
	}
	js.wait(t, ctx, "ff")
	// The blocked siblings are cancelled.
	hs, err := g.Members(ctx)
	if err != nil || len(hs) != 3 {
		t.Fatalf("members %v, %v", hs, err)
	}
	for i, h := range hs[:2] {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
			t.Errorf("sibling %d: %v, want cancelled", i, err)
		}
	}
	testenv.Eventually(t, 5*time.Second, "every member counted", func() bool {
		p, err := g.Progress(ctx)
		return err == nil && p.Done() == 3
	})
	p, _ = g.Progress(ctx)
	if p.State != patterns.GroupFailed || p.Failed != 3 {
		t.Errorf("progress %+v", p)
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.runs["ff"] != 1 {
		t.Errorf("join ran %d times", js.runs["ff"])
	}
}

func TestForkJoinNested(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, &worker.Config{Concurrency: 16}, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	q := &client.EnqueueOpts{Queue: b.queue}
	inner := patterns.Sub(squares(b.queue, 1, 2), &client.Spec{Args: Sum{Tag: "inner"}, Opts: q}, nil)
	deeper := patterns.Sub([]client.Spec{
		{Args: Square{N: 5}, Opts: q},
		patterns.Sub(squares(b.queue, 6), nil, nil),
	}, nil, nil)

	specs := []client.Spec{{Args: Square{N: 3}, Opts: q}, inner, deeper}
	g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: Sum{Tag: "outer"}, Opts: q}, nil)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := g.Outcome(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 3 || !strings.HasSuffix(outs[1].ID, ".join") || !keys.IsGroupID(outs[2].ID) {
		t.Fatalf("outcomes %+v", outs)
	}
	if v, _ := patterns.ResultOf[int](outs[0]); v != 9 {
		t.Errorf("member 0: %d", v)
	}
	if v, _ := patterns.ResultOf[int](outs[1]); v != 5 {
		t.Errorf("member 1 (the inner join, 1+4): %d", v)
	}
	if outs[2].State != client.StateSucceeded {
		t.Errorf("member 2: %+v", outs[2])
	}
	js.wait(t, ctx, "outer")
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.runs["inner"] != 1 || js.runs["outer"] != 1 || !reflect.DeepEqual(js.got["outer"], []int{9, 5, 0}) {
		t.Errorf("joins %v, outer saw %v", js.runs, js.got["outer"])
	}
	sub, err := patterns.Open(b.c, outs[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sub.Progress(ctx)
	if err != nil || p.State != patterns.GroupSucceeded || p.Total != 2 {
		t.Errorf("nested group: %+v, %v", p, err)
	}
}

// Members in other queues (other hash slots on a cluster) than the group's
// home queue, which no worker serves, and a join in a third queue.
func TestForkJoinAcrossQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	qa, qb, home := b.queue+"-a", b.queue+"-b", b.queue+"-home"
	js := newJoins()
	b.worker(t, &worker.Config{Queues: map[string]int{qa: 1, qb: 1, b.queue: 1}}, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	specs := append(squares(qa, 1, 2, 3), squares(qb, 4, 5)...)
	g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: Sum{Tag: "x"}, Opts: &client.EnqueueOpts{Queue: b.queue}}, &patterns.GroupOpts{Queue: home})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.ID(), "group:"+home+"/") {
		t.Errorf("id %s", g.ID())
	}
	res, err := patterns.Results[int](ctx, g)
	if err != nil || !reflect.DeepEqual(res, []int{1, 4, 9, 16, 25}) {
		t.Fatalf("results %v, %v", res, err)
	}
	js.wait(t, ctx, "x")
}

func TestGroupContinueWith(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	q := &client.EnqueueOpts{Queue: b.queue}
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1, 2), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := g.ContinueWith(ctx, Sum{Tag: "before"}, &client.ContinueOpts{EnqueueOpts: *q})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := g.ContinueWith(ctx, Sum{Tag: "after"}, &client.ContinueOpts{EnqueueOpts: *q, OnlyOnSuccess: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*client.Handle{before, after} {
		if v, err := client.Result[int](ctx, h); err != nil || v != 5 {
			t.Errorf("%s: %d, %v", h.ID(), v, err)
		}
	}
	// OnlyOnSuccess on a failed group: cancelled, never run.
	bad, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, -1), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	never, err := bad.ContinueWith(ctx, Sum{Tag: "never"}, &client.ContinueOpts{EnqueueOpts: *q, OnlyOnSuccess: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := never.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Errorf("continuation of a failed group: %v", err)
	}
}

func TestGroupCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var running sync.WaitGroup
	running.Add(2)
	b.worker(t, &worker.Config{Concurrency: 2}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			running.Done()
			return square(ctx, a)
		})
	})
	ctx := ctxT(t)
	specs := make([]client.Spec, 10)
	for i := range specs {
		specs[i] = client.Spec{Args: Square{Block: true}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	g, err := patterns.ForkJoin(ctx, b.c, specs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	running.Wait()
	if err := g.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	outs, err := g.Outcome(ctx)
	if !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("outcome: %v", err)
	}
	for _, o := range outs {
		if o.State != client.StateCancelled {
			t.Errorf("%s: %s", o.ID, o.State)
		}
	}
	p, _ := g.Progress(ctx)
	if p.State != patterns.GroupCancelled || p.Failed != 10 {
		t.Errorf("progress %+v", p)
	}
}

func TestForkJoinEmptyAndDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	q := &client.EnqueueOpts{Queue: b.queue}
	g, err := patterns.ForkJoin(ctx, b.c, nil, &client.Spec{Args: Sum{Tag: "empty"}, Opts: q}, &patterns.GroupOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	js.wait(t, ctx, "empty")
	if p, _ := g.Wait(ctx); p.State != patterns.GroupSucceeded || p.Total != 0 {
		t.Errorf("empty group %+v", p)
	}

	g1, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1, 2), &client.Spec{Args: Sum{Tag: "dup"}, Opts: q}, &patterns.GroupOpts{ID: "batch-7"})
	if err != nil || g1.Duplicate() {
		t.Fatal(err, g1.Duplicate())
	}
	g2, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1, 2), &client.Spec{Args: Sum{Tag: "dup"}, Opts: q}, &patterns.GroupOpts{ID: "batch-7"})
	if err != nil || !g2.Duplicate() || g2.ID() != g1.ID() {
		t.Fatalf("second start: %v, duplicate %v, %s vs %s", err, g2.Duplicate(), g2.ID(), g1.ID())
	}
	if _, err := g2.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	js.wait(t, ctx, "dup")
	n, err := b.env.RDB.XLen(ctx, keys.ForQueue(b.queue).Stream()).Result()
	if err != nil || n > 4 {
		t.Errorf("stream holds %d entries (want at most 2 members and 2 joins), %v", n, err)
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.runs["dup"] != 1 {
		t.Errorf("join ran %d times", js.runs["dup"])
	}
}

func TestGroupBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	q := &client.EnqueueOpts{Queue: b.queue}
	cases := []struct {
		name string
		run  func() error
		want string
	}{
		{"nil client", func() error { _, err := patterns.ForkJoin(ctx, nil, squares(b.queue, 1), nil, nil); return err }, "client is nil"},
		{"member id", func() error {
			_, err := patterns.ForkJoin(ctx, b.c, []client.Spec{{Args: Square{}, Opts: &client.EnqueueOpts{Queue: b.queue, ID: "x"}}}, nil, nil)
			return err
		}, "EnqueueOpts.ID"},
		{"nil args", func() error { _, err := patterns.ForkJoin(ctx, b.c, []client.Spec{{Opts: q}}, nil, nil); return err }, "args is nil"},
		{"bad queue", func() error {
			_, err := patterns.ForkJoin(ctx, b.c, squares("no spaces", 1), nil, nil)
			return err
		}, "queue"},
		{"bad group id", func() error {
			_, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1), nil, &patterns.GroupOpts{ID: "a/b"})
			return err
		}, "group id"},
		{"long group id", func() error {
			_, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1), nil, &patterns.GroupOpts{ID: strings.Repeat("a", 101)})
			return err
		}, "limit is 100"},
		{"bad join", func() error {
			_, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1), &client.Spec{}, nil)
			return err
		}, "join"},
		{"negative concurrency", func() error { _, err := patterns.InvokeAll(ctx, b.c, squares(b.queue, 1), -1, nil); return err }, "concurrency"},
		{"nested in InvokeAll", func() error {
			_, err := patterns.InvokeAll(ctx, b.c, []client.Spec{patterns.Sub(squares(b.queue, 1), nil, nil)}, 2, nil)
			return err
		}, "nested"},
		{"sub enqueued alone", func() error {
			_, err := b.c.Enqueue(ctx, patterns.Sub(squares(b.queue, 1), nil, nil).Args, q)
			return err
		}, "only for patterns.ForkJoin"},
		{"open bad id", func() error { _, err := patterns.Open(b.c, b.queue+"/x"); return err }, "group:"},
	}
	for _, tc := range cases {
		err := tc.run()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// Nothing was written for the refused groups.
	if n, _ := b.env.RDB.Exists(ctx, keys.ForQueue(b.queue).Stream()).Result(); n != 0 {
		t.Errorf("the queue's stream exists after refused calls")
	}
	g, err := patterns.Open(b.c, keys.GroupID(b.queue, "nope"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Progress(ctx); !errors.Is(err, patterns.ErrUnknownGroup) {
		t.Errorf("progress of an unknown group: %v", err)
	}
}

// A member handed back by a Stop that timed out, then cancelled, still
// ends its group.
func TestHandedBackMemberStillEndsItsGroup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started, release := make(chan struct{}, 1), make(chan struct{})
	w, err := worker.New(context.Background(), b.env.RDB, &worker.Config{Queues: map[string]int{b.queue: 1}, Concurrency: 2, BlockTimeout: 50 * time.Millisecond})
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
			&patterns.GroupOpts{ID: "daily", Queue: b.queue, Retention: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := start()
	if p, err := g.Wait(ctx); err != nil || p.State != patterns.GroupFailed {
		t.Fatalf("%+v %v", p, err)
	}
	testenv.Eventually(t, 5*time.Second, "the group expired", func() bool {
		if b.env.Mini != nil {
			b.env.Mini.FastForward(time.Second)
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
