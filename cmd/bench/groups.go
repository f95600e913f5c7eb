package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// benchJoin is the join of the fork/join measurement.
type benchJoin struct{}

func (benchJoin) Kind() string { return "bench_join" }

// benchWork is an InvokeAll member: it works for Ms milliseconds.
type benchWork struct {
	Ms int `msgpack:"ms"`
}

func (benchWork) Kind() string { return "bench_work" }

// groupsInfo is the fork/join and InvokeAll section of the report.
type groupsInfo struct {
	N           int
	Plain, Fork []*result // per run: n plain tasks (enqueue → last handled), ForkJoin (enqueue → join start)
	Ratios      []float64 // per run, fork / plain

	Limit, Members int
	WorkMs         int
	Util           float64       // share of the group's run time with Limit members running
	Mean           float64       // time-weighted mean of members running, over Limit
	Took           time.Duration // first member start → last member end
	Ideal          time.Duration // Members × WorkMs / Limit
	MaxSeen        int
}

// forkJoinGoal is the bound on ForkJoin's cost over plain tasks.
const forkJoinGoal = 1.3

// groupsRun measures, reps times in turn, n no-op tasks enqueued with
// EnqueueMany (first enqueue → last handler done) and the same n as the
// members of a ForkJoin (first enqueue → join handler start), on one worker
// each; then one InvokeAll's utilisation.
func (e *env) groupsRun(ctx context.Context, n, reps int) (*groupsInfo, error) {
	gi := &groupsInfo{N: n}
	for i := 0; i < reps; i++ {
		for _, fork := range []bool{false, true} {
			r, err := e.groupOnce(ctx, n, fork)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(e.progress, "  %s: %v, Redis CPU %.2f µs/task, %.2f cmds/task\n", r.Name, r.Dur.Round(time.Millisecond), r.RedisCPUus, r.Cmds)
			if fork {
				gi.Fork = append(gi.Fork, r)
			} else {
				gi.Plain = append(gi.Plain, r)
			}
		}
		gi.Ratios = append(gi.Ratios, float64(gi.Fork[i].Dur)/float64(gi.Plain[i].Dur))
	}
	if err := e.invokeAllRun(ctx, gi, 8, 400, 5); err != nil {
		return nil, err
	}
	return gi, nil
}

