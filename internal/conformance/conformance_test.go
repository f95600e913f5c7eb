package conformance

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// Job is the task of the table; a negative N fails for good.
type Job struct{ N int }

func (Job) Kind() string { return "job" }

func runJob(_ context.Context, j Job) (int, error) {
	if j.N < 0 {
		return 0, worker.Permanent(errors.New("negative"))
	}
	return j.N, nil
}

// enqueue adds a task through the proxy (in a Setup: no rule is set yet).
func (r *Run) enqueue(n int, opts *client.EnqueueOpts) *client.Handle {
	r.T.Helper()
	if opts == nil {
		opts = &client.EnqueueOpts{}
	}
	if opts.Queue == "" {
		opts.Queue = r.Q
	}
	h, err := r.C.Enqueue(r.Ctx, Job{N: n}, opts)
	r.Must(err)
	r.Track(h)
	return h
}

// deadTask makes a task in r.Q that a worker (on the Redis itself, stopped
// before this returns) dead-letters.
func (r *Run) deadTask() *client.Handle {
	r.T.Helper()
	h := r.enqueue(-1, &client.EnqueueOpts{MaxAttempts: 1})
	w, err := worker.New(context.Background(), r.Env.RDB, &worker.Config{Queues: map[string]int{r.Q: 1},
		BlockTimeout: 50 * time.Millisecond, Backoff: func(int) time.Duration { return 5 * time.Millisecond }})
	r.Must(err)
	worker.Handle(w, runJob)
	r.Must(w.Start(r.Ctx))
	var st client.State
	var serr error
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, serr = h.State(r.Ctx)
		if st == client.StateDead || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-r.Ctx.Done():
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.Must(w.Stop(ctx))
	if st != client.StateDead {
		r.T.Fatalf("the setup task is %s (%v), not dead", st, serr)
	}
	return h
}

// task is h's handle on the client under test.
func (r *Run) task(h *client.Handle) *client.Handle {
	r.T.Helper()
	t, err := r.C.Task(h.ID())
	r.Must(err)
	return t
}

