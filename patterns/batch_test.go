package patterns_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Double is an item of the "double" batches, which the worker side reads as
// ints (the same msgpack).
type Double int

func (Double) Kind() string { return "double" }

// doubles adapts a handler of the "double" batches' items read as ints.
func doubles(fn func(ctx context.Context, items []int) ([]int, error)) func(context.Context, []Double) ([]int, error) {
	return func(ctx context.Context, ds []Double) ([]int, error) {
		items := make([]int, len(ds))
		for i, d := range ds {
			items[i] = int(d)
		}
		return fn(ctx, items)
	}
}

// spacedKind is an item type whose kind is not a valid name.
type spacedKind int

func (spacedKind) Kind() string { return "a b" }

// batchLog records the batches a handler received.
type batchLog struct {
	mu      sync.Mutex
	batches [][]int
	seen    map[int]int // item → batches it was in
	fail    func(run int, items []int) error
	runs    int
}

func (l *batchLog) handle(ctx context.Context, items []int) ([]int, error) {
	l.mu.Lock()
	l.runs++
	run := l.runs
	l.batches = append(l.batches, append([]int(nil), items...))
	if l.seen == nil {
		l.seen = map[int]int{}
	}
	for _, it := range items {
		l.seen[it]++
	}
	fail := l.fail
	l.mu.Unlock()
	if fail != nil {
		if err := fail(run, items); err != nil {
			var be worker.BatchErrors
			if !errors.As(err, &be) {
				return nil, err
			}
			out := make([]int, len(items))
			for i, it := range items {
				out[i] = it * 2
			}
			return out, be
		}
	}
	out := make([]int, len(items))
	for i, it := range items {
		out[i] = it * 2
	}
	return out, nil
}

func (l *batchLog) sizes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s []int
	for _, b := range l.batches {
		s = append(s, len(b))
	}
	return s
}

// Items from many goroutines fill batches of MaxSize; the rest starts
// MaxWait after its first item; each item is in exactly one batch and gets
// its own result.
func TestBatchSizeAndWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var log batchLog
	b.worker(t, nil, func(w *worker.Worker) { worker.HandleBatch(w, doubles(log.handle)) })
	testenv.StartCoordinators(t, b.env, 1)
	ctx := ctxT(t)
	// MaxWait long enough for 25 appends under any CI load.
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 10, MaxWait: 2 * time.Second, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	const n = 25
	hs := make([]*client.Handle, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := bt.Append(ctx, Double(i))
			if err != nil {
				t.Error(err)
				return
			}
			hs[i] = h
		}()
	}
	wg.Wait()
	for i, h := range hs {
		v, err := client.Result[int](ctx, h)
		if err != nil || v != 2*i {
			t.Fatalf("item %d: %d, %v", i, v, err)
		}
	}
	took := time.Since(start)
	log.mu.Lock()
	defer log.mu.Unlock()
	total, full := 0, 0
	for _, b := range log.batches {
		total += len(b)
		if len(b) == 10 {
			full++
		}
		if len(b) > 10 {
			t.Errorf("a batch of %d items, MaxSize 10", len(b))
		}
	}
	for i := 0; i < n; i++ {
		if log.seen[i] != 1 {
			t.Errorf("item %d was in %d batches", i, log.seen[i])
		}
	}
	if total != n || full < 2 {
		t.Errorf("batches %v: want 25 items with two full batches", log.batches)
	}
	if took < 1900*time.Millisecond {
		t.Errorf("the last, partial batch ran after %v, before MaxWait", took)
	}
}

