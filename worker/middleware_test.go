package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

type mwArgs struct {
	N     int
	Fail  bool
	Panic bool
}

func (mwArgs) Kind() string { return "mw" }

// trail records the steps of middleware and handlers, in order.
type trail struct {
	mu    sync.Mutex
	steps []string
}

func (tr *trail) add(s string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.steps = append(tr.steps, s)
}

func (tr *trail) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return strings.Join(tr.steps, " ")
}

// named is a middleware that records when an attempt goes in and comes out.
func named(tr *trail, name string) worker.Middleware {
	return func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			tr.add(name + ">")
			res, err := next.Handle(ctx, a)
			tr.add("<" + name)
			return res, err
		})
	}
}

// Config.Middleware wraps the handler first outermost; Use adds more
// inside them. Each sees the attempt: the task, its args (decoded with
// DecodeArgs) and the result on its way out.
func TestMiddlewareOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	tr := &trail{}
	var seen []worker.Attempt
	var seenArgs []mwArgs
	look := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			var args mwArgs
			if err := a.DecodeArgs(&args); err != nil {
				return nil, err
			}
			tk, _ := worker.TaskFromContext(ctx)
			if tk != a.Task {
				return nil, fmt.Errorf("the attempt names %+v, the ctx %+v", a.Task, tk)
			}
			seen, seenArgs = append(seen, *a), append(seenArgs, args)
			return next.Handle(ctx, a)
		})
	}
	b.worker(t, &worker.Config{Middleware: []worker.Middleware{named(tr, "a"), look, named(tr, "b")}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mwArgs) (int, error) {
			tr.add("handler")
			return a.N * 2, nil
		})
		w.Use(named(tr, "c"), named(tr, "d"))
	})
	h, err := b.c.Enqueue(ctx, mwArgs{N: 21}, &client.EnqueueOpts{Queue: b.queue, Meta: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := client.Result[int](ctx, h); err != nil || n != 42 {
		t.Fatalf("got %d, %v; want 42", n, err)
	}
	if got, want := tr.String(), "a> b> c> d> handler <d <c <b <a"; got != want {
		t.Fatalf("order %q; want %q", got, want)
	}
	if len(seen) != 1 || seen[0].ID != h.ID() || seen[0].Kind != "mw" || seen[0].Queue != b.queue || seen[0].Attempt != 1 ||
		seen[0].Meta["k"] != "v" || seenArgs[0].N != 21 {
		t.Fatalf("the middleware saw %+v with args %+v", seen, seenArgs)
	}
}

// Use after Start panics; a nil middleware is refused.
func TestMiddlewareMisuse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mwArgs) (int, error) { return 0, nil })
	})
	func() {
		defer func() {
			if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "already started") {
				t.Errorf("Use after Start: recovered %v; want a panic about the started worker", r)
			}
		}()
		w.Use(named(&trail{}, "late"))
	}()
	_, err := worker.New(context.Background(), b.env.RDB, &worker.Config{Middleware: []worker.Middleware{nil}})
	if err == nil || !strings.Contains(err.Error(), "Config.Middleware[0] is nil") {
		t.Fatalf("nil middleware: %v; want refused", err)
	}
}

