package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// timed carries its due time (local clock, Unix ns).
type timed struct {
	Due int64 `msgpack:"d"`
}

func (timed) Kind() string { return "bench_timed" }

// delayedInfo is the delayed-task section of the report.
type delayedInfo struct {
	N                  int
	Coordinators       int
	P50, P90, P99, Max time.Duration

	Spread *spreadInfo
	Repeat *repeatInfo
}

// delayedGoal is issue 6's bound on how late a due task may start (p99).
const delayedGoal = 10 * time.Millisecond

// delayedRun enqueues n tasks due 100 ms to 2.1 s ahead, at random, with two
// coordinators and one worker running, and measures each start against its
// due time.
func (e *env) delayedRun(ctx context.Context, n int) (*delayedInfo, error) {
	const coords = 2
	c, q, w, _, done, err := e.timedSession(ctx, "delayed", coords, drainCfg{256, 256})
	if err != nil {
		return nil, err
	}
	defer done()
	var mu sync.Mutex
	var late []time.Duration
	all := make(chan struct{})
	worker.Handle(w, func(ctx context.Context, a timed) (struct{}, error) {
		d := time.Since(time.Unix(0, a.Due))
		mu.Lock()
		late = append(late, d)
		if len(late) == n {
			close(all)
		}
		mu.Unlock()
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)
	for i := 0; i < n; i++ {
		due := time.Now().Add(100*time.Millisecond + time.Duration(i*2000/n)*time.Millisecond)
		if _, err := c.Enqueue(ctx, timed{Due: due.UnixNano()}, &client.EnqueueOpts{Queue: q, ProcessAt: due}); err != nil {
			return nil, err
		}
	}
	select {
	case <-all:
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("delayed tasks: %d of %d ran in a minute", len(late), n)
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	q99 := late[min(len(late)-1, len(late)*99/100)]
	di := &delayedInfo{N: n, Coordinators: coords, P50: late[len(late)/2], P90: late[len(late)*9/10], P99: q99, Max: late[len(late)-1]}
	fmt.Fprintf(e.progress, "  start after due: p50 %v p90 %v p99 %v max %v\n", di.P50, di.P90, di.P99, di.Max)
	return di, nil
}

func (di *delayedInfo) markdown(p func(string, ...any)) {
	p("### Delayed tasks\n\n")
	p("| Measurement | Goal | Measured | Met |\n|---|--:|--:|:-:|\n")
	p("| %d tasks due 0.1–2.1 s ahead, %d coordinators, 1 worker: start after the due time, p99 | ≤ %s | %s (p50 %s, p90 %s, max %s) | %s |\n\n",
		di.N, di.Coordinators, ms(delayedGoal), ms(di.P99), ms(di.P50), ms(di.P90), ms(di.Max), met(di.P99 <= delayedGoal))
	if sp := di.Spread; sp != nil {
		p("Spread (goal: one start every %v, ±10 ms p99): %d tasks over %v with one coordinator, |start − slot| p99 %s (p50 %s, max %s): %s.\n\n",
			sp.Within/time.Duration(sp.N), sp.N, sp.Within, ms(sp.P99), ms(sp.P50), ms(sp.MaxDiff), map[bool]string{true: "met", false: "**not met**"}[sp.P99 <= 10*time.Millisecond])
	}
	if r := di.Repeat; r != nil {
		p("Repeat every %v with %d coordinators, %d slots: each fired once, none skipped: %s; start after the slot time p50 %s, p99 %s, max %s.\n\n",
			r.Every, r.Coordinators, r.Slots, map[bool]string{true: "yes", false: "**no**"}[r.Once], ms(r.P50), ms(r.P99), ms(r.Max))
	}
}

// repeatInfo is the Repeat row of the delayed-task section.
type repeatInfo struct {
	Every         time.Duration
	Coordinators  int
	Slots         int
	Once          bool
	P50, P99, Max time.Duration // start − slot time
}

// repeatRun declares a Repeat every every, with three coordinators, and
// measures slots starts against their slot times (from the task ids).
func (e *env) repeatRun(ctx context.Context, slots int, every time.Duration) (*repeatInfo, error) {
	const coords = 3
	c, q, w, wrdb, done, err := e.timedSession(ctx, "repeat", coords, drainCfg{64, 64})
	if err != nil {
		return nil, err
	}
	defer done()
	var clk redisClock // slot times are in Redis' clock
	var mu sync.Mutex
	runs := map[string]int{}
	var late []time.Duration
	all := make(chan struct{})
	name := "bench-" + q
	prefix := q + "/r." + name + "."
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		now := time.Now()
		tk, _ := worker.TaskFromContext(ctx)
		slot, err := strconv.ParseInt(strings.TrimPrefix(tk.ID, prefix), 10, 64)
		if err != nil {
			return struct{}{}, worker.Permanent(err)
		}
		mu.Lock()
		defer mu.Unlock()
		runs[tk.ID]++
		if runs[tk.ID] == 1 {
			late = append(late, now.Sub(clk.toLocal(time.UnixMilli(slot))))
			if len(late) == slots {
				close(all)
			}
		}
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)
	if err := clk.sync(ctx, wrdb); err != nil {
		return nil, err
	}
	if _, err := patterns.Repeat(ctx, c, name, client.Spec{Args: noop{}, Opts: &client.EnqueueOpts{Queue: q}}, every); err != nil {
		return nil, err
	}
	select {
	case <-all:
	case <-time.After(time.Duration(slots)*every + time.Minute):
		return nil, fmt.Errorf("repeat: %d of %d slots ran", len(late), slots)
	}
	if _, err := patterns.RemoveRepeat(ctx, c, name); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	ri := &repeatInfo{Every: every, Coordinators: coords, Slots: slots, Once: true}
	var got []int64
	for id, n := range runs {
		ri.Once = ri.Once && n == 1
		ms, _ := strconv.ParseInt(strings.TrimPrefix(id, prefix), 10, 64)
		got = append(got, ms)
	}
	// Once, and none skipped: consecutive slots one interval apart.
	slices.Sort(got)
	for i := 1; i < len(got); i++ {
		if got[i]-got[i-1] != every.Milliseconds() {
			ri.Once = false
			fmt.Fprintf(e.progress, "  slots %d and %d are not one interval apart\n", got[i-1], got[i])
		}
	}
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	ri.P50, ri.P99, ri.Max = late[len(late)/2], late[min(len(late)-1, len(late)*99/100)], late[len(late)-1]
	fmt.Fprintf(e.progress, "  Repeat every %v, %d slots: once %v, start after slot p50 %v p99 %v max %v\n", every, slots, ri.Once, ri.P50, ri.P99, ri.Max)
	return ri, nil
}

// spreadInfo is the Spread row of the delayed-task section.
type spreadInfo struct {
	N                 int
	Within            time.Duration
	P50, P99, MaxDiff time.Duration // |start − due|
}

// spreadRun runs patterns.Spread of n no-op tasks over within with one
// coordinator and one worker, and measures each start against its slot
// (start of the call + i·within/n).
func (e *env) spreadRun(ctx context.Context, n int, within time.Duration) (*spreadInfo, error) {
	c, q, w, _, done, err := e.timedSession(ctx, "spread", 1, drainCfg{64, 64})
	if err != nil {
		return nil, err
	}
	defer done()
	var mu sync.Mutex
	var starts []time.Time
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)
	begin := time.Now()
	g, err := patterns.Spread(ctx, c, noopSpecs(n, q), within, nil)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, within+time.Minute)
	defer cancel()
	if _, err := g.Wait(wctx); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(starts, func(a, b int) bool { return starts[a].Before(starts[b]) })
	diffs := make([]time.Duration, len(starts))
	for i, s := range starts {
		d := s.Sub(begin) - time.Duration(i)*within/time.Duration(n)
		if d < 0 {
			d = -d
		}
		diffs[i] = d
	}
	sort.Slice(diffs, func(a, b int) bool { return diffs[a] < diffs[b] })
	si := &spreadInfo{N: n, Within: within, P50: diffs[len(diffs)/2], P99: diffs[min(len(diffs)-1, len(diffs)*99/100)], MaxDiff: diffs[len(diffs)-1]}
	fmt.Fprintf(e.progress, "  Spread of %d over %v: |start − slot| p50 %v p99 %v max %v\n", n, within, si.P50, si.P99, si.MaxDiff)
	return si, nil
}

