package asynctest

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// A handler run alone keeps its last report on the run's result, and
// writes nothing to Redis.
func TestRunKeepsLastProgress(t *testing.T) {
	f := runFleet(t, nil)
	before := time.Now()
	res := Run(f, func(ctx context.Context, a runGreet) (string, error) {
		for i := int64(0); i <= 10; i++ {
			worker.ReportProgress(ctx, i*10, 100)
		}
		worker.ReportProgress(ctx, 70, 100) // the last one counts, even if lower
		return "", nil
	}, runGreet{Name: "ada"}, &RunOpts{ID: "reports/task-8", Attempt: 2, MaxAttempts: 3})
	p := res.Progress
	if !p.Reported() || p.Done != 70 || p.Total != 100 || p.Attempt != 2 || p.Updated.Before(before) {
		t.Fatalf("RunResult.Progress = %+v; want 70/100 of attempt 2", p)
	}
	ctx := context.Background()
	if n := f.rdb.Exists(ctx, keys.ForQueue("reports").Progress("task-8")).Val(); n != 0 {
		t.Fatal("a handler run alone wrote its report to Redis")
	}
	none := Run(f, func(ctx context.Context, a runGreet) (string, error) { return "", nil }, runGreet{}, nil)
	if none.Progress.Reported() {
		t.Fatalf("a handler that reported nothing: %+v", none.Progress)
	}
}