func handlesText(hs []*client.Handle) string {
	var s []string
	for _, h := range hs {
		s = append(s, HandleText(h))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func groupText(g *patterns.Group) string {
	if g == nil {
		return "<nil group>"
	}
	return fmt.Sprintf("%s dup=%v", g.ID(), g.Duplicate())
}

func (r *Run) specs(q string, ns ...int) []client.Spec {
	var out []client.Spec
	for _, n := range ns {
		out = append(out, client.Spec{Args: Job{N: n}, Opts: &client.EnqueueOpts{Queue: q}})
	}
	return out
}

func clientRows() []Row {
	enq := func(opts func(r *Run) *client.EnqueueOpts) func(r *Run) string {
		return func(r *Run) string {
			h, err := r.C.Enqueue(r.Ctx, Job{N: 1}, opts(r))
			r.Track(h)
			return Answer(HandleText(h), err)
		}
	}
	cancel := func(r *Run) string {
		st, err := r.task(r.H[0]).Cancel(r.Ctx)
		return Answer(st, err)
	}
	return []Row{
		{Name: "Enqueue", Op: enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q} })},
		{Name: "Enqueue/ID", Op: enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q, ID: "a"} })},
		{Name: "Enqueue/delayed", Op: enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q, Delay: time.Hour} })},
		{Name: "Enqueue/partition-first", Op: enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q, PartitionKey: "k"} })},
		{Name: "Enqueue/partition-behind",
			Setup: func(r *Run) { r.enqueue(0, &client.EnqueueOpts{PartitionKey: "k"}) },
			Op:    enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q, PartitionKey: "k"} })},
		// Enqueued from a handler's ctx: the task, then its record under
		// its parent (kidsadd.lua), each resent.
		{Name: "Enqueue/child",
			Setup: func(r *Run) { r.H = []*client.Handle{r.enqueue(1, nil)} },
			Op: func(r *Run) string {
				hctx := engine.WithInfo(r.Ctx, &engine.TaskInfo{ID: r.H[0].ID()})
				h, err := r.C.Enqueue(hctx, Job{N: 2}, &client.EnqueueOpts{Queue: r.Q})
				r.Track(h)
				return Answer(HandleText(h), err)
			}},
		{Name: "EnqueueMany", Op: func(r *Run) string {
			specs := []client.Spec{
				{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: r.Q}},
				{Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: r.Q, ID: "a"}},
				{Args: Job{N: 3}, Opts: &client.EnqueueOpts{Queue: r.Q, Delay: time.Hour}},
				{Args: Job{N: 4}, Opts: &client.EnqueueOpts{Queue: r.Q, PartitionKey: "k"}},
				{Args: Job{N: 5}, Opts: &client.EnqueueOpts{Queue: r.Q, PartitionKey: "k"}},
				{Args: Job{N: 6}, Opts: &client.EnqueueOpts{Queue: r.Q2, ID: "b"}},
			}
			hs, err := r.C.EnqueueMany(r.Ctx, specs)
			r.Track(hs...)
			return Answer(handlesText(hs), err)
		}},
		{Name: "Cancel/pending",
			Setup: func(r *Run) { r.H = []*client.Handle{r.enqueue(1, nil)} },
			Op:    cancel},
		{Name: "Cancel/delayed",
			Setup: func(r *Run) { r.H = []*client.Handle{r.enqueue(1, &client.EnqueueOpts{Delay: time.Hour})} },
			Op:    cancel},
		{Name: "Cancel/partition-head",
			Setup: func(r *Run) {
				r.H = []*client.Handle{r.enqueue(1, &client.EnqueueOpts{PartitionKey: "k"})}
				r.enqueue(2, &client.EnqueueOpts{PartitionKey: "k"})
			},
			Op: cancel},
		{Name: "Cancel/partition-behind",
			Setup: func(r *Run) {
				r.enqueue(1, &client.EnqueueOpts{PartitionKey: "k"})
				r.H = []*client.Handle{r.enqueue(2, &client.EnqueueOpts{PartitionKey: "k"})}
			},
			Op: cancel},
		// A task waiting between the head and another: cancel.lua answers
		// its partition, then, called again with the partition's list,
		// takes it out of the list (the head and the task behind stay).
		{Name: "Cancel/partition-middle",
			Setup: func(r *Run) {
				r.enqueue(1, &client.EnqueueOpts{PartitionKey: "k"})
				r.H = []*client.Handle{r.enqueue(2, &client.EnqueueOpts{PartitionKey: "k"})}
				r.enqueue(3, &client.EnqueueOpts{PartitionKey: "k"})
			},
			Op: cancel},
		// The queue's group made with its exact waiting count (groupmk.lua).
		{Name: "EnsureGroup", Op: func(r *Run) string {
			return Answer("", store.EnsureGroup(r.Ctx, r.RDB, keys.ForQueue(r.Q+"-new")))
		}},
		{Name: "Cancel/with-continuation",
			Setup: func(r *Run) {
				h := r.enqueue(1, nil)
				next, err := h.ContinueWith(r.Ctx, Job{N: 2}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: r.Q2}})
				r.Must(err)
				r.Track(next)
				r.H = []*client.Handle{h}
			},
			Op: cancel},
		{Name: "CancelAll",
			Setup: func(r *Run) {
				r.H = []*client.Handle{r.enqueue(1, nil), r.enqueue(2, &client.EnqueueOpts{Queue: r.Q2})}
			},
			Op: func(r *Run) string {
				return Answer("", client.CancelAll(r.Ctx, r.task(r.H[0]), r.task(r.H[1])))
			}},
		{Name: "ContinueWith/pending-parent",
			Setup: func(r *Run) { r.H = []*client.Handle{r.enqueue(1, nil)} },
			Op: func(r *Run) string {
				next, err := r.task(r.H[0]).ContinueWith(r.Ctx, Job{N: 2}, nil)
				r.Track(next)
				return Answer(HandleText(next), err)
			}},
		{Name: "ContinueWith/ended-parent",
			Setup: func(r *Run) {
				h := r.enqueue(1, nil)
				_, err := h.Cancel(r.Ctx)
				r.Must(err)
				r.H = []*client.Handle{h}
			},
			Op: func(r *Run) string {
				next, err := r.task(r.H[0]).ContinueWith(r.Ctx, Job{N: 2}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: r.Q2}})
				r.Track(next)
				return Answer(HandleText(next), err)
			}},
		{Name: "ContinueWith/ended-parent-only-on-success",
			Setup: func(r *Run) {
				h := r.enqueue(1, nil)
				_, err := h.Cancel(r.Ctx)
				r.Must(err)
				r.H = []*client.Handle{h}
			},
			Op: func(r *Run) string {
				next, err := r.task(r.H[0]).ContinueWith(r.Ctx, Job{N: 2}, &client.ContinueOpts{OnlyOnSuccess: true, EnqueueOpts: client.EnqueueOpts{ID: "n"}})
				r.Track(next)
				return Answer(HandleText(next), err)
			}},
		{Name: "RetryDead",
			Setup: func(r *Run) { r.H = []*client.Handle{r.deadTask()} },
			Op: func(r *Run) string {
				h, err := r.C.RetryDead(r.Ctx, r.H[0].ID())
				return Answer(HandleText(h), err)
			}},
		{Name: "PurgeDead",
			Setup: func(r *Run) { r.H = []*client.Handle{r.deadTask()} },
			Op: func(r *Run) string {
				return Answer("", r.C.PurgeDead(r.Ctx, r.H[0].ID()))
			}},
	}
}

