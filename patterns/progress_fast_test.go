package patterns_test

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Quick is a member that reports its size and returns at once, long before
// a progress write is due.
type Quick struct{ Size int64 }

func (Quick) Kind() string { return "quick" }

// The members of a group that succeed before their first progress write
// was due still count in the group's byte sums: their total in WorkTotal,
// and all of it in WorkDone once they ended.
func TestGroupProgressCountsFastMembers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Quick) (int, error) {
			worker.ReportProgress(ctx, 0, a.Size)
			worker.ReportProgress(ctx, a.Size/3, a.Size)
			return 0, nil
		})
	})
	var specs []client.Spec
	var sum int64
	for i := range 12 {
		size := int64(1000 + 37*i)
		sum += size
		specs = append(specs, client.Spec{Args: Quick{Size: size}, Opts: &client.EnqueueOpts{Queue: b.queue}})
	}
	g, err := patterns.ForkJoin(ctx, b.c, specs, nil, &patterns.GroupOpts{Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != patterns.GroupSucceeded || p.WorkTotal != sum || p.WorkDone != sum {
		t.Fatalf("at the end: %+v; want %d of %d bytes done, succeeded", p, sum, sum)
	}
}
