package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
)

// aheadRedis is a Redis for the read-ahead tests of this package (which
// cannot use internal/testenv: it imports the package): the real server at
// ASYNC_REDIS_ADDR, else a new miniredis.
func aheadRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv("ASYNC_REDIS_ADDR")
	if addr == "" || os.Getenv("ASYNC_REDIS_CLUSTER") != "" {
		addr = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// aheadQueue is a queue name of this test run's own.
func aheadQueue(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "ahead-" + hex.EncodeToString(b[:])
}

type aheadArgs struct{ N int }

func (aheadArgs) Kind() string { return "ahead" }

// startAhead starts a worker on q, stopped at the end of t unless the test
// stopped it.
func startAhead(t *testing.T, rdb redis.UniversalClient, q string, cfg Config, register func(w *Worker)) *Worker {
	t.Helper()
	if cfg.Queues == nil {
		cfg.Queues = map[string]int{q: 1}
	}
	cfg.BlockTimeout = 50 * time.Millisecond
	w, err := New(context.Background(), rdb, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	register(w)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-w.Stopped():
			return // the test stopped it
		default:
		}
		ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return w
}

// Stop stops fetching and waits for the handlers running: an entry read
// ahead whose handler has not started when intake stops is handed back to
// its queue at once (not run here, not left pending until its lease ends),
// and another worker runs it.
func TestAheadStopStartsNothingReadAhead(t *testing.T) {
	t.Parallel()
	rdb := aheadRedis(t)
	q := aheadQueue(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 1000
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: aheadArgs{N: i}, Opts: &client.EnqueueOpts{Queue: q}}
	}
	if _, err := c.EnqueueMany(ctx, specs); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		runs     = map[int]int{}
		all      = make(chan struct{}) // every task ran
		stopped  atomic.Bool           // intake has stopped
		after    atomic.Int64
		seen     = make(chan struct{})
		seenOnce sync.Once
	)
	handle := func(w *Worker) func(ctx context.Context, a aheadArgs) (struct{}, error) {
		return func(ctx context.Context, a aheadArgs) (struct{}, error) {
			if stopped.Load() {
				after.Add(1)
			}
			mu.Lock()
			runs[a.N]++
			if len(runs) == n && runs[a.N] == 1 {
				close(all)
			}
			mu.Unlock()
			if w != nil && w.ahead.waiting.Load() > 0 {
				seenOnce.Do(func() { close(seen) })
			}
			return struct{}{}, nil
		}
	}
	// A lease far longer than the test: a task left pending by w1 would not
	// come back in time.
	cfg := Config{Concurrency: 1, Lease: time.Minute}
	var w1 *Worker
	w1 = startAhead(t, rdb, q, cfg, func(w *Worker) { w1 = w; Handle(w, handle(w)) })
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatal("no entry was read ahead")
	}
	marked := make(chan struct{})
	go func() {
		<-w1.intake.ctx.Done()
		stopped.Store(true)
		close(marked)
	}()
	if err := w1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	<-marked
	// The one slot may have been given to an entry before intake stopped,
	// its handler starting after.
	if a := after.Load(); a > 1 {
		t.Errorf("%d handlers started after intake stopped, want at most 1 (Concurrency)", a)
	}
	w2 := startAhead(t, rdb, q, Config{Concurrency: 16, Lease: time.Minute}, func(w *Worker) { Handle(w, handle(nil)) })
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("%d of %d tasks ran: the others were not handed back", len(runs), n)
	}
	if err := w2.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		if runs[i] != 1 {
			t.Fatalf("task %d ran %d times, want once", i, runs[i])
		}
	}
}

