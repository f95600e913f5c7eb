package client_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// told keeps what an EnqueuedHook was told of.
type told struct {
	mu  sync.Mutex
	all []client.Enqueued
}

func (r *told) hook(_ context.Context, t *client.Enqueued) {
	r.mu.Lock()
	r.all = append(r.all, *t)
	r.mu.Unlock()
}

func (r *told) take() []client.Enqueued {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.all
	r.all = nil
	return out
}

func newToldClient(t *testing.T, q string, more ...client.EnqueueHook) (*client.Client, *testenv.Env, *told) {
	t.Helper()
	r := &told{}
	c, env := newClient(t, &client.Config{DefaultQueue: q, EnqueuedHooks: []client.EnqueuedHook{r.hook}, EnqueueHooks: more})
	return c, env, r
}

func msgs(es []client.Enqueued) string {
	var b strings.Builder
	for _, e := range es {
		if a, ok := e.Args.(PingArgs); ok {
			b.WriteString(a.Msg)
		} else {
			b.WriteString(e.Kind)
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// Enqueue and EnqueueMany tell the hooks of each task added, in order, with
// its id, queue, options as sent (a copy), and of a duplicate as such.
func TestEnqueuedHookEnqueue(t *testing.T) {
	t.Parallel()
	q := testenv.Queue(t)
	c, _, r := newToldClient(t, q)
	ctx := context.Background()
	opts := &client.EnqueueOpts{ID: "one", Meta: map[string]string{"k": "v"}, MaxAttempts: 3}
	h, err := c.Enqueue(ctx, PingArgs{Msg: "a"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	got := r.take()
	if len(got) != 1 {
		t.Fatalf("told of %d tasks, want 1", len(got))
	}
	e := got[0]
	if e.ID != h.ID() || e.Kind != "ping" || e.Queue != q || e.Duplicate || e.Parent != "" || e.Continues != "" || e.Group != "" {
		t.Fatalf("told %+v; want id %s, kind ping, queue %s, nothing else", e, h.ID(), q)
	}
	if e.Opts == nil || e.Opts == opts || e.Opts.Queue != q || e.Opts.MaxAttempts != 3 || e.Opts.Meta["k"] != "v" || e.Opts.ID != "one" {
		t.Fatalf("told opts %+v; want a copy with queue %s, 3 attempts, meta k=v", e.Opts, q)
	}
	e.Opts.Meta["k"] = "changed"
	if opts.Meta["k"] != "v" {
		t.Fatal("the hook's opts share the caller's metadata")
	}
	if a, ok := e.Args.(PingArgs); !ok || a.Msg != "a" {
		t.Fatalf("told args %#v", e.Args)
	}
	// The same id again: a duplicate.
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "a"}, &client.EnqueueOpts{ID: "one"}); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 1 || !got[0].Duplicate || got[0].ID != h.ID() {
		t.Fatalf("told %+v; want the duplicate %s", got, h.ID())
	}
	// Defaults: no opts still gives opts.
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "b"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 1 || got[0].Opts == nil || got[0].Opts.Queue != q || got[0].Opts.MaxAttempts != 25 {
		t.Fatalf("told %+v; want opts with the defaults", got)
	}
	// EnqueueMany: in the order of the specs, across queues.
	q2 := q + "-2"
	hs, err := c.EnqueueMany(ctx, []client.Spec{
		{Args: PingArgs{Msg: "m1"}},
		{Args: PingArgs{Msg: "m2"}, Opts: &client.EnqueueOpts{Queue: q2}},
		{Args: PingArgs{Msg: "m3"}, Opts: &client.EnqueueOpts{ID: "one"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got = r.take()
	if msgs(got) != "m1 m2 m3" {
		t.Fatalf("told %q; want m1 m2 m3", msgs(got))
	}
	for i, e := range got {
		if e.ID != hs[i].ID() || e.Duplicate != (i == 2) {
			t.Fatalf("task %d told %+v; want id %s, duplicate %v", i, e, hs[i].ID(), i == 2)
		}
	}
	if got[1].Queue != q2 {
		t.Fatalf("told queue %s; want %s", got[1].Queue, q2)
	}
}

// A call refused (bad input, an EnqueueHook's error) tells nothing; nor one
// whose write failed.
func TestEnqueuedHookNothingOnFailure(t *testing.T) {
	t.Parallel()
	q := testenv.Queue(t)
	refuse := func(_ context.Context, t *client.Enqueuing) error {
		if t.Args.(PingArgs).Msg == "no" {
			return errors.New("refused")
		}
		return nil
	}
	c, env, r := newToldClient(t, q, refuse)
	ctx := context.Background()
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "no"}, nil); err == nil {
		t.Fatal("refused task enqueued")
	}
	if _, err := c.EnqueueMany(ctx, []client.Spec{{Args: PingArgs{Msg: "ok"}}, {Args: PingArgs{Msg: "no"}}}); err == nil {
		t.Fatal("refused spec enqueued")
	}
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "x"}, &client.EnqueueOpts{Queue: "bad queue"}); err == nil {
		t.Fatal("bad queue enqueued")
	}
	if got := r.take(); len(got) != 0 {
		t.Fatalf("told of %q after refused calls", msgs(got))
	}
	// A write that fails: Redis gone.
	if env.Mini != nil {
		env.Mini.Close()
		tctx, done := context.WithTimeout(ctx, 2*time.Second)
		defer done()
		if _, err := c.EnqueueMany(tctx, []client.Spec{{Args: PingArgs{Msg: "down"}}}); err == nil {
			t.Fatal("enqueue to a closed miniredis succeeded")
		}
	}
	if got := r.take(); len(got) != 0 {
		t.Fatalf("told of %q after failed writes", msgs(got))
	}
}

// EnqueueMany across queues whose script call fails for one queue tells
// exactly of the tasks the other queue's call added.
func TestEnqueuedHookPartialEnqueueMany(t *testing.T) {
	t.Parallel()
	q := testenv.Queue(t)
	q2 := q + "-broken"
	// A Redis of the test's own: the broken queue would break every
	// listing of the queues (the CLI's, the dashboard's) of tests that
	// share a server.
	env := testenv.IsolatedRedis(t, 0)
	r := &told{}
	c, err := client.New(context.Background(), env.RDB, &client.Config{DefaultQueue: q, EnqueuedHooks: []client.EnqueuedHook{r.hook}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "warm"}, &client.EnqueueOpts{Queue: q2}); err != nil {
		t.Fatal(err)
	}
	r.take()
	// The client made q2's stream and group already: it will not again.
	// A string in the stream's place fails q2's script call.
	if err := env.RDB.Set(ctx, keys.ForQueue(q2).Stream(), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	hs, err := c.EnqueueMany(ctx, []client.Spec{
		{Args: PingArgs{Msg: "a"}},
		{Args: PingArgs{Msg: "lost"}, Opts: &client.EnqueueOpts{Queue: q2}},
		{Args: PingArgs{Msg: "b"}},
	})
	if err == nil {
		t.Fatal("EnqueueMany with a broken queue succeeded")
	}
	if hs != nil {
		t.Fatalf("EnqueueMany returned handles %v with its error", hs)
	}
	got := r.take()
	if msgs(got) != "a b" || got[0].Queue != q || got[1].Queue != q {
		t.Fatalf("told %q (%+v); want a and b, the tasks of %s", msgs(got), got, q)
	}
	n, err := env.RDB.XLen(ctx, keys.ForQueue(q).Stream()).Result()
	if err != nil || n != 2 {
		t.Fatalf("%s holds %d tasks (%v); want the 2 told of", q, n, err)
	}
}

// Continuations are told of once registered, with Continues set; a group's
// members, its join, a nested group's members and a group's continuation
// carry their group and what they continue.
func TestEnqueuedHookPatterns(t *testing.T) {
	t.Parallel()
	q := testenv.Queue(t)
	c, _, r := newToldClient(t, q)
	ctx := context.Background()
	h, err := c.Enqueue(ctx, PingArgs{Msg: "first"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.take()
	next, err := h.ContinueWith(ctx, PingArgs{Msg: "next"}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{ID: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	got := r.take()
	if len(got) != 1 || got[0].ID != next.ID() || got[0].Continues != h.ID() || got[0].Duplicate {
		t.Fatalf("told %+v; want continuation %s of %s", got, next.ID(), h.ID())
	}
	// A continuation of an unknown task is not registered: nothing told.
	ghost, err := c.Enqueue(ctx, PingArgs{Msg: "ghost"}, &client.EnqueueOpts{ID: "ghost"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ghost.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	r.take()
	if _, err := c.Enqueue(ctx, PingArgs{Msg: "x"}, &client.EnqueueOpts{Queue: q, ID: "y"}); err != nil {
		t.Fatal(err)
	}
	r.take()

	join := client.Spec{Args: PingArgs{Msg: "join"}}
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{
		{Args: PingArgs{Msg: "g0"}},
		{Args: PingArgs{Msg: "g1"}, Opts: &client.EnqueueOpts{Queue: q + "-other"}},
		patterns.Sub([]client.Spec{{Args: PingArgs{Msg: "s0"}}}, nil, nil),
	}, &join, nil)
	if err != nil {
		t.Fatal(err)
	}
	got = r.take()
	byMsg := map[string]client.Enqueued{}
	for _, e := range got {
		byMsg[e.Args.(PingArgs).Msg] = e
	}
	if len(got) != 4 || len(byMsg) != 4 {
		t.Fatalf("told %q; want g0 g1 s0 join once each", msgs(got))
	}
	if e := byMsg["join"]; e.Continues != g.ID() {
		t.Fatalf("join told %+v; want it to continue %s", e, g.ID())
	}
	for _, m := range []string{"g0", "g1"} {
		if e := byMsg[m]; e.Group != g.ID() || e.Continues != "" {
			t.Fatalf("member %s told %+v; want group %s", m, e, g.ID())
		}
	}
	if e := byMsg["s0"]; e.Group == "" || e.Group == g.ID() || !strings.HasPrefix(e.Group, g.ID()) {
		t.Fatalf("nested member told %+v; want the nested group of %s", e, g.ID())
	}
	cont, err := g.ContinueWith(ctx, PingArgs{Msg: "after"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 1 || got[0].ID != cont.ID() || got[0].Continues != g.ID() {
		t.Fatalf("told %+v; want the group's continuation %s", got, cont.ID())
	}

	// InvokeAll (held members), Throttle (rated), Spread (delayed).
	for name, start := range map[string]func() (*patterns.Group, error){
		"invokeall": func() (*patterns.Group, error) {
			return patterns.InvokeAll(ctx, c, []client.Spec{{Args: PingArgs{Msg: "i0"}}, {Args: PingArgs{Msg: "i1"}}}, 1, nil)
		},
		"throttle": func() (*patterns.Group, error) {
			return patterns.Throttle(ctx, c, []client.Spec{{Args: PingArgs{Msg: "t0"}}, {Args: PingArgs{Msg: "t1"}}}, 10, time.Second, nil)
		},
		"spread": func() (*patterns.Group, error) {
			return patterns.Spread(ctx, c, []client.Spec{{Args: PingArgs{Msg: "p0"}}, {Args: PingArgs{Msg: "p1"}}}, time.Minute, nil)
		},
	} {
		g, err := start()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := r.take()
		if len(got) != 2 || got[0].Group != g.ID() || got[1].Group != g.ID() {
			t.Fatalf("%s told %+v; want its 2 members in group %s", name, got, g.ID())
		}
	}

	// Partition: one task per key, members of its group.
	p, err := patterns.Partition(ctx, c, []string{"a1", "b1", "a2"}, func(s string) string { return s[:1] },
		func(key string, items []string) client.Spec { return client.Spec{Args: PingArgs{Msg: key}} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.take(); msgs(got) != "a b" || got[0].Group != p.ID() {
		t.Fatalf("partition told %q (%+v); want a b in group %s", msgs(got), got, p.ID())
	}

	// A batch's items.
	b, err := patterns.NewBatch[PingArgs, string](c, &patterns.BatchOpts{MaxSize: 10, MaxWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bh, err := b.Append(ctx, PingArgs{Msg: "b0"})
	if err != nil {
		t.Fatal(err)
	}
	bhs, err := b.AppendMany(ctx, []PingArgs{{Msg: "b1"}, {Msg: "b2"}})
	if err != nil {
		t.Fatal(err)
	}
	got = r.take()
	if msgs(got) != "b0 b1 b2" || got[0].ID != bh.ID() || got[2].ID != bhs[1].ID() || got[0].Queue != q || got[0].Opts.MaxAttempts != 25 {
		t.Fatalf("batch told %+v; want items b0 b1 b2 as %s...", got, bh.ID())
	}
	// A repeat schedule's template is not a task.
	if _, err := patterns.Repeat(ctx, c, "every-hour", client.Spec{Args: PingArgs{Msg: "rep"}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); len(got) != 0 {
		t.Fatalf("repeat told of %q", msgs(got))
	}
}

// A task enqueued from a handler's ctx is told of with its Parent, on the
// handler's goroutine with the handler's ctx; so is its continuation.
func TestEnqueuedHookParent(t *testing.T) {
	t.Parallel()
	q := testenv.Queue(t)
	type seen struct {
		e       client.Enqueued
		handler bool
	}
	var mu sync.Mutex
	var all []seen
	hook := func(ctx context.Context, e *client.Enqueued) {
		_, in := worker.TaskFromContext(ctx)
		mu.Lock()
		all = append(all, seen{*e, in})
		mu.Unlock()
	}
	c, env := newClient(t, &client.Config{DefaultQueue: q, EnqueuedHooks: []client.EnqueuedHook{hook}})
	kids := make(chan [2]string, 1)
	testenv.StartWorker(t, env.RDB, q, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a PingArgs) (string, error) {
			if a.Msg != "parent" {
				return "", nil
			}
			k, err := c.Enqueue(ctx, PingArgs{Msg: "kid"}, nil)
			if err != nil {
				return "", err
			}
			n, err := k.ContinueWith(ctx, PingArgs{Msg: "kid-next"}, nil)
			if err != nil {
				return "", err
			}
			kids <- [2]string{k.ID(), n.ID()}
			return "", nil
		})
	}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := c.Enqueue(ctx, PingArgs{Msg: "parent"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	ids := <-kids
	mu.Lock()
	defer mu.Unlock()
	if len(all) != 3 {
		t.Fatalf("told of %d tasks, want 3", len(all))
	}
	// The parent's hook runs once its Enqueue has its answer, which may be
	// after the worker ran it and its handler enqueued the child: the
	// parent's place among the three is not fixed; the child's and the
	// continuation's, told on the handler's goroutine, are in that order.
	i := slices.IndexFunc(all, func(s seen) bool { return s.e.ID == h.ID() })
	if i < 0 || all[i].e.Parent != "" || all[i].handler {
		t.Fatalf("parent %s told as %+v", h.ID(), all)
	}
	all = slices.Delete(all, i, i+1)
	if s := all[0]; s.e.ID != ids[0] || s.e.Parent != h.ID() || !s.handler {
		t.Fatalf("child told %+v (handler ctx %v); want %s, parent %s, the handler's ctx", s.e, s.handler, ids[0], h.ID())
	}
	if s := all[1]; s.e.ID != ids[1] || s.e.Parent != h.ID() || s.e.Continues != ids[0] || !s.handler {
		t.Fatalf("continuation told %+v; want %s, parent %s, continuing %s", s.e, ids[1], h.ID(), ids[0])
	}
}

// A nil EnqueuedHook is refused by New.
func TestEnqueuedHookNilRefused(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	_, err := client.New(context.Background(), env.RDB, &client.Config{EnqueuedHooks: []client.EnqueuedHook{nil}})
	if err == nil || !strings.Contains(err.Error(), "EnqueuedHooks[0] is nil") {
		t.Fatalf("New with a nil EnqueuedHook: %v", err)
	}
}
