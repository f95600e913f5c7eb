package patterns_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// joins records what join handlers saw, per tag.
type joins struct {
	mu   sync.Mutex
	runs map[string]int
	got  map[string][]int
	errs map[string]error
	done chan string
}

func newJoins() *joins {
	return &joins{runs: map[string]int{}, got: map[string][]int{}, errs: map[string]error{}, done: make(chan string, 100)}
}

func (j *joins) handler(ctx context.Context, a Sum) (int, error) {
	vals, err := patterns.JoinResults[int](ctx)
	total := 0
	for _, v := range vals {
		total += v
	}
	j.mu.Lock()
	j.runs[a.Tag]++
	j.got[a.Tag] = vals
	j.errs[a.Tag] = err
	j.mu.Unlock()
	j.done <- a.Tag
	return total, nil
}

func (j *joins) wait(t *testing.T, ctx context.Context, tag string) {
	t.Helper()
	for {
		select {
		case got := <-j.done:
			if got == tag {
				return
			}
		case <-ctx.Done():
			t.Fatalf("join %s did not run: %v", tag, ctx.Err())
		}
	}
}

func TestForkJoinResultsInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	ns := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, ns...), &client.Spec{Args: Sum{Tag: "a"}, Opts: &client.EnqueueOpts{Queue: b.queue}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := patterns.Results[int](ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{1, 4, 9, 16, 25, 36, 49, 64, 81, 100}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("results %v, want %v", res, want)
	}
	js.wait(t, ctx, "a")
	js.mu.Lock()
	if !reflect.DeepEqual(js.got["a"], want) || js.errs["a"] != nil || js.runs["a"] != 1 {
		t.Errorf("join saw %v, %v, ran %d times", js.got["a"], js.errs["a"], js.runs["a"])
	}
	js.mu.Unlock()
	p, err := g.Progress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != patterns.GroupSucceeded || p.Total != 10 || p.Succeeded != 10 || p.Failed != 0 || p.Done() != 10 {
		t.Errorf("progress %+v", p)
	}
	jh, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := client.Result[int](ctx, jh)
	if err != nil || sum != 385 {
		t.Errorf("join result %d, %v", sum, err)
	}
}

// idOf is the group's own id (after "group:<queue>/").
func idOf(g *patterns.Group) string {
	id := g.ID()
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '/' {
			return id[i+1:]
		}
	}
	return id
}

func TestForkJoinFailureStillJoins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js := newJoins()
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, square)
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 2, -1, 3), &client.Spec{Args: Sum{Tag: "f"}, Opts: &client.EnqueueOpts{Queue: b.queue}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := g.Outcome(ctx)
	if !errors.Is(err, client.ErrDead) {
		t.Fatalf("outcome error %v, want one matching ErrDead", err)
	}
	if len(outs) != 3 || outs[0].State != client.StateSucceeded || outs[1].State != client.StateDead || outs[2].State != client.StateSucceeded {
		t.Fatalf("outcomes %+v", outs)
	}
	js.wait(t, ctx, "f")
	js.mu.Lock()
	defer js.mu.Unlock()
	if !reflect.DeepEqual(js.got["f"], []int{4, 0, 9}) || !errors.Is(js.errs["f"], client.ErrDead) {
		t.Errorf("join saw %v, %v", js.got["f"], js.errs["f"])
	}
	p, _ := g.Progress(ctx)
	if p.State != patterns.GroupFailed || p.Failed != 1 || p.Succeeded != 2 {
		t.Errorf("progress %+v", p)
	}
}
