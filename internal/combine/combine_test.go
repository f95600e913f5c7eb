package combine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// log records what a send function was given.
type log struct {
	mu       sync.Mutex
	batches  [][]int
	sent     map[int]int // times each request was sent
	inFlight atomic.Int32
	maxIn    atomic.Int32
}

// send answers each request r with 2r+1, after recording the batch.
func (l *log) send(cfg Config, t *testing.T) SendFunc[int, int] {
	return func(ctx context.Context, batch []*Call[int, int]) error {
		n := l.inFlight.Add(1)
		defer l.inFlight.Add(-1)
		for m := l.maxIn.Load(); n > m && !l.maxIn.CompareAndSwap(m, n); m = l.maxIn.Load() {
		}
		if cfg.MaxBatch > 0 && len(batch) > cfg.MaxBatch {
			t.Errorf("a batch of %d requests, MaxBatch %d", len(batch), cfg.MaxBatch)
		}
		ids := make([]int, len(batch))
		for i, c := range batch {
			ids[i] = c.Req
			c.Res = 2*c.Req + 1
		}
		l.mu.Lock()
		l.batches = append(l.batches, ids)
		if l.sent == nil {
			l.sent = map[int]int{}
		}
		for _, id := range ids {
			l.sent[id]++
		}
		l.mu.Unlock()
		runtime.Gosched() // let others queue up meanwhile
		return nil
	}
}

func (l *log) got() [][]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.batches)
}

// eventually polls cond as testenv.Eventually does (testenv imports a
// user of this package: it cannot be imported here).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// idle checks that cb holds no leader slot and no queued request.
func idle[Req, Res any](t *testing.T, cb *Combiner[Req, Res]) {
	t.Helper()
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if cb.leaders != 0 || len(cb.pending) != 0 {
		t.Fatalf("%d leader slots taken, %d requests queued; want none", cb.leaders, len(cb.pending))
	}
}

type result struct {
	v   int
	err error
}

// do runs Do in a goroutine; its answer comes on the channel.
func do(cb *Combiner[int, int], ctx context.Context, r int) chan result {
	ch := make(chan result, 1)
	go func() {
		v, err := cb.Do(ctx, r)
		ch <- result{v, err}
	}()
	return ch
}

// queue runs Do for each of rs in turn, each once the one before queued up
// (every leader slot must be taken).
func queue(t *testing.T, cb *Combiner[int, int], ctx context.Context, rs ...int) []chan result {
	t.Helper()
	var out []chan result
	for _, r := range rs {
		n := cb.Queued()
		out = append(out, do(cb, ctx, r))
		eventually(t, fmt.Sprintf("request %d to queue up", r), func() bool { return cb.Queued() == n+1 })
	}
	return out
}

func hold(t *testing.T, cb *Combiner[int, int]) func() {
	t.Helper()
	release, ok := cb.Hold()
	if !ok {
		t.Fatal("no leader slot free")
	}
	return release
}

// A lone caller sends at once, alone: sequential calls are never batched.
func TestLoneCallsSendAlone(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 4}
	cb := New(cfg, l.send(cfg, t))
	for i := range 10 {
		if v, err := cb.Do(context.Background(), i); v != 2*i+1 || err != nil {
			t.Fatalf("Do(%d) = %d, %v", i, v, err)
		}
	}
	if got := l.got(); len(got) != 10 || slices.ContainsFunc(got, func(b []int) bool { return len(b) != 1 }) {
		t.Fatalf("batches %v, want 10 of one", got)
	}
	idle(t, cb)
}

