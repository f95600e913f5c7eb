package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/ratelimit"
)

// clocked is a limiter on its own miniredis whose clock the test sets.
func clocked(t *testing.T, lim ratelimit.Limit) (*ratelimit.Limiter, func(time.Duration)) {
	t.Helper()
	mini := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) { mini.SetTime(base.Add(d)) }
	at(0)
	return ratelimit.New(rdb, lim), at
}

type turnT struct {
	turn int64
	wait time.Duration
}

// take calls Take and fails t on an error.
func take(t *testing.T, l *ratelimit.Limiter, turn int64) (bool, turnT) {
	t.Helper()
	ok, wait, next, err := l.Take(context.Background(), "k", 1, turn)
	if err != nil {
		t.Fatal(err)
	}
	return ok, turnT{next, wait}
}

// A turn is kept for its holder: a newcomer arriving at that moment queues
// behind the waiters, and the holder, a moment later, takes the token.
func TestTakeKeepsTurns(t *testing.T) {
	t.Parallel()
	l, at := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second}) // 100ms apart, burst 1
	if ok, _ := take(t, l, 0); !ok {
		t.Fatal("first take refused")
	}
	var turns []turnT
	for i := 0; i < 5; i++ {
		ok, tt := take(t, l, 0)
		if ok {
			t.Fatalf("waiter %d taken", i)
		}
		turns = append(turns, tt)
	}
	at(100 * time.Millisecond)
	if ok, tt := take(t, l, 0); ok || tt.wait < 450*time.Millisecond {
		t.Errorf("a newcomer at the first turn: taken %v, turn in %v (want behind the 5 waiters)", ok, tt.wait)
	}
	at(101 * time.Millisecond)
	if ok, _ := take(t, l, turns[0].turn); !ok {
		t.Error("the first waiter, at its turn, was refused")
	}
	// The second waiter, late after a late first one, is refused by a few
	// ms and keeps its place: its new turn is when the token is there.
	at(201 * time.Millisecond)
	if ok, tt := take(t, l, turns[1].turn); !ok && tt.wait > 10*time.Millisecond {
		t.Errorf("second waiter refused with a new turn in %v, want within the interval's slack", tt.wait)
	}
}

// Turns nobody comes back for are forgotten once the bucket is full again:
// a later caller does not queue behind them.
func TestTakeForgetsUnusedTurns(t *testing.T) {
	t.Parallel()
	l, at := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second})
	take(t, l, 0)
	for i := 0; i < 1000; i++ {
		take(t, l, 0) // 1,000 waiters that never come back
	}
	at(time.Second)
	if ok, _ := take(t, l, 0); !ok {
		t.Fatal("a full bucket refused a caller")
	}
	if ok, tt := take(t, l, 0); ok || tt.wait > 100*time.Millisecond {
		t.Errorf("next caller: taken %v, turn in %v; want the next token's time, 100ms", ok, tt.wait)
	}
}

// A clock stepped back an hour (a failover to a replica whose clock is
// behind, say) does not make a 10/s bucket wait an hour.
func TestClockBackDoesNotStall(t *testing.T) {
	t.Parallel()
	l, at := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second, Burst: 5})
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := l.Allow(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	at(-time.Hour)
	r, err := l.Allow(ctx, "k", 1)
	if err != nil || r.Allowed || r.RetryAfter > 100*time.Millisecond {
		t.Errorf("after the clock stepped back an hour: %+v, %v; want refused for at most one interval", r, err)
	}
}

// Refund gives events back, never past a full bucket.
func TestRefund(t *testing.T) {
	t.Parallel()
	l, _ := clocked(t, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 2})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if r, _ := l.Allow(ctx, "k", 1); !r.Allowed {
			t.Fatal("burst refused")
		}
	}
	for i := 0; i < 3; i++ { // one more than was taken
		if err := l.Refund(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for i := 0; i < 4; i++ {
		if r, _ := l.Allow(ctx, "k", 1); r.Allowed {
			n++
		}
	}
	if n != 2 {
		t.Errorf("after refunds %d allowed, want the burst, 2", n)
	}
}

// Callers arriving slowly, longer than an interval in all (a flood of tasks
// parked one by one under load), each get a turn of their own: turns being
// handed out are not forgotten, or the same times would go out twice and
// their holders collide at each one.
func TestTurnsHandedOutSlowlyAreDistinct(t *testing.T) {
	t.Parallel()
	l, at := clocked(t, ratelimit.Limit{Rate: 10, Per: time.Second})
	take(t, l, 0)
	seen := map[int64]bool{}
	for i := 0; i < 50; i++ {
		at(time.Duration(i) * 30 * time.Millisecond) // 1.5 s of arrivals, 100 ms interval
		ok, tt := take(t, l, 0)
		if ok {
			t.Fatalf("caller %d took a token while turns were outstanding", i)
		}
		if seen[tt.turn] {
			t.Fatalf("caller %d got turn %d, already handed out", i, tt.turn)
		}
		seen[tt.turn] = true
	}
}
