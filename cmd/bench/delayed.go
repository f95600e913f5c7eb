package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
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
}

// delayedGoal is issue 6's bound on how late a due task may start (p99).
const delayedGoal = 10 * time.Millisecond

// delayedRun enqueues n tasks due 100 ms to 2.1 s ahead, at random, with two
// coordinators and one worker running, and measures each start against its
// due time.
func (e *env) delayedRun(ctx context.Context, n int) (*delayedInfo, error) {
	c, q, done, err := e.session(ctx, "delayed")
	if err != nil {
		return nil, err
	}
	defer done()
	const coords = 2
	for i := 0; i < coords; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: e.addr})
		defer rdb.Close()
		co, err := coordinator.New(rdb, &coordinator.Config{Logger: e.logger})
		if err != nil {
			return nil, err
		}
		if err := co.Start(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = co.Stop(context.Background()) }()
	}
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, drainCfg{256, 256})
	if err != nil {
		return nil, err
	}
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
}