// A middleware may change the handler's error (here: every error is final,
// so a task of five attempts dies after one) or answer in the handler's
// place with a result of its own.
func TestMiddlewareChangesOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	final := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			res, err := next.Handle(ctx, a)
			if err != nil {
				return nil, worker.Permanent(fmt.Errorf("final: %w", err))
			}
			return res, nil
		})
	}
	cached := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			var args mwArgs
			if err := a.DecodeArgs(&args); err != nil {
				return nil, err
			}
			if args.N == 7 {
				return worker.EncodeResult(700)
			}
			return next.Handle(ctx, a)
		})
	}
	tr := &trail{}
	b.worker(t, &worker.Config{Middleware: []worker.Middleware{final, cached}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mwArgs) (int, error) {
			tr.add(fmt.Sprint(a.N))
			if a.Fail {
				return 0, errors.New("nope")
			}
			return a.N, nil
		})
	})
	h, err := b.c.Enqueue(ctx, mwArgs{Fail: true}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || te.State != client.StateDead || te.Attempt != 1 || te.Message != "permanent: final: nope" {
		t.Fatalf("got %v; want dead after 1 attempt with the middleware's error", err)
	}
	h, err = b.c.Enqueue(ctx, mwArgs{N: 7}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := client.Result[int](ctx, h); err != nil || n != 700 {
		t.Fatalf("got %d, %v; want the middleware's 700", n, err)
	}
	if got := tr.String(); got != "0" {
		t.Fatalf("the handler ran for %q; want only the failing task (0)", got)
	}
}

// A middleware may recover a handler's panic its own way; a panic no
// middleware recovers (one of a middleware, too) is the worker's: a failed
// attempt whose error is a *PanicError.
func TestMiddlewareRecoversPanics(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	polite := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) (res []byte, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = worker.Permanent(fmt.Errorf("recovered: %v", r))
				}
			}()
			return next.Handle(ctx, a)
		})
	}
	rude := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			if a.Meta["rude"] != "" {
				panic("middleware says no")
			}
			return next.Handle(ctx, a)
		})
	}
	b.worker(t, &worker.Config{Middleware: []worker.Middleware{rude, polite}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mwArgs) (int, error) {
			if a.Panic {
				panic("handler blew up")
			}
			return a.N, nil
		})
	})
	h, err := b.c.Enqueue(ctx, mwArgs{Panic: true}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || te.State != client.StateDead || te.Attempt != 1 || te.Message != "permanent: recovered: handler blew up" {
		t.Fatalf("got %v; want dead after 1 attempt, recovered by the middleware", err)
	}
	h, err = b.c.Enqueue(ctx, mwArgs{N: 1}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 1, Meta: map[string]string{"rude": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	if !errors.As(err, &te) || te.State != client.StateDead || !strings.HasPrefix(te.Message, "handler panicked: middleware says no") {
		t.Fatalf("got %v; want dead with the worker's panic error", err)
	}
}

type tenantKey struct{}

// A tenancy middleware: it reads the task's metadata, refuses a task
// without a tenant, and hands the handler the tenant in its ctx. A child
// enqueued from the handler inherits the tenant through its metadata.
func TestMiddlewareTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	tenancy := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			tenant := a.Meta["tenant"]
			if tenant == "" {
				return nil, worker.Permanent(errors.New("no tenant"))
			}
			return next.Handle(context.WithValue(ctx, tenantKey{}, tenant), a)
		})
	}
	children := make(chan *client.Handle, 1)
	b.worker(t, &worker.Config{Middleware: []worker.Middleware{tenancy}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a mwArgs) (string, error) {
			tenant, _ := ctx.Value(tenantKey{}).(string)
			if a.N == 1 {
				h, err := b.c.Enqueue(ctx, mwArgs{N: 2}, &client.EnqueueOpts{Queue: b.queue})
				if err != nil {
					return "", err
				}
				children <- h
			}
			return tenant, nil
		})
	})
	h, err := b.c.Enqueue(ctx, mwArgs{N: 1}, &client.EnqueueOpts{Queue: b.queue, Meta: map[string]string{"tenant": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := client.Result[string](ctx, h); err != nil || got != "acme" {
		t.Fatalf("got %q, %v; want acme", got, err)
	}
	if got, err := client.Result[string](ctx, <-children); err != nil || got != "acme" {
		t.Fatalf("child: got %q, %v; want acme, inherited", got, err)
	}
	h, err = b.c.Enqueue(ctx, mwArgs{N: 3}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	var te *client.TaskError
	if !errors.As(err, &te) || te.State != client.StateDead || te.Message != "permanent: no tenant" {
		t.Fatalf("got %v; want refused for want of a tenant", err)
	}
}

type mwItem int

func (mwItem) Kind() string { return "mw-item" }

// Middleware wraps batch handlers too; one that rewrites every error does
// not turn a batch that recorded its items itself into a failure.
func TestMiddlewareAroundBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var kinds []string
	var mu sync.Mutex
	rewrite := func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			mu.Lock()
			kinds = append(kinds, a.Kind)
			mu.Unlock()
			res, err := next.Handle(ctx, a)
			if err != nil {
				return nil, errors.New("rewritten")
			}
			return res, nil
		})
	}
	b.worker(t, &worker.Config{Middleware: []worker.Middleware{rewrite}}, func(w *worker.Worker) {
		worker.HandleBatch(w, func(ctx context.Context, items []mwItem) ([]int, error) {
			out := make([]int, len(items))
			for i, it := range items {
				out[i] = int(it) * 3
			}
			return out, nil
		})
	})
	testenv.StartCoordinators(t, b.env, 1)
	bt, err := patterns.NewBatch[mwItem, int](b.c, &patterns.BatchOpts{MaxSize: 3, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []mwItem{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if n, err := client.Result[int](ctx, h); err != nil || n != 3*(i+1) {
			t.Fatalf("item %d: %d, %v; want %d", i, n, err, 3*(i+1))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(kinds) != 1 || kinds[0] != "mw-item" {
		t.Fatalf("the middleware saw %v; want one batch of mw-item", kinds)
	}
}