func groupRows() []Row {
	forkJoin := func(r *Run) (*patterns.Group, error) {
		return patterns.ForkJoin(r.Ctx, r.C, r.specs(r.Q, 1, 2), &client.Spec{Args: Job{N: 9}, Opts: &client.EnqueueOpts{Queue: r.Q}}, nil)
	}
	created := func(make func(r *Run) (*patterns.Group, error)) func(r *Run) string {
		return func(r *Run) string {
			g, err := make(r)
			if g != nil {
				r.TrackGroup(g)
			}
			return Answer(groupText(g), err)
		}
	}
	setupGroup := func(make func(r *Run) (*patterns.Group, error), cancel bool) func(r *Run) {
		return func(r *Run) {
			g, err := make(r)
			r.Must(err)
			r.TrackGroup(g)
			if cancel {
				r.Must(g.Cancel(r.Ctx))
			}
			r.G = []*patterns.Group{g}
		}
	}
	openGroup := func(r *Run) *patterns.Group {
		g, err := patterns.Open(r.C, r.G[0].ID())
		r.Must(err)
		return g
	}
	invokeAll := func(r *Run) (*patterns.Group, error) {
		return patterns.InvokeAll(r.Ctx, r.C, r.specs(r.Q, 1, 2, 3), 1, nil)
	}
	groupCont := func(r *Run) string {
		next, err := openGroup(r).ContinueWith(r.Ctx, Job{N: 7}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: r.Q2}})
		r.Track(next)
		return Answer(HandleText(next), err)
	}
	return []Row{
		{Name: "ForkJoin", Op: created(forkJoin)},
		{Name: "ForkJoin/WithID-two-queues", Op: created(func(r *Run) (*patterns.Group, error) {
			specs := append(r.specs(r.Q, 1), r.specs(r.Q2, 2)...)
			return patterns.ForkJoin(r.Ctx, r.C, specs, &client.Spec{Args: Job{N: 9}, Opts: &client.EnqueueOpts{Queue: r.Q2}}, &patterns.GroupOpts{ID: "fj", Queue: r.Q})
		})},
		{Name: "ForkJoin/Sub", Op: created(func(r *Run) (*patterns.Group, error) {
			specs := append(r.specs(r.Q, 1), patterns.Sub(r.specs(r.Q, 2, 3), &client.Spec{Args: Job{N: 8}, Opts: &client.EnqueueOpts{Queue: r.Q}}, nil))
			return patterns.ForkJoin(r.Ctx, r.C, specs, &client.Spec{Args: Job{N: 9}, Opts: &client.EnqueueOpts{Queue: r.Q}}, nil)
		})},
		{Name: "InvokeAll", Op: created(invokeAll)},
		{Name: "Throttle", Op: created(func(r *Run) (*patterns.Group, error) {
			return patterns.Throttle(r.Ctx, r.C, r.specs(r.Q, 1, 2, 3), 2, time.Second, nil)
		})},
		{Name: "Spread", Op: created(func(r *Run) (*patterns.Group, error) {
			return patterns.Spread(r.Ctx, r.C, r.specs(r.Q, 1, 2, 3), 10*time.Second, nil)
		}), Normalize: spreadFirst},
		{Name: "Group.Cancel/ForkJoin", Setup: setupGroup(forkJoin, false),
			Op: func(r *Run) string { return Answer("", openGroup(r).Cancel(r.Ctx)) }},
		{Name: "Group.Cancel/Sub", Setup: setupGroup(func(r *Run) (*patterns.Group, error) {
			specs := append(r.specs(r.Q, 1), patterns.Sub(r.specs(r.Q, 2, 3), nil, nil))
			return patterns.ForkJoin(r.Ctx, r.C, specs, nil, nil)
		}, false),
			Op: func(r *Run) string { return Answer("", openGroup(r).Cancel(r.Ctx)) }},
		{Name: "Group.Cancel/InvokeAll", Setup: setupGroup(invokeAll, false),
			Op: func(r *Run) string { return Answer("", openGroup(r).Cancel(r.Ctx)) }},
		{Name: "Group.ContinueWith/running", Setup: setupGroup(invokeAll, false), Op: groupCont},
		{Name: "Group.ContinueWith/ended", Setup: setupGroup(invokeAll, true), Op: groupCont},
	}
}