// startCoordinators starts n coordinators, each on its own connection; stop
// stops them and closes the connections.
func (e *env) startCoordinators(ctx context.Context, n int) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range stops {
			f()
		}
	}
	for i := 0; i < n; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: e.addr})
		co, err := coordinator.New(context.Background(), rdb, &coordinator.Config{Logger: e.logger})
		if err == nil {
			err = co.Start(ctx)
		}
		if err != nil {
			_ = rdb.Close()
			stop()
			return nil, err
		}
		stops = append(stops, func() {
			_ = co.Stop(context.Background())
			_ = rdb.Close()
		})
	}
	return stop, nil
}

// timedSession opens a session for the delayed, Spread and Repeat phases:
// a client and a fresh queue, coords coordinators, and a worker of the
// queue (not started) on a Redis connection of its own; done closes it all.
func (e *env) timedSession(ctx context.Context, name string, coords int, dc drainCfg) (c *client.Client, q string, w *worker.Worker, wrdb *redis.Client, done func(), err error) {
	c, q, closeSession, err := e.session(ctx, name)
	if err != nil {
		return nil, "", nil, nil, nil, err
	}
	stop, err := e.startCoordinators(ctx, coords)
	if err != nil {
		closeSession()
		return nil, "", nil, nil, nil, err
	}
	wrdb = redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
	done = func() {
		_ = wrdb.Close()
		stop()
		closeSession()
	}
	if w, err = e.newWorker(wrdb, q, dc); err != nil {
		done()
		return nil, "", nil, nil, nil, err
	}
	return c, q, w, wrdb, done, nil
}

// redisClock converts Redis times to local ones, with the offset of the two
// clocks measured by sync: TIME, taken at the midpoint of its round trip (as
// the library's own clock does).
type redisClock struct {
	offset atomic.Int64 // Redis time minus local time, ns
}

func (c *redisClock) sync(ctx context.Context, rdb redis.Cmdable) error {
	before := time.Now()
	t, err := rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	after := time.Now()
	c.offset.Store(int64(t.Sub(before.Add(after.Sub(before) / 2))))
	return nil
}

// toLocal converts a Redis time to local time.
func (c *redisClock) toLocal(t time.Time) time.Time { return t.Add(-time.Duration(c.offset.Load())) }
