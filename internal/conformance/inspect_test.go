package conformance

import (
	"fmt"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// inspectRows are the inspector's writing operations (issue 15): pause and
// resume, the bulk dead-letter and cancel operations, and the read of
// groups that prunes the index of groups; and the forced delete of a queue
// (the dashboard's action).
func inspectRows() []Row {
	ins := func(r *Run) *inspect.Inspector { return inspect.New(r.RDB) }
	return []Row{
		{Name: "inspect.Pause", Op: func(r *Run) string { return Answer("", ins(r).Pause(r.Ctx, r.Q)) }},
		{Name: "inspect.Resume",
			Setup: func(r *Run) { r.Must(inspect.New(r.Env.RDB).Pause(r.Ctx, r.Q)) },
			Op:    func(r *Run) string { return Answer("", ins(r).Resume(r.Ctx, r.Q)) }},
		{Name: "inspect.RetryDead",
			Setup: func(r *Run) { r.H = []*client.Handle{r.deadTask(), r.deadTask()} },
			Op: func(r *Run) string {
				n, err := ins(r).RetryDead(r.Ctx, r.Q, "job")
				return Answer(n, err)
			}},
		{Name: "inspect.PurgeDead",
			Setup: func(r *Run) { r.H = []*client.Handle{r.deadTask(), r.deadTask()} },
			Op: func(r *Run) string {
				n, err := ins(r).PurgeDead(r.Ctx, r.Q, "")
				return Answer(n, err)
			}},
		{Name: "inspect.CancelAll",
			Setup: func(r *Run) {
				r.H = []*client.Handle{r.enqueue(1, nil), r.enqueue(2, &client.EnqueueOpts{ID: "a"}), r.enqueue(3, &client.EnqueueOpts{Delay: time.Hour})}
			},
			Op: func(r *Run) string {
				n, err := ins(r).CancelAll(r.Ctx, r.Q, inspect.StateWaiting)
				return Answer(n, err)
			}},
		// A group whose records expired: reading the groups drops it from
		// the index (groupprune.lua); a live one stays.
		{Name: "inspect.Groups/prune",
			Setup: func(r *Run) {
				for _, id := range []string{"gone", "live"} {
					g, err := patterns.ForkJoin(r.Ctx, r.C, r.specs(r.Q, 1), nil, &patterns.GroupOpts{ID: id + r.U})
					r.Must(err)
					r.G = append(r.G, g)
				}
				r.Must(r.Env.RDB.Del(r.Ctx, keys.ForQueue(r.Q).Group("gone"+r.U)).Err())
				r.TrackGroup(r.G[1])
			},
			Op: func(r *Run) string {
				gs, err := ins(r).Groups(r.Ctx, r.Q)
				var ids []string
				for _, g := range gs {
					ids = append(ids, g.ID)
				}
				return Answer(fmt.Sprint(ids), err)
			}},
		// The dashboard's "delete queue": a forced delete of a queue that
		// holds a waiting, a dead and a scheduled task.
		{Name: "inspect.DeleteQueue/force",
			Setup: func(r *Run) {
				r.H = []*client.Handle{r.deadTask(), r.enqueue(1, nil), r.enqueue(2, &client.EnqueueOpts{Delay: time.Hour})}
			},
			Op: func(r *Run) string { return Answer("", ins(r).DeleteQueue(r.Ctx, r.Q, true)) }},
	}
}

// registryRows are the worker's registration (issue 15): written at Start,
// refreshed when its queues' pause flags change, deleted by Stop.
func registryRows() []fleetRow {
	listed := func(f *fleetRun, name string) bool {
		ws, err := inspect.New(f.Env.RDB).Workers(f.Ctx)
		f.Must(err)
		for _, w := range ws {
			if w.Name == name {
				return true
			}
		}
		return false
	}
	return []fleetRow{
		{Name: "registry/start-pause-stop", Op: func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			at := listed(f, w.Name())
			f.Must(inspect.New(f.Env.RDB).Pause(f.Ctx, f.Q))
			paused := false
			testenv.Eventually(f.T, 10*time.Second, "the worker to list the queue paused", func() bool {
				ws, err := inspect.New(f.Env.RDB).Workers(f.Ctx)
				f.Must(err)
				for _, x := range ws {
					paused = paused || x.Name == w.Name() && len(x.Paused) == 1
				}
				return paused
			})
			if f.fault == "EVALSHA workerreg" {
				// The refresh wrote before its reply was lost: let
				// go-redis' resends go through before the stop cancels
				// them.
				testenv.Eventually(f.T, 10*time.Second, "the faulted registrations resent", func() bool {
					return f.Dropped() >= f.faultTimes
				})
			}
			f.stopWorker(w, false)
			return fmt.Sprintf("listed at start: %v, paused listed: %v, listed after stop: %v", at, paused, listed(f, w.Name()))
		}, Fault: func(name string, nth int) bool {
			switch name {
			case "EVALSHA workerreg", "DEL async:{coord}:w:<consumer>", "ZREM async:{coord}:workers":
				return true
			}
			return false
		}},
	}
}
