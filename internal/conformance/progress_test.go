package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// ProgressJob is the task of the progress rows: its handler reports 3 of
// 10, waits until the row saw the report written, and succeeds.
type ProgressJob struct{}

func (ProgressJob) Kind() string { return "progressjob" }

// TestResendConformanceProgress is the resend conformance suite of what
// worker.ReportProgress writes: pgset.lua for a task, and
// gpset.lua for a group member, each with its reply dropped once and
// twice; the end state (the reports, the group's sums) must be a clean
// run's.
func TestResendConformanceProgress(t *testing.T) {
	RunTable(t, progressRows())
}

func progressRows() []Row {
	// run starts a worker whose handler reports, waits until seen says the
	// report is in Redis (read on the Redis itself), and lets the handler
	// end; ended waits for the end. The answer is what Handle.Progress
	// reads then.
	run := func(r *Run, seen func() bool, ended func()) string {
		release := make(chan struct{})
		stop := r.StartWorker(&worker.Config{Logger: quiet}, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a ProgressJob) (int, error) {
				worker.ReportProgress(ctx, 3, 10)
				select {
				case <-release:
				case <-ctx.Done():
					return 0, context.Cause(ctx)
				}
				return 1, nil
			})
		})
		testenv.Eventually(r.T, 20*time.Second, "the first report written", seen)
		close(release)
		ended()
		stop()
		dh, err := r.Direct.Task(r.H[0].ID())
		r.Must(err)
		p, err := dh.Progress(r.Ctx)
		return Answer(fmt.Sprintf("%d/%d attempt %d reported %v", p.Done, p.Total, p.Attempt, p.Reported()), err)
	}
	reported := func(r *Run) func() bool {
		return func() bool {
			dh, err := r.Direct.Task(r.H[0].ID())
			r.Must(err)
			p, err := dh.Progress(r.Ctx)
			return err == nil && p.Reported()
		}
	}
	progressCalls := func(call string) bool {
		return strings.HasPrefix(call, "EVALSHA pgset") || strings.HasPrefix(call, "EVALSHA gpset")
	}
	return []Row{
		{
			Name: "progress/task",
			Setup: func(r *Run) {
				h, err := r.C.Enqueue(r.Ctx, ProgressJob{}, &client.EnqueueOpts{Queue: r.Q})
				r.Must(err)
				r.Track(h)
				r.H = []*client.Handle{h}
			},
			Op: func(r *Run) string {
				return run(r, reported(r), func() {
					dh, err := r.Direct.Task(r.H[0].ID())
					r.Must(err)
					_, err = dh.Outcome(r.Ctx)
					r.Must(err)
				})
			},
			Calls: progressCalls,
		},
		{
			Name: "progress/group-member",
			Setup: func(r *Run) {
				g, err := patterns.ForkJoin(r.Ctx, r.C, []client.Spec{{Args: ProgressJob{}, Opts: &client.EnqueueOpts{Queue: r.Q}}}, nil, nil)
				r.Must(err)
				r.TrackGroup(g)
				r.G = []*patterns.Group{g}
				ms, err := g.Members(r.Ctx)
				r.Must(err)
				r.H = []*client.Handle{ms[0]}
				r.Track(ms[0])
			},
			Op: func(r *Run) string {
				g, err := patterns.Open(r.Direct, r.G[0].ID())
				r.Must(err)
				return run(r, func() bool {
					p, err := g.Progress(r.Ctx)
					return err == nil && p.WorkTotal == 10
				}, func() {
					_, err := g.Wait(r.Ctx)
					r.Must(err)
				})
			},
			Calls: progressCalls,
		},
	}
}