// Many callers at once, their ctx cancelled at random moments (before Do,
// while queued, as the lead is handed on, while in flight): every request
// is sent at most once and answered with its own answer; a withdrawn one
// (ctx.Err() returned) was never sent, unless DropInFlight dropped its
// answer; batches keep within MaxBatch and MaxLeaders; the combiner ends
// idle.
func TestManyCallersCancelledAtRandom(t *testing.T) {
	for _, cfg := range []Config{
		{MaxLeaders: 1},
		{MaxLeaders: 4},
		{MaxLeaders: 1, MaxBatch: 7},
		{MaxLeaders: 4, MaxBatch: 3},
		{MaxLeaders: 4, DropInFlight: true},
		{MaxLeaders: 2, MaxBatch: 5, DropInFlight: true, Timeout: time.Hour},
	} {
		t.Run(fmt.Sprintf("%+v", cfg), func(t *testing.T) {
			const goroutines, calls = 32, 150
			var l log
			cb := New(cfg, l.send(cfg, t))
			var (
				wg        sync.WaitGroup
				mu        sync.Mutex
				answered  = map[int]bool{}
				withdrawn = map[int]bool{}
			)
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range calls {
						r := g*calls + i
						ctx, cancel := context.WithCancel(context.Background())
						switch rand.IntN(3) {
						case 0:
							go cancel() // at any stage
						case 1:
							cancel() // before Do
						}
						v, err := cb.Do(ctx, r)
						cancel()
						mu.Lock()
						switch {
						case err == nil && v == 2*r+1:
							answered[r] = true
						case errors.Is(err, context.Canceled):
							withdrawn[r] = true
						default:
							t.Errorf("Do(%d) = %d, %v", r, v, err)
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			idle(t, cb)
			if m := l.maxIn.Load(); int(m) > cfg.MaxLeaders {
				t.Errorf("%d batches in flight at once, MaxLeaders %d", m, cfg.MaxLeaders)
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			for r, n := range l.sent {
				if n != 1 {
					t.Errorf("request %d sent %d times", r, n)
				}
				if withdrawn[r] && !cfg.DropInFlight {
					t.Errorf("request %d was sent, but Do returned ctx.Err()", r)
				}
			}
			for r := range answered {
				if l.sent[r] != 1 {
					t.Errorf("request %d answered, but sent %d times", r, l.sent[r])
				}
			}
			if len(answered)+len(withdrawn) != goroutines*calls {
				t.Errorf("%d answered + %d withdrawn of %d", len(answered), len(withdrawn), goroutines*calls)
			}
			batched := 0
			for _, b := range l.batches {
				if len(b) > 1 {
					batched++
				}
			}
			t.Logf("%d answered, %d withdrawn, %d batches, %d of them combined", len(answered), len(withdrawn), len(l.batches), batched)
		})
	}
}

// Queued requests go out in the order they came, MaxBatch at a time, each
// batch led by its oldest request.
func TestBatchesInArrivalOrder(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 1, MaxBatch: 3}
	cb := New(cfg, l.send(cfg, t))
	release := hold(t, cb)
	chs := queue(t, cb, context.Background(), 0, 1, 2, 3, 4, 5, 6)
	release()
	for i, ch := range chs {
		if r := <-ch; r.v != 2*i+1 || r.err != nil {
			t.Fatalf("request %d: %d, %v", i, r.v, r.err)
		}
	}
	if got, want := l.got(), [][]int{{0, 1, 2}, {3, 4, 5}, {6}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	idle(t, cb)
}

// Hold refuses once every leader slot is taken.
func TestHoldTakesASlot(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 2}
	cb := New(cfg, l.send(cfg, t))
	r1, r2 := hold(t, cb), hold(t, cb)
	if _, ok := cb.Hold(); ok {
		t.Fatal("Hold took a third slot of 2")
	}
	r1()
	r1() // once only
	r2()
	idle(t, cb)
}

// A request whose ctx ends while it is queued is withdrawn: Do returns
// ctx.Err() at once, and it is never sent; the others are.
func TestWithdrawnWhileQueued(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 2}
	cb := New(cfg, l.send(cfg, t))
	r1, r2 := hold(t, cb), hold(t, cb)
	ctx, cancel := context.WithCancel(context.Background())
	chs := queue(t, cb, context.Background(), 0)
	chs = append(chs, queue(t, cb, ctx, 1)...)
	chs = append(chs, queue(t, cb, context.Background(), 2)...)
	cancel()
	if r := <-chs[1]; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("withdrawn request: %d, %v; want context.Canceled", r.v, r.err)
	}
	if n := cb.Queued(); n != 2 {
		t.Fatalf("%d queued after a withdrawal of 3, want 2", n)
	}
	r1()
	for _, i := range []int{0, 2} {
		if r := <-chs[i]; r.v != 2*i+1 || r.err != nil {
			t.Fatalf("request %d: %d, %v", i, r.v, r.err)
		}
	}
	r2()
	if got, want := l.got(), [][]int{{0, 2}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	idle(t, cb)
}

// A request whose ctx ends just as the lead is handed to it is withdrawn
// all the same, and passes the lead on: the request queued behind it is
// sent.
func TestWithdrawnAsLeadIsHanded(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 1}
	cb := New(cfg, l.send(cfg, t))
	_ = hold(t, cb) // its slot is handed on below
	ctx, cancel := context.WithCancel(context.Background())
	chs := queue(t, cb, ctx, 0)
	chs = append(chs, queue(t, cb, context.Background(), 1)...)
	// The ctx ends first: the caller wakes to it and waits for cb.mu,
	// then finds the lead handed to it.
	cb.mu.Lock()
	cancel()
	cb.handOn()
	cb.mu.Unlock()
	if r := <-chs[0]; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("request handed the lead as its ctx ended: %d, %v; want context.Canceled", r.v, r.err)
	}
	if r := <-chs[1]; r.v != 3 || r.err != nil {
		t.Fatalf("request behind it: %d, %v", r.v, r.err)
	}
	if got, want := l.got(), [][]int{{1}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	idle(t, cb)
}