// spreadFirst folds the two states Spread's first member may be in: its
// slot is the call's start (the client's clock), so it is in the stream or
// still in the scheduled set depending on how Redis' clock compares.
func spreadFirst(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(l, "async:{q:Q}:sched "), strings.HasPrefix(l, "async:{q:Q}:stream "),
			strings.HasPrefix(l, "async:{q:Q}:t:<r>.<nc>.0 "):
			continue
		case strings.HasPrefix(l, "  member Q/<r>.<nc>.0: "):
			l = "  member Q/<r>.<nc>.0: scheduled or pending"
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func repeatRows() []Row {
	declare := func(q func(r *Run) string, every time.Duration) func(r *Run) string {
		return func(r *Run) string {
			s, err := patterns.Repeat(r.Ctx, r.C, "rep-"+r.U, client.Spec{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: q(r)}}, every)
			if s == nil {
				return Answer("<nil schedule>", err)
			}
			return Answer(fmt.Sprintf("%s queue %s created=%v updated=%v", s.Name(), s.Queue(), s.Created(), s.Updated()), err)
		}
	}
	q1 := func(r *Run) string { return r.Q }
	q2 := func(r *Run) string { return r.Q2 }
	setupDeclare := func(r *Run) {
		s, err := patterns.Repeat(r.Ctx, r.C, "rep-"+r.U, client.Spec{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: r.Q}}, time.Hour)
		r.Must(err)
		r.S = s
	}
	return []Row{
		{Name: "Repeat/declare", Op: declare(q1, time.Hour)},
		{Name: "Repeat/declare-again", Setup: setupDeclare, Op: declare(q1, time.Hour)},
		{Name: "Repeat/new-interval", Setup: setupDeclare, Op: declare(q1, 2*time.Hour)},
		{Name: "Repeat/move", Setup: setupDeclare, Op: declare(q2, time.Hour)},
		{Name: "RepeatCron/declare", Op: func(r *Run) string {
			s, err := patterns.RepeatCron(r.Ctx, r.C, "cron-"+r.U, client.Spec{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: r.Q}}, "0 2 * * *", nil)
			if s == nil {
				return Answer("<nil schedule>", err)
			}
			return Answer(fmt.Sprintf("%s queue %s created=%v updated=%v", s.Name(), s.Queue(), s.Created(), s.Updated()), err)
		}},
		{Name: "RemoveRepeat", Setup: setupDeclare, Op: func(r *Run) string {
			return Answer(patterns.RemoveRepeat(r.Ctx, r.C, "rep-"+r.U))
		}},
		{Name: "Schedule.Remove", Setup: setupDeclare, Op: func(r *Run) string {
			return Answer("", r.S.Remove(r.Ctx))
		}},
	}
}

