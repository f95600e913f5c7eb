package ratelimit_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func key(t *testing.T) string { return "test:" + testenv.Queue(t) }

func TestBurstThenRefused(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	// One event every 6 minutes: no token comes back while the test runs,
	// however slowly a busy machine runs it.
	const interval = 6 * time.Minute
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 10, Per: time.Hour, Burst: 3})
	k := key(t)
	for i := 0; i < 3; i++ {
		r, err := l.Allow(ctx, k, 1)
		if err != nil || !r.Allowed || r.Remaining != 2-i {
			t.Fatalf("event %d: %+v, %v", i, r, err)
		}
	}
	r, err := l.Allow(ctx, k, 1)
	if err != nil || r.Allowed || r.Remaining != 0 {
		t.Fatalf("fourth: %+v, %v", r, err)
	}
	// One event takes an interval; the next fits within that.
	if r.RetryAfter <= 0 || r.RetryAfter > interval {
		t.Errorf("retry after %v, want (0, %v]", r.RetryAfter, interval)
	}
	// Refusals take nothing: a burst of 2 is refused as long as 1 is.
	r2, _ := l.Allow(ctx, k, 2)
	if r2.Allowed || r2.RetryAfter < r.RetryAfter {
		t.Errorf("n=2: %+v (n=1 waited %v)", r2, r.RetryAfter)
	}
	// Other keys are their own buckets.
	if r, err := l.Allow(ctx, k+"-b", 3); err != nil || !r.Allowed {
		t.Errorf("other key: %+v, %v", r, err)
	}
}

func TestWaitSleepsRetryAfter(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 50, Per: time.Second}) // 20ms apart
	k := key(t)
	start := time.Now()
	for i := 0; i < 6; i++ {
		if err := l.Wait(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Six events, the first at once: at least five intervals.
	if d := time.Since(start); d < 95*time.Millisecond {
		t.Errorf("6 events at 50/s took %v, want at least 100ms", d)
	}
}

// A Wait whose ctx ends leaves the bucket as it was.
func TestWaitCancelledTakesNothing(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 2})
	k := key(t)
	if err := l.Wait(ctx, k, 1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(wctx, k, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for 2 with 1 left: %v", err)
	}
	r, err := l.Allow(ctx, k, 1)
	if err != nil || !r.Allowed || r.Remaining != 0 {
		t.Errorf("the event left before the cancelled Wait: %+v, %v", r, err)
	}
}

