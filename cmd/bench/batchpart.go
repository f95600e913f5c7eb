package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// batchInfo is the Batch and partition section of the report.
type batchInfo struct {
	Items                 int
	MaxSize               int
	BatchMany, SingleMany float64 // items/s: AppendMany vs EnqueueMany
	BatchConc, SingleConc float64 // items/s: Append vs Enqueue from 16 goroutines
	Runs                  int     // batch handler calls in an AppendMany run
	Ratios                []float64
	Singles, Batches      []float64

	PartKeys, PartPerKey int
	PartRate, PlainRate  float64   // tasks/s: partitioned vs the same tasks plain, the run of the median ratio
	PartRatios           []float64 // partitioned ÷ plain of each pair of runs
	PartRuns, PlainRuns  []float64
}

// batchReps is how many alternating single/batch runs the bulk row takes.
const batchReps = 3

// medianIndex returns the index of the median of xs.
func medianIndex(xs []float64) int {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return xs[idx[a]] < xs[idx[b]] })
	return idx[len(idx)/2]
}

// batchGoal is issue 7's Batch target: items/s through Batch over the same
// items as single tasks.
const batchGoal = 5.0

// batchRun measures n items through patterns.Batch (MaxSize maxSize)
// against the same items as single tasks, each way appended in bulk and
// from 16 goroutines one at a time; a run ends when every item's result is
// recorded.
func (e *env) batchRun(ctx context.Context, n, maxSize int) (*batchInfo, error) {
	bi := &batchInfo{Items: n, MaxSize: maxSize}
	var err error
	// Bulk: single and batch runs alternate, reps times; the median ratio
	// is reported (single runs on this VM swing by ±15%).
	for r := 0; r < batchReps; r++ {
		single, _, err := e.itemsOnce(ctx, n, maxSize, false, false)
		if err != nil {
			return nil, err
		}
		batch, runs, err := e.itemsOnce(ctx, n, maxSize, true, false)
		if err != nil {
			return nil, err
		}
		bi.Ratios = append(bi.Ratios, batch/single)
		bi.Singles, bi.Batches = append(bi.Singles, single), append(bi.Batches, batch)
		bi.Runs = runs
	}
	m := medianIndex(bi.Ratios)
	bi.SingleMany, bi.BatchMany = bi.Singles[m], bi.Batches[m]
	if bi.SingleConc, _, err = e.itemsOnce(ctx, n/4, maxSize, false, true); err != nil {
		return nil, err
	}
	if bi.BatchConc, _, err = e.itemsOnce(ctx, n/4, maxSize, true, true); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.progress, "  bulk (median of %v): batch %.0f items/s vs single %.0f (%.2f×, %d batches); 16 goroutines: batch %.0f vs single %.0f (%.1f×)\n",
		bi.Ratios, bi.BatchMany, bi.SingleMany, bi.BatchMany/bi.SingleMany, bi.Runs, bi.BatchConc, bi.SingleConc, bi.BatchConc/bi.SingleConc)
	return bi, nil
}

type benchItem struct {
	N int `msgpack:"n"`
}

func (benchItem) Kind() string { return "bench_item" }

func (e *env) itemsOnce(ctx context.Context, n, maxSize int, batched, conc bool) (float64, int, error) {
	c, q, done, err := e.session(ctx, "items")
	if err != nil {
		return 0, 0, err
	}
	defer done()
	e.settle(ctx)
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 64})
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, drainCfg{256, 256})
	if err != nil {
		return 0, 0, err
	}
	var handled, runs atomic.Int64
	all := make(chan struct{})
	note := func(k int) {
		if handled.Add(int64(k)) == int64(n) {
			close(all)
		}
	}
	if batched {
		worker.HandleBatch(w, func(ctx context.Context, items []benchItem) ([]int, error) {
			runs.Add(1)
			out := make([]int, len(items))
			for i, it := range items {
				out[i] = 2 * it.N
			}
			note(len(items))
			return out, nil
		})
	} else {
		worker.Handle(w, func(ctx context.Context, it benchItem) (int, error) {
			note(1)
			return 2 * it.N, nil
		})
	}
	if err := w.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer e.stopWorker(w)
	bt, err := patterns.NewBatch[benchItem, int](c, &patterns.BatchOpts{MaxSize: maxSize, MaxWait: 20 * time.Millisecond, Queue: q})
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if conc {
		var wg sync.WaitGroup
		var next atomic.Int64
		errs := make(chan error, 16)
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					var err error
					if batched {
						_, err = bt.Append(ctx, benchItem{N: i})
					} else {
						_, err = c.Enqueue(ctx, benchItem{N: i}, &client.EnqueueOpts{Queue: q})
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return 0, 0, err
		}
	} else {
		for i := 0; i < n; i += 500 {
			m := min(500, n-i)
			if batched {
				items := make([]benchItem, m)
				for j := range items {
					items[j] = benchItem{N: i + j}
				}
				if _, err := bt.AppendMany(ctx, items); err != nil {
					return 0, 0, err
				}
			} else {
				specs := make([]client.Spec, m)
				for j := range specs {
					specs[j] = client.Spec{Args: benchItem{N: i + j}, Opts: &client.EnqueueOpts{Queue: q}}
				}
				if _, err := c.EnqueueMany(ctx, specs); err != nil {
					return 0, 0, err
				}
			}
		}
	}
	if batched {
		if _, err := bt.Flush(ctx); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return 0, 0, fmt.Errorf("items: %d of %d handled in 5 minutes", handled.Load(), n)
	}
	if _, err := e.waitAcked(ctx, q, own{}); err != nil {
		return 0, 0, err
	}
	return float64(n) / time.Since(start).Seconds(), int(runs.Load()), nil
}