// Flush starts the open batch at once; a cancelled item is left out; an
// item's continuation runs after it; an item error dead-letters that item
// alone, and RetryDead runs it as a batch of one.
func TestBatchFlushCancelContinueErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	log := batchLog{fail: func(run int, items []int) error {
		be := worker.BatchErrors{}
		for i, it := range items {
			if it == 3 && run == 1 {
				be[i] = errors.New("three is bad")
			}
		}
		if len(be) == 0 {
			return nil
		}
		return be
	}}
	b.worker(t, nil, func(w *worker.Worker) {
		worker.HandleBatch(w, doubles(log.handle))
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			v, err := worker.ParentResult[int](ctx)
			return v + a.N, err
		})
	})
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 100, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := hs[1].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel item 2: %q %v", st, err)
	}
	cont, err := hs[0].ContinueWith(ctx, Square{N: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := hs[0].State(ctx); st != client.StateWaiting {
		t.Fatalf("item before its batch runs: %q, want waiting", st)
	}
	ok, err := bt.Flush(ctx)
	if err != nil || !ok {
		t.Fatalf("Flush: %v %v", ok, err)
	}
	if ok, err := bt.Flush(ctx); err != nil || ok {
		t.Fatalf("second Flush: %v %v (nothing open)", ok, err)
	}
	if v, err := client.Result[int](ctx, cont); err != nil || v != 102 {
		t.Fatalf("continuation of item 1: %d, %v; want 102", v, err)
	}
	if v, err := client.Result[int](ctx, hs[3]); err != nil || v != 8 {
		t.Fatalf("item 4: %d, %v", v, err)
	}
	if _, err := client.Result[int](ctx, hs[2]); !errors.Is(err, client.ErrDead) || !strings.Contains(err.Error(), "three is bad") {
		t.Fatalf("item 3: %v, want dead with its own error", err)
	}
	if _, err := hs[1].Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("item 2: %v, want cancelled", err)
	}
	log.mu.Lock()
	first := log.batches[0]
	log.mu.Unlock()
	if len(first) != 3 {
		t.Fatalf("batch %v: want items 1, 3, 4 (2 was cancelled)", first)
	}
	if _, err := b.c.RetryDead(ctx, hs[2].ID()); err != nil {
		t.Fatal(err)
	}
	if v, err := client.Result[int](ctx, hs[2]); err != nil || v != 6 {
		t.Fatalf("item 3 retried: %d, %v", v, err)
	}
}

// A batch whose handler fails as a whole runs again with the same items; a
// permanent failure dead-letters every item.
func TestBatchWholeFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	log := batchLog{fail: func(run int, items []int) error {
		switch {
		case items[0] >= 100:
			return worker.Permanent(errors.New("no hundreds"))
		case run == 1:
			return errors.New("transient")
		}
		return nil
	}}
	b.worker(t, nil, func(w *worker.Worker) { worker.HandleBatch(w, doubles(log.handle)) })
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 3, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if v, err := client.Result[int](ctx, h); err != nil || v != 2*(i+1) {
			t.Fatalf("item %d: %d, %v", i, v, err)
		}
	}
	if s := log.sizes(); len(s) != 2 || s[0] != 3 || s[1] != 3 {
		t.Fatalf("batch runs %v, want the same 3 items twice", s)
	}
	hs, err = bt.AppendMany(ctx, []Double{100, 101, 102})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrDead) || !strings.Contains(err.Error(), "no hundreds") {
			t.Fatalf("item %d: %v, want dead", i, err)
		}
	}
	dead, err := b.c.DeadTasks(ctx, b.queue, 0, 10)
	if err != nil || len(dead) != 3 {
		t.Fatalf("%d dead letters (%v), want the 3 items", len(dead), err)
	}
}

func TestBatchBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The kind is the item type's: one type per kind.
	newBatch := map[string]func(*patterns.BatchOpts) error{
		"a b": func(o *patterns.BatchOpts) error { _, err := patterns.NewBatch[spacedKind, int](b.c, o); return err },
		"k":   func(o *patterns.BatchOpts) error { _, err := patterns.NewBatch[Double, int](b.c, o); return err },
	}
	for _, tc := range []struct {
		kind string
		opts *patterns.BatchOpts
		want string
	}{
		{"a b", &patterns.BatchOpts{MaxSize: 1, MaxWait: time.Second}, `kind name "a b"`},
		{"k", &patterns.BatchOpts{MaxSize: 0, MaxWait: time.Second}, "MaxSize is 0"},
		{"k", &patterns.BatchOpts{MaxSize: 10001, MaxWait: time.Second}, "MaxSize is 10001"},
		{"k", &patterns.BatchOpts{MaxSize: 1}, "MaxWait is 0s"},
		{"k", &patterns.BatchOpts{MaxSize: 1, MaxWait: time.Second, Queue: "a/b"}, "EnqueueOpts.Queue"},
		{"k", nil, "MaxSize is 0"}, // MaxSize and MaxWait have no defaults
	} {
		if err := newBatch[tc.kind](tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %+v: %v, want an error containing %q", tc.kind, tc.opts, err, tc.want)
		}
	}
}