func byFirst(s string) string { return s[:1] }

func itemSpec(q string) func(key string, items []string) client.Spec {
	return func(key string, items []string) client.Spec {
		return client.Spec{Args: Job{N: len(items)}, Opts: &client.EnqueueOpts{Queue: q}}
	}
}

func partitionedText(p *patterns.Partitioned) string {
	if p == nil {
		return "<nil partitioned>"
	}
	keys := append([]string(nil), p.Keys()...)
	sort.Strings(keys)
	return fmt.Sprintf("%s keys %v", groupText(p.Group), keys)
}

func partitionRows() []Row {
	newPt := func(r *Run, c *client.Client) *patterns.Partitioner[string] {
		pt, err := patterns.NewPartitioner[string](c, "pt-"+r.U, byFirst, &patterns.PartitionerOpts{Queue: r.Q})
		r.Must(err)
		return pt
	}
	trackLen := func(r *Run) {
		pt := newPt(r, r.Direct)
		r.TrackLen(func() (int64, error) { return pt.Len(r.Ctx) })
	}
	return []Row{
		{Name: "Partition", Op: func(r *Run) string {
			p, err := patterns.Partition(r.Ctx, r.C, []string{"a1", "b1", "a2"}, byFirst, itemSpec(r.Q), nil)
			if p != nil {
				r.TrackGroup(p.Group)
			}
			return Answer(partitionedText(p), err)
		}},
		{Name: "Partitioner.Append", Setup: trackLen, Op: func(r *Run) string {
			return Answer("", newPt(r, r.C).Append(r.Ctx, "a1", "b1", "a2"))
		}},
		{Name: "Partitioner.Flush",
			Setup: func(r *Run) {
				trackLen(r)
				r.Must(newPt(r, r.C).Append(r.Ctx, "a1", "b1", "a2"))
			},
			Op: func(r *Run) string {
				p, err := newPt(r, r.C).Flush(r.Ctx, itemSpec(r.Q2), nil)
				if p != nil {
					r.TrackGroup(p.Group)
				}
				return Answer(partitionedText(p), err)
			}},
	}
}

// bkItem is an item of the "bk" batches (a batch's kind is its item type's).
type bkItem int

func (bkItem) Kind() string { return "bk" }

func batchRows() []Row {
	newBatch := func(r *Run, max int) *patterns.Batch[bkItem, int] {
		b, err := patterns.NewBatch[bkItem, int](r.C, &patterns.BatchOpts{MaxSize: max, MaxWait: time.Hour, Queue: r.Q})
		r.Must(err)
		return b
	}
	appendOne := func(max int) func(r *Run) string {
		return func(r *Run) string {
			h, err := newBatch(r, max).Append(r.Ctx, 5)
			r.Track(h)
			return Answer(HandleText(h), err)
		}
	}
	setupItems := func(n, max int) func(r *Run) {
		return func(r *Run) {
			b := newBatch(r, max)
			for i := 0; i < n; i++ {
				h, err := b.Append(r.Ctx, bkItem(i))
				r.Must(err)
				r.Track(h)
				r.H = append(r.H, h)
			}
		}
	}
	return []Row{
		{Name: "Batch.Append/open", Op: appendOne(3)},
		{Name: "Batch.Append/join", Setup: setupItems(1, 3), Op: appendOne(3)},
		{Name: "Batch.Append/fill", Setup: setupItems(2, 3), Op: appendOne(3)},
		{Name: "Batch.AppendMany", Setup: setupItems(1, 3), Op: func(r *Run) string {
			hs, err := newBatch(r, 3).AppendMany(r.Ctx, []bkItem{5, 6, 7})
			r.Track(hs...)
			return Answer(handlesText(hs), err)
		}},
		{Name: "Batch.Flush", Setup: setupItems(2, 3), Op: func(r *Run) string {
			return Answer(newBatch(r, 3).Flush(r.Ctx))
		}},
		{Name: "Cancel/batch-item", Setup: setupItems(2, 3), Op: func(r *Run) string {
			st, err := r.task(r.H[0]).Cancel(r.Ctx)
			return Answer(st, err)
		}},
	}
}

