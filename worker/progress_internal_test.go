package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/engine"
)

// fakeWrites counts the writes a progress makes and keeps the last.
type fakeWrites struct {
	mu          sync.Mutex
	n           int
	done, total int64
	lastN       int64
	last        bool
	third       chan struct{} // closed at the third write
}

func (f *fakeWrites) write(done, total, n int64, last bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.done, f.total, f.lastN, f.last = done, total, n, last
	if f.n == 3 {
		close(f.third)
	}
}

// written is what a fakeWrites saw.
type written struct {
	n           int
	done, total int64
	lastN       int64
	last        bool
}

func (f *fakeWrites) get() written {
	f.mu.Lock()
	defer f.mu.Unlock()
	return written{n: f.n, done: f.done, total: f.total, lastN: f.lastN, last: f.last}
}

func testProgress(every time.Duration) (*progress, *fakeWrites) {
	f := &fakeWrites{third: make(chan struct{})}
	p := newProgress(nil)
	p.write, p.every = f.write, every
	return p, f
}

// A handler that returns before its first write was due writes nothing,
// however many reports it made (the interval is an hour here, so no
// machine is slow enough to reach it).
func TestProgressNothingBeforeFirstDue(t *testing.T) {
	p, f := testProgress(time.Hour)
	start := time.Now()
	p.begin(start)
	for i := range 100000 {
		p.report(int64(i), 100000)
	}
	p.finish(time.Now(), true, false)
	if got := f.get(); got.n != 0 {
		t.Fatalf("%d writes, want none", got.n)
	}
}

// Once a write was due, the last report is written when the handler
// returns, with done = total on success; on failure as reported; not at
// all once the lease is lost.
func TestProgressLastWrite(t *testing.T) {
	for _, c := range []struct {
		name        string
		ok, lost    bool
		writes      int
		done, total int64
	}{
		{"succeeded", true, false, 1, 100, 100},
		{"failed", false, false, 1, 30, 100},
		{"lease lost", false, true, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, f := testProgress(time.Hour)
			start := time.Now()
			p.begin(start)
			p.report(30, 100)
			// The handler returns after the first write was due (finish's
			// now decides; the timer, an hour off, never fires).
			p.finish(start.Add(2*time.Hour), c.ok, c.lost)
			got := f.get()
			if got.n != c.writes || got.done != c.done || got.total != c.total || c.writes > 0 && !got.last {
				t.Fatalf("writes %+v; want %d writes, the last %d/%d", got, c.writes, c.done, c.total)
			}
		})
	}
}

// Reports from many goroutines at once (parallel parts) are coalesced: a
// run of d makes at most d/every writes while it runs and one at its end,
// and the last write carries a report that was made.
func TestProgressCoalescedAcrossGoroutines(t *testing.T) {
	const every = 20 * time.Millisecond
	p, f := testProgress(every)
	start := time.Now()
	p.begin(start)
	var calls atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p.report(int64(g)*1_000_000+i, 0)
				calls.Add(1)
			}
		}()
	}
	<-f.third // a few writes were made
	close(stop)
	wg.Wait()
	p.finish(time.Now(), false, false)
	took := time.Since(start)
	got := f.get()
	if limit := int(took/every) + 1; got.n > limit {
		t.Fatalf("%d reports over %v made %d writes; want at most %d", calls.Load(), took, got.n, limit)
	}
	if got.lastN != int64(got.n) {
		t.Fatalf("the writes' counts end at %d after %d writes", got.lastN, got.n)
	}
	d, tot, ok := p.done, p.total, p.reported
	if !ok || got.done != d || got.total != tot {
		t.Fatalf("last write %d/%d, last report %d/%d", got.done, got.total, d, tot)
	}
}

// Bad numbers are clamped: negative ones to 0, done over a set total to
// the total.
func TestProgressClamped(t *testing.T) {
	ctx, release := handlerContext(context.Background(), engineTask(), engineInfo())
	defer release()
	for _, c := range []struct{ done, total, wantD, wantT int64 }{
		{-5, 10, 0, 10},
		{5, -10, 5, 0},
		{50, 10, 10, 10},
		{50, 0, 50, 0},
	} {
		ReportProgress(ctx, c.done, c.total)
		d, tot, ok := ReportedProgress(ctx)
		if !ok || d != c.wantD || tot != c.wantT {
			t.Errorf("ReportProgress(%d, %d) kept %d/%d, want %d/%d", c.done, c.total, d, tot, c.wantD, c.wantT)
		}
	}
	if _, _, ok := ReportedProgress(context.Background()); ok {
		t.Error("a ctx of no handler has a report")
	}
	ReportProgress(context.Background(), 1, 2) // does nothing, does not panic
}

// BenchmarkReportProgress is the cost of one call on a handler's ctx of a
// worker's attempt (the writes go on the timer's goroutine).
func BenchmarkReportProgress(b *testing.B) {
	p, _ := testProgress(progressEvery)
	ctx := context.WithValue(context.Background(), struct{}{}, 1)
	ctx, release := handlerContext(ctx, engineTask(), engineInfo())
	defer release()
	t, _ := taskValueOf(ctx)
	t.pg = p
	p.begin(time.Now())
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ReportProgress(ctx, int64(i), int64(b.N))
	}
	b.StopTimer()
	p.finish(time.Now(), false, true)
}

func engineTask() engine.HandlerTask {
	return engine.HandlerTask{ID: "q/run-1", Queue: "q", Kind: "k", Attempt: 1, MaxAttempts: 3, Deliveries: 1}
}

func engineInfo() *engine.TaskInfo { return &engine.TaskInfo{ID: "q/run-1", Given: &engine.Given{}} }

// BenchmarkReportProgressParallel is ReportProgress called from every
// core at once on one task (parallel parts of one upload).
func BenchmarkReportProgressParallel(b *testing.B) {
	p, _ := testProgress(progressEvery)
	ctx, release := handlerContext(context.Background(), engineTask(), engineInfo())
	defer release()
	t, _ := taskValueOf(ctx)
	t.pg = p
	p.begin(time.Now())
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var i int64
		for pb.Next() {
			i++
			ReportProgress(ctx, i, 0)
		}
	})
	b.StopTimer()
	p.finish(time.Now(), false, true)
}
