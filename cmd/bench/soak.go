package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/worker"
)

// soakInfo is the soak section of the report: Redis' memory while many
// tasks pass through one queue, and after their retention.
type soakInfo struct {
	Total     int
	Rate      int // tasks/s offered
	Retention time.Duration
	Housekeep time.Duration
	Samples   []soakSample
	Baseline  int64 // used_memory before the first task
	Peak      int64
	End       int64 // after the last task's retention and a housekeeping pass
	Took      time.Duration
}

type soakSample struct {
	At        time.Duration
	Enqueued  int64
	Done      int64
	UsedBytes int64
	Keys      int64
	StreamLen int64
}

// soakRun pushes total no-op tasks through one queue at rate tasks/s with
// one worker and one coordinator, results kept for retention, and samples
// Redis' used_memory every second, until the last result expired and a
// housekeeping pass trimmed the stream.
func (e *env) soakRun(ctx context.Context, total, rate int, retention time.Duration) (*soakInfo, error) {
	rdb := e.newRedis()
	defer rdb.Close()
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: e.logger, Retention: retention})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := e.queue("soak")
	defer e.reset(ctx, q)
	const housekeep = 2 * time.Second
	crdb := redis.NewClient(&redis.Options{Addr: e.addr})
	defer crdb.Close()
	co, err := coordinator.New(context.Background(), crdb, &coordinator.Config{Logger: e.logger, HousekeepInterval: housekeep})
	if err != nil {
		return nil, err
	}
	if err := co.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = co.Stop(context.Background()) }()
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 64})
	defer wrdb.Close()
	w, err := worker.New(context.Background(), wrdb, &worker.Config{
		Queues: map[string]int{q: 1}, Concurrency: 256, FetchBatch: 256,
		BlockTimeout: blockTimeout, HousekeepInterval: time.Hour, Logger: e.logger,
	})
	if err != nil {
		return nil, err
	}
	var doneN atomic.Int64
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		doneN.Add(1)
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)

	si := &soakInfo{Total: total, Rate: rate, Retention: retention, Housekeep: housekeep}
	if si.Baseline, err = usedMemory(ctx, e.admin); err != nil {
		return nil, err
	}
	start := time.Now()
	sample := func() error {
		used, err := usedMemory(ctx, e.admin)
		if err != nil {
			return err
		}
		n, _ := e.admin.DBSize(ctx).Result()
		var sl int64
		if qi, err := e.in.Queue(ctx, q); err == nil {
			sl = qi.StreamLength
		}
		s := soakSample{At: time.Since(start), Enqueued: enq.Load(), Done: doneN.Load(), UsedBytes: used, Keys: n, StreamLen: sl}
		si.Samples = append(si.Samples, s)
		si.Peak = max(si.Peak, used)
		fmt.Fprintf(e.progress, "  %5.0fs enqueued %8d done %8d used_memory %6.1f MB keys %7d stream %7d\n",
			s.At.Seconds(), s.Enqueued, s.Done, float64(used)/1e6, n, sl)
		return nil
	}

	// Producers: batches of 500 at the offered rate.
	const batch = 500
	var wg sync.WaitGroup
	var perr atomic.Pointer[error]
	pctx, stopProducers := context.WithCancel(ctx)
	defer stopProducers()
	batches := make(chan struct{}, 64)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		tick := time.NewTicker(time.Second * batch / time.Duration(rate))
		defer tick.Stop()
		for sent := 0; sent < total; sent += batch {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			select {
			case <-pctx.Done():
				return
			case batches <- struct{}{}:
			}
		}
	}()
	specs := noopSpecs(batch, q)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range batches {
				if _, err := c.EnqueueMany(pctx, specs); err != nil {
					perr.CompareAndSwap(nil, &err)
					stopProducers()
					return
				}
				enq.Add(batch)
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for doneN.Load() < int64(total) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		if p := perr.Load(); p != nil {
			return nil, *p
		}
		if err := sample(); err != nil {
			return nil, err
		}
		if time.Since(start) > 10*time.Minute {
			return nil, fmt.Errorf("soak: %d of %d tasks done after 10 minutes", doneN.Load(), total)
		}
	}
	wg.Wait()
	si.Took = time.Since(start)
	// After the last result's retention, and housekeeping after that.
	after := time.Now().Add(retention + 2*housekeep + time.Second)
	for time.Now().Before(after) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		if err := sample(); err != nil {
			return nil, err
		}
	}
	si.End = si.Samples[len(si.Samples)-1].UsedBytes
	enq.Store(0)
	return si, nil
}

// enq counts the soak's enqueued tasks (read by its sampler).
var enq atomic.Int64

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO memory has no used_memory")
}

func (si *soakInfo) markdown(p func(string, ...any)) {
	p("### Soak: %s tasks through one queue\n\n", thousands(float64(si.Total)))
	p("Offered at %s tasks/s in batches of 500 (EnqueueMany), one worker (256 handlers), one coordinator keeping house every %v, results kept %v. "+
		"used_memory (INFO memory) every second; keys is DBSIZE (the bench's Redis holds nothing else), stream is XLEN of the queue.\n\n",
		thousands(float64(si.Rate)), si.Housekeep, si.Retention)
	p("| Time | Enqueued | Done | used_memory | Keys | Stream |\n|--:|--:|--:|--:|--:|--:|\n")
	step := max(1, len(si.Samples)/25)
	for i, s := range si.Samples {
		if i%step != 0 && i != len(si.Samples)-1 {
			continue
		}
		p("| %.0f s | %s | %s | %.1f MB | %s | %s |\n", s.At.Seconds(), thousands(float64(s.Enqueued)), thousands(float64(s.Done)),
			float64(s.UsedBytes)/1e6, thousands(float64(s.Keys)), thousands(float64(s.StreamLen)))
	}
	p("\nBefore the first task: %.1f MB; peak %.1f MB; after the last result's retention and a housekeeping pass: %.1f MB (%+.1f MB against the start). All tasks done in %v.\n\n",
		float64(si.Baseline)/1e6, float64(si.Peak)/1e6, float64(si.End)/1e6, float64(si.End-si.Baseline)/1e6, si.Took.Round(time.Second))
}