// Only outcomes of handler runs move the read-ahead controller: hand-backs,
// parks for limits or rates and dead letters (sent with no run time) are
// neither counted as quick runs in the average nor as handlers that
// returned.
func TestAheadControllerCountsHandlerRunsOnly(t *testing.T) {
	newW := func() *Worker {
		return &Worker{results: make(chan *outcome, 1000), slots: make(chan struct{}, 1), support: newLoops()}
	}
	sendAll := func(w *Worker, n int, took time.Duration) {
		for i := 0; i < n; i++ {
			w.send(&outcome{j: &job{q: &queue{keys: keys.ForQueue("q")}, took: took}})
			<-w.results
		}
	}
	const batch = 256

	// Slow handlers, then many tasks parked without running: the allowance
	// stays at none.
	w := newW()
	w.ahead.allow.Store(batch)
	sendAll(w, 20, 4*time.Millisecond)
	w.ahead.adapt(true, batch)
	if a := w.ahead.allow.Load(); a != 0 {
		t.Fatalf("allowance %d after runs of 4ms, want 0", a)
	}
	sendAll(w, 50, 0)
	w.ahead.adapt(true, batch)
	if a := w.ahead.allow.Load(); a != 0 {
		t.Errorf("allowance %d after slow runs and 50 outcomes of no run, want 0 (the runs' average is %v)", a, time.Duration(w.ahead.runNs.Load()))
	}

	// A full read with no handler returned since the last one (only
	// hand-backs): no growth.
	w = newW()
	w.ahead.adapt(true, batch)
	sendAll(w, 10, 0)
	w.ahead.adapt(true, batch)
	if a := w.ahead.allow.Load(); a != 0 {
		t.Errorf("allowance %d after a full read with only hand-backs since the last, want 0", a)
	}
	// Quick runs do count.
	sendAll(w, 10, 50*time.Microsecond)
	w.ahead.adapt(true, batch)
	if a := w.ahead.allow.Load(); a != 16 {
		t.Errorf("allowance %d after quick runs and a full read, want 16", a)
	}
}

// When the support loops end, entries read ahead still queued are handed
// on: each ends its count in execs, so a Stop whose ctx ended first (the
// only one that leaves any: handBackAll put their tasks back) does not
// leave its goroutine waiting on execs for ever.
func TestAheadLoopEndLeavesNothingQueued(t *testing.T) {
	const n = 20
	w := &Worker{
		slots:    make(chan struct{}, 1),
		holds:    make(chan struct{}, n),
		results:  make(chan *outcome, n),
		inflight: map[jobKey]*job{},
		ended:    map[jobKey]endedRun{},
		intake:   newLoops(),
		support:  newLoops(),
	}
	w.ahead.queue = make(chan *job, n)
	w.ahead.started = make(chan struct{}, 1)
	q := &queue{keys: keys.ForQueue("q")}
	for i := 0; i < n; i++ {
		j := &job{q: q, entry: "1700000000000-" + string(rune('a'+i)), dlv: 1, hold: true}
		j.ctx, j.cancel = context.WithCancelCause(context.Background())
		w.inflight[jobKey{q.keys.Name, j.entry}] = j
		w.execs.Add(1)
		w.ahead.waiting.Add(1)
		w.ahead.queue <- j
	}
	execsDone := make(chan struct{})
	go func() { w.execs.Wait(); close(execsDone) }()
	w.intake.cancel()
	w.support.cancel()
	w.aheadLoop(w.support.ctx)
	t.Cleanup(func() {
		// What a Stop would leave: the waiter, unless every exec ended.
		for len(w.ahead.queue) > 0 {
			j := <-w.ahead.queue
			j.cancel(nil)
			w.execs.Done()
		}
	})
	if k := len(w.ahead.queue); k != 0 {
		t.Fatalf("%d entries read ahead left queued when aheadLoop returned", k)
	}
	select {
	case <-execsDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("execs did not end: %d entries read ahead still counted as waiting", w.ahead.waiting.Load())
	}
}