// gated is a send function that reports each batch on entered and waits
// for a value on open before answering it.
type gated struct {
	entered chan []int
	open    chan struct{}
	ctxErr  chan error // the send ctx's error, once open
	hasDL   chan bool  // whether the send ctx has a deadline
}

func newGated() *gated {
	return &gated{entered: make(chan []int, 16), open: make(chan struct{}), ctxErr: make(chan error, 16), hasDL: make(chan bool, 16)}
}

func (g *gated) send(ctx context.Context, batch []*Call[int, int]) error {
	ids := make([]int, len(batch))
	for i, c := range batch {
		ids[i] = c.Req
		c.Res = 2*c.Req + 1
	}
	g.entered <- ids
	<-g.open
	_, dl := ctx.Deadline()
	g.hasDL <- dl
	g.ctxErr <- ctx.Err()
	return nil
}

// inFlight starts a leader (request 0) whose send waits, queues 1 and 2
// (2 under ctx), and lets the leader finish: 1 leads a batch of 1 and 2,
// whose send waits in turn.
func inFlight(t *testing.T, cfg Config, ctx context.Context) (g *gated, cb *Combiner[int, int], chs []chan result) {
	g = newGated()
	cb = New(cfg, g.send)
	chs = append(chs, do(cb, context.Background(), 0))
	if b := <-g.entered; !slices.Equal(b, []int{0}) {
		t.Fatalf("first batch %v", b)
	}
	chs = append(chs, queue(t, cb, context.Background(), 1)...)
	chs = append(chs, queue(t, cb, ctx, 2)...)
	g.open <- struct{}{}
	if b := <-g.entered; !slices.Equal(b, []int{1, 2}) {
		t.Fatalf("second batch %v", b)
	}
	return g, cb, chs
}

// A request whose ctx ends while it is in flight gets its answer: the
// write may have been done, and is reported.
func TestInFlightAnswerStands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g, cb, chs := inFlight(t, Config{MaxLeaders: 1}, ctx)
	cancel()
	g.open <- struct{}{}
	for i, ch := range chs {
		if r := <-ch; r.v != 2*i+1 || r.err != nil {
			t.Fatalf("request %d: %d, %v; want its answer", i, r.v, r.err)
		}
	}
	idle(t, cb)
}

// With DropInFlight, Do returns ctx.Err() at once when its ctx ends while
// its request is in flight (its send has not returned yet).
func TestInFlightDropped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g, cb, chs := inFlight(t, Config{MaxLeaders: 1, DropInFlight: true}, ctx)
	cancel()
	if r := <-chs[2]; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("dropped request: %d, %v; want context.Canceled", r.v, r.err)
	}
	g.open <- struct{}{}
	for i, ch := range chs[:2] {
		if r := <-ch; r.v != 2*i+1 || r.err != nil {
			t.Fatalf("request %d: %d, %v; want its answer", i, r.v, r.err)
		}
	}
	idle(t, cb)
}

// The leader's ctx ending does not cut its batch: the send ctx keeps
// going (bounded by Timeout), the leader gets its answer, and the requests
// queued behind it are sent next.
func TestLeaderCtxEndsWhileOthersWait(t *testing.T) {
	g := newGated()
	cb := New(Config{MaxLeaders: 1, Timeout: time.Hour}, g.send)
	ctx, cancel := context.WithCancel(context.Background())
	chs := []chan result{do(cb, ctx, 0)}
	<-g.entered
	chs = append(chs, queue(t, cb, context.Background(), 1, 2)...)
	cancel()
	g.open <- struct{}{}
	if err, dl := <-g.ctxErr, <-g.hasDL; err != nil || !dl {
		t.Fatalf("send ctx of a leader whose ctx ended: err %v, deadline %v; want alive, with Timeout's deadline", err, dl)
	}
	if b := <-g.entered; !slices.Equal(b, []int{1, 2}) {
		t.Fatalf("second batch %v", b)
	}
	g.open <- struct{}{}
	for i, ch := range chs {
		if r := <-ch; r.v != 2*i+1 || r.err != nil {
			t.Fatalf("request %d: %d, %v; want its answer", i, r.v, r.err)
		}
	}
	idle(t, cb)
}