// A batch dead-lettered without a run recording it (a poison entry: its
// worker died on every delivery) takes its items with it: each ends dead.
// Real Redis (delivery counts).
func TestBatchPoisonEndsItems(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 3, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3}) // full: in the stream
	if err != nil {
		t.Fatal(err)
	}
	// A consumer that takes the batch and dies.
	q := keys.ForQueue(b.queue)
	if err := b.env.RDB.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "workers", Consumer: "ghost", Streams: []string{q.Stream(), ">"}, Count: 10}).Err(); err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{}, 1)
	b.worker(t, &worker.Config{MaxDeliveries: 1, Lease: 300 * time.Millisecond}, func(w *worker.Worker) {
		worker.HandleBatch(w, doubles(func(ctx context.Context, items []int) ([]int, error) {
			ran <- struct{}{}
			return items, nil
		}))
	})
	for i, h := range hs {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrDead) {
			t.Fatalf("item %d: %v, want dead with its batch", i, err)
		}
	}
	select {
	case <-ran:
		t.Fatal("the poison batch ran")
	default:
	}
	dead, err := b.c.DeadTasks(ctx, b.queue, 0, 10)
	if err != nil || len(dead) != 3 {
		t.Fatalf("%d dead letters (%v), want the 3 items (not the batch)", len(dead), err)
	}
}

// A batch of 5,000 items is recorded (its results take several commands),
// and Append calls from many goroutines, some giving up, each get their own
// answer.
func TestBatchLargeAndConcurrentAppends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var log batchLog
	b.worker(t, nil, func(w *worker.Worker) { worker.HandleBatch(w, doubles(log.handle)) })
	ctx := ctxT(t)
	big, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 5000, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	items := make([]Double, 5000)
	for i := range items {
		items[i] = Double(i)
	}
	hs, err := big.AppendMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2999, 4999} {
		if v, err := client.Result[int](ctx, hs[i]); err != nil || v != 2*i {
			t.Fatalf("item %d of the big batch: %d, %v", i, v, err)
		}
	}
	small, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 7, MaxWait: 50 * time.Millisecond, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int]*client.Handle{}
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx := ctx
			if i%3 == 0 {
				var cancel context.CancelFunc
				actx, cancel = context.WithTimeout(ctx, time.Duration(i%5)*time.Millisecond)
				defer cancel()
			}
			h, err := small.Append(actx, Double(10000+i))
			if err != nil {
				if i%3 != 0 {
					t.Errorf("append %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			got[10000+i] = h
			mu.Unlock()
		}()
	}
	wg.Wait()
	for v, h := range got {
		if r, err := client.Result[int](ctx, h); err != nil || r != 2*v {
			t.Fatalf("item %d: %d, %v", v, r, err)
		}
	}
	if len(got) < 200 {
		t.Fatalf("%d of 300 appends answered, want at least the 200 without a deadline", len(got))
	}
}

// Item ids that are not canonical, or past the end of their batch, are no
// items: no state, no cancel.
func TestBatchItemIDsChecked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 10, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	batch := strings.TrimSuffix(hs[2].ID(), ".2")
	for _, id := range []string{batch + ".02", batch + ".3", batch + ".999"} {
		h, err := b.c.Task(id)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := h.State(ctx); err == nil || st != "" {
			t.Errorf("%s: state %q, %v; want not found", id, st, err)
		}
		if _, err := h.Cancel(ctx); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("cancel %s: %v, want not found", id, err)
		}
	}
	if st, err := hs[2].State(ctx); err != nil || st != client.StateWaiting {
		t.Fatalf("item 2: %q, %v", st, err)
	}
}

// An item watched and continued while its batch runs (marked after the
// worker read the batch) still has its watcher told and its continuation
// fired when the batch is recorded.
func TestBatchItemMarkedWhileRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started, release := make(chan struct{}), make(chan struct{})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.HandleBatch(w, doubles(func(ctx context.Context, items []int) ([]int, error) {
			close(started)
			<-release
			out := make([]int, len(items))
			for i, it := range items {
				out[i] = 2 * it
			}
			return out, nil
		}))
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			v, err := worker.ParentResult[int](ctx)
			return v + a.N, err
		})
	})
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 3, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3}) // full: runs at once
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cont, err := hs[1].ContinueWith(ctx, Square{N: 1000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		v, _ := client.Result[int](ctx, hs[2])
		got <- v
	}()
	// Let the watcher register before the batch ends.
	testenv.Eventually(t, 10*time.Second, "the watcher's mark", func() bool {
		n, _ := b.env.RDB.SCard(ctx, keys.ForQueue(b.queue).BatchMarked(strings.TrimSuffix(strings.TrimPrefix(hs[2].ID(), b.queue+"/"), ".2"))).Result()
		return n == 2
	})
	close(release)
	if v, err := client.Result[int](ctx, cont); err != nil || v != 1004 {
		t.Fatalf("continuation of item 2: %d, %v", v, err)
	}
	select {
	case v := <-got:
		if v != 6 {
			t.Fatalf("item 3: %d", v)
		}
	case <-ctx.Done():
		t.Fatal("the watcher of item 3 was not told")
	}
}