func (e *env) groupOnce(ctx context.Context, n int, fork bool) (*result, error) {
	name := "plain"
	if fork {
		name = "forkjoin"
	}
	c, q, done, err := e.session(ctx, name)
	if err != nil {
		return nil, err
	}
	defer done()
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, drainCfg{256, 256})
	if err != nil {
		return nil, err
	}
	var handled atomic.Int64
	finished := make(chan struct{})
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		if handled.Add(1) == int64(n) && !fork {
			close(finished)
		}
		return struct{}{}, nil
	})
	worker.Handle(w, func(ctx context.Context, a benchJoin) (struct{}, error) {
		close(finished)
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)
	specs := noopSpecs(n, q)
	label := fmt.Sprintf("%d plain tasks", n)
	if fork {
		label = fmt.Sprintf("ForkJoin of %d", n)
	}
	return e.measure(ctx, label, n, "", func() (own, error) {
		if fork {
			if _, err := patterns.ForkJoin(ctx, c, specs, &client.Spec{Args: benchJoin{}, Opts: &client.EnqueueOpts{Queue: q}}, nil); err != nil {
				return nil, err
			}
		} else if _, err := c.EnqueueMany(ctx, specs); err != nil {
			return nil, err
		}
		select {
		case <-finished:
			return own{}, nil
		case <-time.After(2 * time.Minute):
			return nil, fmt.Errorf("%s: handled %d of %d in 2 minutes", label, handled.Load(), n)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// invokeAllRun runs one InvokeAll of members tasks of workMs each at the
// given limit on two workers, recording every handler start and end, and
// reports how much of the run the limit was reached.
func (e *env) invokeAllRun(ctx context.Context, gi *groupsInfo, limit, members, workMs int) error {
	c, q, done, err := e.session(ctx, "invokeall")
	if err != nil {
		return err
	}
	defer done()
	type mark struct {
		at    time.Time
		delta int
	}
	var mu sync.Mutex
	var marks []mark
	note := func(d int) {
		mu.Lock()
		marks = append(marks, mark{time.Now(), d})
		mu.Unlock()
	}
	for i := 0; i < 2; i++ {
		wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
		defer wrdb.Close()
		w, err := e.newWorker(wrdb, q, drainCfg{64, 64})
		if err != nil {
			return err
		}
		worker.Handle(w, func(ctx context.Context, a benchWork) (struct{}, error) {
			note(1)
			defer note(-1)
			t := time.NewTimer(time.Duration(a.Ms) * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return struct{}{}, ctx.Err()
			}
			return struct{}{}, nil
		})
		if err := w.Start(ctx); err != nil {
			return err
		}
		defer e.stopWorker(w)
	}
	specs := make([]client.Spec, members)
	for i := range specs {
		specs[i] = client.Spec{Args: benchWork{Ms: workMs}, Opts: &client.EnqueueOpts{Queue: q}}
	}
	g, err := patterns.InvokeAll(ctx, c, specs, limit, nil)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := g.Outcome(wctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	sort.SliceStable(marks, func(a, b int) bool { return marks[a].at.Before(marks[b].at) })
	if len(marks) == 0 {
		return fmt.Errorf("InvokeAll: no member ran")
	}
	cur, most := 0, 0
	var atLimit time.Duration
	var busy float64 // member-seconds
	for i, m := range marks {
		if i > 0 {
			d := m.at.Sub(marks[i-1].at)
			if cur >= limit {
				atLimit += d
			}
			busy += float64(cur) * d.Seconds()
		}
		cur += m.delta
		most = max(most, cur)
	}
	gi.Limit, gi.Members, gi.WorkMs = limit, members, workMs
	gi.Took = marks[len(marks)-1].at.Sub(marks[0].at)
	gi.Util = float64(atLimit) / float64(gi.Took)
	gi.Mean = busy / gi.Took.Seconds() / float64(limit)
	gi.Ideal = time.Duration(members*workMs/limit) * time.Millisecond
	gi.MaxSeen = most
	fmt.Fprintf(e.progress, "  InvokeAll(%d) of %d × %d ms: %v (ideal %v), slots busy %.1f%%, all %d busy %.1f%% of the time, most running at once %d\n",
		limit, members, workMs, gi.Took.Round(time.Millisecond), gi.Ideal, 100*gi.Mean, limit, 100*gi.Util, most)
	return nil
}

func medianDur(rs []*result) *result {
	s := append([]*result(nil), rs...)
	sort.Slice(s, func(a, b int) bool { return s[a].Dur < s[b].Dur })
	return s[len(s)/2]
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// groupsMarkdown renders the fork/join and InvokeAll section.
func (gi *groupsInfo) markdown(p func(string, ...any)) {
	p("### Fork/join and InvokeAll\n\n")
	pl, fk := medianDur(gi.Plain), medianDur(gi.Fork)
	ratio := medianF(gi.Ratios)
	p("| Measurement | Goal | Measured | Met |\n|---|--:|--:|:-:|\n")
	p("| %s no-op tasks, EnqueueMany → last handled (median of %d) | — | %v (Redis CPU %.2f µs/task, %.2f cmds/task) | — |\n",
		thousands(float64(gi.N)), len(gi.Plain), pl.Dur.Round(time.Millisecond), pl.RedisCPUus, pl.Cmds)
	p("| ForkJoin of the same, first enqueue → join start (median of %d) | — | %v (Redis CPU %.2f µs/task, %.2f cmds/task) | — |\n",
		len(gi.Fork), fk.Dur.Round(time.Millisecond), fk.RedisCPUus, fk.Cmds)
	p("| ForkJoin cost over plain tasks (median of the runs' ratios) | ≤ %.1f× | %.2f× | %s |\n", forkJoinGoal, ratio, met(ratio <= forkJoinGoal))
	if gi.Members > 0 {
		p("| InvokeAll(%d) of %d members × %d ms on 2 workers: slot utilisation (mean running ÷ limit) | — | %.1f%% (took %v, ideal %v) | — |\n",
			gi.Limit, gi.Members, gi.WorkMs, 100*gi.Mean, gi.Took.Round(time.Millisecond), gi.Ideal)
		p("| … share of the run with all %d slots running | — | %.1f%% (most at once %d: the limit held) | — |\n", gi.Limit, 100*gi.Util, gi.MaxSeen)
	}
	rs := make([]string, len(gi.Ratios))
	for i, r := range gi.Ratios {
		rs[i] = fmt.Sprintf("%.2f", r)
	}
	p("\nPlain and fork/join runs alternate, each on a fresh queue with one worker (Concurrency 256, FetchBatch 256); ratios of the runs: %s.\n\n", joinStr(rs))
}

func joinStr(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ", "
		}
		out += x
	}
	return out
}