// partitionRun enqueues keys × perKey tasks with partition keys (the
// tasks of a round one per key, rounds in order) and the same tasks
// without, and measures tasks/s from the first enqueue to the last result;
// reps pairs of runs alternate, and the pair of the median ratio is kept.
func (e *env) partitionRun(ctx context.Context, bi *batchInfo, keysN, perKey, reps int) error {
	bi.PartKeys, bi.PartPerKey = keysN, perKey
	for i := 0; i < reps; i++ {
		plain, err := e.partitionOnce(ctx, keysN, perKey, false)
		if err != nil {
			return err
		}
		parted, err := e.partitionOnce(ctx, keysN, perKey, true)
		if err != nil {
			return err
		}
		bi.PlainRuns, bi.PartRuns = append(bi.PlainRuns, plain), append(bi.PartRuns, parted)
		bi.PartRatios = append(bi.PartRatios, parted/plain)
		fmt.Fprintf(e.progress, "  run %d of %d: partitioned %.0f tasks/s, plain %.0f tasks/s (%.2f×)\n", i+1, reps, parted, plain, parted/plain)
	}
	m := medianIndex(bi.PartRatios)
	bi.PartRate, bi.PlainRate = bi.PartRuns[m], bi.PlainRuns[m]
	fmt.Fprintf(e.progress, "  %d keys × %d: median ratio %.2f× (partitioned %.0f tasks/s, plain %.0f tasks/s)\n", keysN, perKey, bi.PartRatios[m], bi.PartRate, bi.PlainRate)
	return nil
}

func (e *env) partitionOnce(ctx context.Context, keysN, perKey int, parted bool) (float64, error) {
	c, q, done, err := e.session(ctx, "partition")
	if err != nil {
		return 0, err
	}
	defer done()
	e.settle(ctx)
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 64})
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, drainCfg{256, 256})
	if err != nil {
		return 0, err
	}
	n := keysN * perKey
	var handled atomic.Int64
	all := make(chan struct{})
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		if handled.Add(1) == int64(n) {
			close(all)
		}
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return 0, err
	}
	defer e.stopWorker(w)
	start := time.Now()
	for r := 0; r < perKey; r++ {
		for k := 0; k < keysN; k += 500 {
			m := min(500, keysN-k)
			specs := make([]client.Spec, m)
			for j := range specs {
				o := &client.EnqueueOpts{Queue: q}
				if parted {
					o.PartitionKey = "key" + strconv.Itoa(k+j)
				}
				specs[j] = client.Spec{Args: noop{N: r}, Opts: o}
			}
			if _, err := c.EnqueueMany(ctx, specs); err != nil {
				return 0, err
			}
		}
	}
	select {
	case <-all:
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("partition: %d of %d handled in 5 minutes", handled.Load(), n)
	}
	if _, err := e.waitAcked(ctx, q, own{}); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (bi *batchInfo) markdown(p func(string, ...any)) {
	p("### Batch and partition keys\n\n")
	p("| Measurement | Goal | Measured | Met |\n|---|--:|--:|:-:|\n")
	ratios := make([]string, len(bi.Ratios))
	for i, r := range bi.Ratios {
		ratios[i] = fmt.Sprintf("%.2f×", r)
	}
	if bi.Items > 0 {
		bi.batchRows(p, ratios)
	}
	if bi.PartKeys > 0 {
		pr := make([]string, len(bi.PartRatios))
		for i, r := range bi.PartRatios {
			pr[i] = fmt.Sprintf("%.2f×", r)
		}
		q := bi.PartRate / bi.PlainRate
		p("| %s partition keys × %d tasks (each key in order) vs the same tasks without keys, 1 worker of 256 handlers, EnqueueMany in 500s, first enqueue → last result, median of %d alternating runs | ≥ %.1f× | %.2f× (%s vs %s tasks/s; runs %s) | %s |\n",
			thousands(float64(bi.PartKeys)), bi.PartPerKey, len(bi.PartRatios), goalPartitionOfPlain, q, thousands(bi.PartRate), thousands(bi.PlainRate), strings.Join(pr, ", "), met(q >= goalPartitionOfPlain))
	}
	p("\nItems/s count from the first append to the last item's result recorded (the handler doubles each item). ")
	p("A partitioned task enters the stream only when the one before it of its key ended: each end writes an outbox entry that the worker drains, which starts the next (pipelined across the partitions of a drain).\n\n")
}

func (bi *batchInfo) batchRows(p func(string, ...any), ratios []string) {
	p("| %s items through Batch (MaxSize %d, AppendMany in 500s) vs the same items as single tasks (EnqueueMany in 500s), first append → last result, median of %d alternating runs | ≥ %.0f× | %.2f× (%s vs %s items/s; %d batches; runs %s) | %s |\n",
		thousands(float64(bi.Items)), bi.MaxSize, len(bi.Ratios), batchGoal, bi.BatchMany/bi.SingleMany, thousands(bi.BatchMany), thousands(bi.SingleMany), bi.Runs, strings.Join(ratios, ", "), met(bi.BatchMany/bi.SingleMany >= batchGoal))
	p("| %s items, one Append vs one Enqueue per call from 16 goroutines | | %.1f× (%s vs %s items/s) | |\n",
		thousands(float64(bi.Items/4)), bi.BatchConc/bi.SingleConc, thousands(bi.BatchConc), thousands(bi.SingleConc))
}
