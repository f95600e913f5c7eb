package asynctest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Size is a fork's member: its result is its size.
type Size struct{ N int }

func (Size) Kind() string { return "kit.size" }

// Total is the join: it sums its members' results.
type Total struct{}

func (Total) Kind() string { return "kit.total" }

// Step is a link of a chain: it adds Add to its parent's result.
type Step struct{ Add int }

func (Step) Kind() string { return "kit.step" }

func registerForkJoin(w *worker.Worker) {
	worker.Handle(w, func(ctx context.Context, a Size) (int, error) { return a.N, nil })
	worker.Handle(w, func(ctx context.Context, _ Total) (int, error) {
		ns, err := patterns.JoinResults[int](ctx)
		if err != nil {
			return 0, err
		}
		sum := 0
		for _, n := range ns {
			sum += n
		}
		return sum, nil
	})
	worker.Handle(w, func(ctx context.Context, a Step) (int, error) {
		n, err := worker.ParentResult[int](ctx)
		return n + a.Add, err
	})
}

// forkJoinChain runs a ForkJoin of three members with a join, then a chain
// of three links after the join, and returns the chain's result.
func forkJoinChain(tb testing.TB) int {
	f := NewFleet(tb, registerForkJoin, nil)
	ctx := context.Background()
	c := f.Client()
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Size{1}}, {Args: Size{2}}, {Args: Size{3}}},
		&client.Spec{Args: Total{}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := g.Join(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if h, err = h.ContinueWith(ctx, Step{Add: 10 * i}, nil); err != nil {
			tb.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := client.Result[int](wctx, h)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// The measure: a ForkJoin with a join, then a 3-link chain, from
// NewFleet to the result and the fleet's cleanup (see
// BenchmarkFleetForkJoinChain for the time).
func TestForkJoinJoinAndChainFast(t *testing.T) {
	t.Parallel()
	var n int
	t.Run("fleet", func(t *testing.T) { n = forkJoinChain(t) })
	if n != 1+2+3+10+20+30 {
		t.Fatalf("result %d, want 66", n)
	}
}

// BenchmarkFleetForkJoinChain measures TestForkJoinJoinAndChainFast's
// fleet, whole: NewFleet, the runs, and the cleanup (stops and leak check).
func BenchmarkFleetForkJoinChain(b *testing.B) {
	for i := 0; i < b.N; i++ {
		tb := newFakeTB(b, b.Name())
		n := 0
		tb.run(func(tb testing.TB) { n = forkJoinChain(tb) })
		if errs := tb.failures(); len(errs) > 0 || n != 66 {
			b.Fatalf("result %d, failures: %s", n, strings.Join(errs, "; "))
		}
	}
}