// Many goroutines share one bucket: exactly Burst get through at once.
func TestConcurrentAllowNeverOverAdmits(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 25})
	k := key(t)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				r, err := l.Allow(ctx, k, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Allowed {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := ok.Load(); n != 25 {
		t.Errorf("%d of 160 allowed, want the burst, 25", n)
	}
}

// Concurrent calls whose ctx ends at any moment (while queued behind
// others, as their batch is sent): a call that returns an error took
// nothing, and every event taken was reported to its caller, so the events
// admitted plus those left make exactly the burst.
func TestConcurrentAllowCancelledTakesOnlyWhatItReports(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	lim := ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 100}
	l := ratelimit.New(env.RDB, lim)
	k := key(t)
	var ok, failed atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				ctx, cancel := context.WithTimeout(ctxT(t), time.Duration(rand.IntN(2000))*time.Microsecond)
				r, err := l.Allow(ctx, k, 1)
				cancel()
				switch {
				case errors.Is(err, context.DeadlineExceeded):
					failed.Add(1)
				case err != nil:
					t.Error(err)
				case r.Allowed:
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// One more event, by another limiter: what is left is what the
	// reported ones did not take (the bucket refills one an hour).
	r, err := ratelimit.New(env.RDB, lim).Allow(ctxT(t), k, 1)
	taken := int(ok.Load())
	t.Logf("%d allowed, %d cut short", taken, failed.Load())
	if err != nil || !r.Allowed || r.Remaining != lim.Burst-taken-1 {
		t.Errorf("%d allowed (%d cut short) of 80, burst 100; then %+v, %v; want allowed, %d remaining", taken, failed.Load(), r, err, lim.Burst-taken-1)
	}
}

// Redis' clock stepping back and forth: never more than the burst at once,
// never a negative count, and a clock back in time adds nothing. A real
// server's clock cannot be moved, so this runs on its own miniredis on every
// pass.
func TestClockJumps(t *testing.T) {
	t.Parallel()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := ctxT(t)
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	mini.SetTime(base)
	l := ratelimit.New(rdb, ratelimit.Limit{Rate: 10, Per: time.Second, Burst: 5})
	k := key(t)
	take := func() (int, ratelimit.Result) {
		n := 0
		var last ratelimit.Result
		for i := 0; i < 20; i++ {
			r, err := l.Allow(ctx, k, 1)
			if err != nil {
				t.Fatal(err)
			}
			if r.Remaining < 0 || r.Remaining > 4 || r.RetryAfter < 0 {
				t.Fatalf("result %+v", r)
			}
			last = r
			if r.Allowed {
				n++
			}
		}
		return n, last
	}
	if n, _ := take(); n != 5 {
		t.Fatalf("first burst: %d", n)
	}
	// Back an hour: nothing refills, and the wait is not an hour's worth of
	// tokens either way.
	mini.SetTime(base.Add(-time.Hour))
	if n, r := take(); n != 0 || r.RetryAfter > time.Hour+time.Second {
		t.Fatalf("after stepping back: %d allowed, %+v", n, r)
	}
	// Forward a day: the burst again, no more.
	mini.SetTime(base.Add(24 * time.Hour))
	if n, _ := take(); n != 5 {
		t.Fatalf("after a day: %d allowed, want the burst 5", n)
	}
	// Back to the first time: the day's events are in the future, nothing
	// fits.
	mini.SetTime(base)
	if n, _ := take(); n != 0 {
		t.Fatalf("back again: %d allowed", n)
	}
}

func TestReserveSpreads(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	l, _ := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second}) // 100ms apart, burst 1; the clock stands still
	k := key(t)
	var last time.Duration
	for i := 0; i < 5; i++ {
		d, err := l.Reserve(ctx, k, 1)
		if err != nil {
			t.Fatal(err)
		}
		want := time.Duration(i) * 100 * time.Millisecond
		if d != want {
			t.Errorf("reservation %d due in %v, want about %v", i, d, want)
		}
		if i > 0 && d <= last {
			t.Errorf("reservation %d due in %v, not after %v", i, d, last)
		}
		last = d
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	good := ratelimit.Limit{Rate: 1, Per: time.Second, Burst: 2}
	for _, tc := range []struct {
		l    *ratelimit.Limiter
		key  string
		n    int
		want string
	}{
		{ratelimit.New(env.RDB, ratelimit.Limit{Rate: 0, Per: time.Second}), "k", 1, "Limit.Rate is 0"},
		{ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1}), "k", 1, "Limit.Per"},
		{ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1, Per: time.Second, Burst: -1}), "k", 1, "Limit.Burst"},
		{ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1 << 30, Per: time.Second}), "k", 1, "resolution"},
		{ratelimit.New(nil, good), "k", 1, "redis client is nil"},
		{ratelimit.New(env.RDB, good), "", 1, "key is empty"},
		{ratelimit.New(env.RDB, good), "a{b}", 1, "allowed are"},
		{ratelimit.New(env.RDB, good), strings.Repeat("k", 257), 1, "limit is 256"},
		{ratelimit.New(env.RDB, good), "k", 0, "n is 0"},
		{ratelimit.New(env.RDB, good), "k", 3, "more than the burst of 2"},
	} {
		_, err := tc.l.Allow(ctx, tc.key, tc.n)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Allow(%q, %d) with %+v: %v, want an error containing %q", tc.key, tc.n, tc.l.Limit(), err, tc.want)
		}
		if err2 := tc.l.Wait(ctx, tc.key, tc.n); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("Wait: %v, want %v", err2, err)
		}
	}
}

// Refused callers of Take get turns one interval apart, and take nothing
// until they come back.
func TestTakeHandsOutTurns(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	l, _ := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second}) // 100ms apart; the clock stands still
	k := key(t)
	if ok, _, _, err := l.Take(ctx, k, 1, 0); err != nil || !ok {
		t.Fatalf("first take: %v, %v", ok, err)
	}
	var last time.Duration
	for i := 1; i <= 4; i++ {
		ok, d, _, err := l.Take(ctx, k, 1, 0)
		if err != nil || ok {
			t.Fatalf("take %d: %v, %v", i, ok, err)
		}
		want := time.Duration(i) * 100 * time.Millisecond
		if d != want {
			t.Errorf("turn %d in %v, want %v", i, d, want)
		}
		if d <= last {
			t.Errorf("turn %d in %v, not after %v", i, d, last)
		}
		last = d
	}
	// The refusals took nothing: the bucket's next event is still one
	// interval after the first.
	r, err := l.Allow(ctx, k, 1)
	if err != nil || r.Allowed || r.RetryAfter > 100*time.Millisecond {
		t.Errorf("after refused takes: %+v, %v", r, err)
	}
}

// Rates whose interval is not a whole number of µs (60/s: 16666.67 µs)
// admit like any other: an empty bucket takes its burst (a double holds
// today's µs only to a quarter µs; a regression refused every event).
func TestFractionalIntervals(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	for _, rate := range []int{60, 7, 3, 999983} {
		for _, burst := range []int{1, 5} {
			l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst})
			k := key(t) + "-" + time.Now().Format("150405.000000")
			for i := 0; i < burst; i++ {
				if r, err := l.Allow(ctx, k, 1); err != nil || !r.Allowed {
					t.Fatalf("rate %d burst %d: event %d of an empty bucket refused: %+v, %v", rate, burst, i, r, err)
				}
			}
			ok, _, _, err := l.Take(ctx, k+"-take", 1, 0)
			if err != nil || !ok {
				t.Fatalf("rate %d burst %d: Take from an empty bucket refused (%v)", rate, burst, err)
			}
		}
	}
}