// lim is the table's rate: slow enough that no event is refilled during
// a run.
var lim = ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 3}

func limitRows() []Row {
	limiter := func(r *Run) *ratelimit.Limiter {
		r.TrackLimit(lim, "key:"+r.U)
		return ratelimit.New(r.RDB, lim)
	}
	take := func(n int) func(r *Run) {
		return func(r *Run) {
			l := ratelimit.New(r.RDB, lim)
			for i := 0; i < n; i++ {
				res, err := l.Allow(r.Ctx, "key:"+r.U, 1)
				r.Must(err)
				if !res.Allowed {
					r.T.Fatal("setup: not allowed")
				}
			}
		}
	}
	allow := func(r *Run) string {
		res, err := limiter(r).Allow(r.Ctx, "key:"+r.U, 1)
		return Answer(fmt.Sprintf("allowed=%v remaining=%d", res.Allowed, res.Remaining), err)
	}
	round := func(d time.Duration) time.Duration { return d.Round(time.Minute) }
	return []Row{
		{Name: "ratelimit.Allow", Op: allow},
		{Name: "ratelimit.Allow/refused", Setup: take(3), Op: allow},
		{Name: "ratelimit.Reserve", Setup: take(2), Op: func(r *Run) string {
			d, err := limiter(r).Reserve(r.Ctx, "key:"+r.U, 1)
			return Answer(round(d), err)
		}},
		{Name: "ratelimit.Reserve/future", Setup: take(3), Op: func(r *Run) string {
			d, err := limiter(r).Reserve(r.Ctx, "key:"+r.U, 1)
			return Answer(round(d), err)
		}},
		{Name: "ratelimit.Take", Setup: take(1), Op: func(r *Run) string {
			ok, wait, next, err := limiter(r).Take(r.Ctx, "key:"+r.U, 1, 0)
			return Answer(fmt.Sprintf("taken=%v wait=%v next=%d", ok, round(wait), next), err)
		}},
		{Name: "ratelimit.Take/refused", Setup: take(3), Op: func(r *Run) string {
			l := limiter(r)
			ok, wait, next, err := l.Take(r.Ctx, "key:"+r.U, 1, 0)
			ans := fmt.Sprintf("taken=%v wait=%v next=%d", ok, round(wait), next)
			if err != nil {
				return Answer(ans, err)
			}
			// A second caller's turn comes after the first's.
			ok2, wait2, next2, err := l.Take(r.Ctx, "key:"+r.U, 1, 0)
			return Answer(fmt.Sprintf("%s; then taken=%v wait=%v next-after=%v", ans, ok2, round(wait2), next2 > next), err)
		}},
		{Name: "ratelimit.Wait", Setup: take(1), Op: func(r *Run) string {
			// An event is free: Wait returns at once, or (events taken
			// twice) waits an interval, an hour, cut short here.
			ctx, cancel := context.WithTimeout(r.Ctx, 2*time.Second)
			defer cancel()
			return Answer("", limiter(r).Wait(ctx, "key:"+r.U, 1))
		}},
		{Name: "ratelimit.Refund", Setup: take(3), Op: func(r *Run) string {
			return Answer("", limiter(r).Refund(r.Ctx, "key:"+r.U, 1))
		}},
	}
}

// TestResendConformance runs every public writing operation with the reply
// of each of its writing calls dropped once and twice, and compares the end
// state with a clean run's.
func TestResendConformance(t *testing.T) {
	var rows []Row
	rows = append(rows, clientRows()...)
	rows = append(rows, groupRows()...)
	rows = append(rows, repeatRows()...)
	rows = append(rows, partitionRows()...)
	rows = append(rows, batchRows()...)
	rows = append(rows, limitRows()...)
	rows = append(rows, inspectRows()...)
	rows = append(rows, testkitRows()...)
	RunTable(t, rows)
}