// An error the send function returns is the answer of every request of
// its batch.
func TestSendErrorReachesEveryRequest(t *testing.T) {
	boom := errors.New("boom")
	cb := New(Config{MaxLeaders: 1}, func(ctx context.Context, batch []*Call[int, int]) error {
		batch[0].Res = 7 // an answer set is not an error's
		return boom
	})
	release := hold(t, cb)
	chs := queue(t, cb, context.Background(), 0, 1, 2)
	release()
	for i, ch := range chs {
		if r := <-ch; !errors.Is(r.err, boom) {
			t.Fatalf("request %d: %d, %v; want boom", i, r.v, r.err)
		}
	}
	idle(t, cb)
}

// A panic of the send function reaches every caller of its batch, the
// leader included, as a *PanicError; the combiner goes on serving.
func TestSendPanicReachesEveryCaller(t *testing.T) {
	var panics atomic.Bool
	panics.Store(true)
	cb := New(Config{MaxLeaders: 1}, func(ctx context.Context, batch []*Call[int, int]) error {
		if panics.Load() {
			panic("boom")
		}
		for _, c := range batch {
			c.Res = 2*c.Req + 1
		}
		return nil
	})
	caught := make(chan any, 3)
	call := func(r int) {
		defer func() { caught <- recover() }()
		_, _ = cb.Do(context.Background(), r)
	}
	release := hold(t, cb)
	for i := range 3 {
		go call(i)
		eventually(t, "a request to queue up", func() bool { return cb.Queued() == i+1 })
	}
	release()
	for range 3 {
		p, ok := (<-caught).(*PanicError)
		if !ok || p.Value != "boom" || len(p.Stack) == 0 {
			t.Fatalf("recovered %v, want a *PanicError of boom with its stack", p)
		}
	}
	go call(3) // alone: a leader's own panic
	if p, ok := (<-caught).(*PanicError); !ok || p.Value != "boom" {
		t.Fatalf("leader recovered %v, want a *PanicError of boom", p)
	}
	panics.Store(false)
	if v, err := cb.Do(context.Background(), 4); v != 9 || err != nil {
		t.Fatalf("after the panics: %d, %v", v, err)
	}
	idle(t, cb)
}

// A send function that exits its goroutine (t.FailNow in a test, say)
// ends only its leader's: the others of the batch get ErrGoexit, and the
// lead passes on.
func TestSendGoexit(t *testing.T) {
	cb := New(Config{MaxLeaders: 1}, func(ctx context.Context, batch []*Call[int, int]) error {
		if batch[0].Req == 0 {
			runtime.Goexit()
		}
		for _, c := range batch {
			c.Res = 2*c.Req + 1
		}
		return nil
	})
	release := hold(t, cb)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_, _ = cb.Do(context.Background(), 0)
		t.Error("Do returned in a goroutine its send function exited")
	}()
	eventually(t, "request 0 to queue up", func() bool { return cb.Queued() == 1 })
	chs := queue(t, cb, context.Background(), 1)
	release()
	<-exited
	if r := <-chs[0]; !errors.Is(r.err, ErrGoexit) {
		t.Fatalf("request 1: %d, %v; want ErrGoexit", r.v, r.err)
	}
	if v, err := cb.Do(context.Background(), 2); v != 5 || err != nil {
		t.Fatalf("after the exit: %d, %v", v, err)
	}
	idle(t, cb)
}

// BenchmarkDo measures the combiner around a send function that does
// nothing, from as many goroutines as -cpu says (times 16).
func BenchmarkDo(b *testing.B) {
	for _, leaders := range []int{1, 4} {
		b.Run(fmt.Sprintf("leaders=%d", leaders), func(b *testing.B) {
			cb := New(Config{MaxLeaders: leaders}, func(ctx context.Context, batch []*Call[int, int]) error {
				for _, c := range batch {
					c.Res = c.Req
				}
				return nil
			})
			ctx := context.Background()
			b.SetParallelism(16)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					if v, err := cb.Do(ctx, i); v != i || err != nil {
						b.Errorf("Do(%d) = %d, %v", i, v, err)
					}
				}
			})
		})
	}
}

// Idle is true only while no leader slot is taken and nothing is queued.
func TestIdle(t *testing.T) {
	var l log
	cfg := Config{MaxLeaders: 1}
	cb := New(cfg, l.send(cfg, t))
	if !cb.Idle() {
		t.Fatal("a new Combiner is not idle")
	}
	r := hold(t, cb)
	if cb.Idle() {
		t.Fatal("idle with a leader slot taken")
	}
	chs := queue(t, cb, context.Background(), 7)
	r()
	if got := <-chs[0]; got.v != 15 || got.err != nil {
		t.Fatalf("request 7: %d, %v", got.v, got.err)
	}
	if !cb.Idle() {
		t.Fatal("not idle once every batch was answered")
	}
}