// A Stop whose ctx has already ended, while entries read ahead wait for
// their slots, leaves no goroutine waiting on execs (goleak, at the end of
// the package's tests, would report it), and every task it did not finish
// is back in its queue at once: another worker runs them all well within
// the lease. (Whether an entry is still queued when the support loops end
// is a race this test seldom loses; TestAheadLoopEndLeavesNothingQueued
// sets that case up.)
func TestAheadStopExpiredLeavesNoWaiter(t *testing.T) {
	t.Parallel()
	rdb := aheadRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	handle := func(w *Worker, seen func(), ran func(n int)) func(ctx context.Context, a aheadArgs) (struct{}, error) {
		return func(ctx context.Context, a aheadArgs) (struct{}, error) {
			if w != nil && w.ahead.waiting.Load() > 0 {
				seen()
			}
			ran(a.N)
			return struct{}{}, nil
		}
	}
	// A lease far longer than the test: a task left pending by a stopped
	// worker would not come back in time.
	cfg := Config{Concurrency: 1, Lease: time.Minute}
	for round := 0; round < 3; round++ {
		q := aheadQueue(t)
		const n = 600
		specs := make([]client.Spec, n)
		for i := range specs {
			specs[i] = client.Spec{Args: aheadArgs{N: i}, Opts: &client.EnqueueOpts{Queue: q}}
		}
		if _, err := c.EnqueueMany(ctx, specs); err != nil {
			t.Fatal(err)
		}
		var (
			mu   sync.Mutex
			runs = map[int]bool{}
			all  = make(chan struct{})
			seen = make(chan struct{})
			once sync.Once
		)
		ran := func(i int) {
			mu.Lock()
			defer mu.Unlock()
			if !runs[i] {
				runs[i] = true
				if len(runs) == n {
					close(all)
				}
			}
		}
		w := startAhead(t, rdb, q, cfg, func(w *Worker) {
			Handle(w, handle(w, func() { once.Do(func() { close(seen) }) }, ran))
		})
		select {
		case <-seen:
		case <-ctx.Done():
			t.Fatal("no entry was read ahead")
		}
		ended, end := context.WithCancel(context.Background())
		end()
		if err := w.Stop(ended); err != context.Canceled {
			t.Fatalf("Stop with an ended ctx: %v, want %v", err, context.Canceled)
		}
		done := make(chan struct{})
		go func() { w.execs.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("round %d: execs never ended: %d entries read ahead left queued", round, len(w.ahead.queue))
		}
		// A handler cancelled by that Stop may have run its task to the
		// end; the task is handed back all the same and runs again.
		w2 := startAhead(t, rdb, q, Config{Concurrency: 16, Lease: time.Minute}, func(w *Worker) { Handle(w, handle(nil, nil, ran)) })
		select {
		case <-all:
		case <-ctx.Done():
			mu.Lock()
			t.Fatalf("round %d: %d of %d tasks ran: the others were not handed back", round, len(runs), n)
		}
		if err := w2.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// StrictPriority holds at the default FetchBatch, while quick handlers
// drain a backlog of the lower queue (the case where a worker reads ahead
// of its free slots): once tasks of the higher queue are enqueued, no task
// of the lower one starts before them but those given a slot before the
// enqueue returned, at most Concurrency. An entry of the lower queue read
// ahead, waiting for its slot, would start before them. (Each round is
// set off while entries are seen read ahead, if any ever are.)
func TestAheadStrictPriorityWithDefaultFetchBatch(t *testing.T) {
	t.Parallel()
	rdb := aheadRedis(t)
	q := aheadQueue(t)
	high, low := q+"-high", q+"-low"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const (
		nLow   = 1500
		rounds = 5
		every  = 200 // low tasks started between rounds, at most
		nHigh  = 20
		first  = 100000 // the Ns of the high queue's tasks begin here
	)
	specs := make([]client.Spec, nLow)
	for i := range specs {
		specs[i] = client.Spec{Args: aheadArgs{N: i}, Opts: &client.EnqueueOpts{Queue: low}}
	}
	if _, err := c.EnqueueMany(ctx, specs); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		order   []int // the Ns as their handlers started; -1 where an enqueue of the high queue returned
		lowRun  int
		nextAt  = every / 2
		armed   = true
		trigger = make(chan struct{}, 1)
		drained = make(chan struct{}) // every low task started
	)
	startAhead(t, rdb, q, Config{Queues: map[string]int{high: 10, low: 1}, StrictPriority: true, Concurrency: 1}, func(w *Worker) {
		Handle(w, func(ctx context.Context, a aheadArgs) (struct{}, error) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, a.N)
			if a.N >= first {
				return struct{}{}, nil
			}
			lowRun++
			if lowRun == nLow {
				close(drained)
			}
			if armed && (w.ahead.waiting.Load() > 0 || lowRun >= nextAt) {
				armed = false
				trigger <- struct{}{}
			}
			return struct{}{}, nil
		})
	})
rounds:
	for r := 0; r < rounds; r++ {
		select {
		case <-trigger:
		case <-drained:
			break rounds
		case <-ctx.Done():
			t.Fatalf("round %d: %v", r, ctx.Err())
		}
		hs := make([]client.Spec, nHigh)
		for i := range hs {
			hs[i] = client.Spec{Args: aheadArgs{N: first + 100*r + i}, Opts: &client.EnqueueOpts{Queue: high}}
		}
		handles, err := c.EnqueueMany(ctx, hs)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		order = append(order, -1)
		mu.Unlock()
		for _, h := range handles {
			if _, err := h.Outcome(ctx); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		nextAt, armed = lowRun+every, true
		mu.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	r := 0
	for i, n := range order {
		if n != -1 {
			continue
		}
		lows := 0
		for _, m := range order[i+1:] {
			if m >= first {
				break
			}
			lows++
		}
		if lows > 1 {
			t.Errorf("round %d: %d tasks of the lower queue started after the higher queue's enqueue returned, before its first task; want at most 1 (Concurrency)", r, lows)
		}
		r++
	}
	if r == 0 {
		t.Fatal("the lower queue drained before a round began")
	}
}
