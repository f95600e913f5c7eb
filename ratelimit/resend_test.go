package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
)

// resent makes the client it hooks run every call of the limiter's script
// twice, as go-redis does when the first reply is lost: the first run's
// reply is dropped, the caller reads the second's. Pipelined calls (the
// limiter sends concurrent calls in one pipeline) are sent twice too.
type resent struct{}

func isLimiterCall(cmd redis.Cmder) bool {
	a := cmd.Args()
	return cmd.Name() == "evalsha" && len(a) > 1 && a[1] == script.RateLimit.Hash()
}

func (resent) DialHook(next redis.DialHook) redis.DialHook { return next }

func (resent) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isLimiterCall(cmd) {
			if err := next(ctx, cmd); err != nil {
				return err // not run (NOSCRIPT): go-redis falls back to EVAL
			}
		}
		return next(ctx, cmd)
	}
}

func (resent) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if isLimiterCall(c) {
				_ = next(ctx, cmds)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// resendingLimiter is a limiter of lim on env's Redis whose every call is
// run twice; plain is one on an ordinary client, to look at the bucket.
func resendingLimiter(t *testing.T, lim ratelimit.Limit) (resending, plain *ratelimit.Limiter) {
	t.Helper()
	env := testenv.Redis(t)
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	if err := script.RateLimit.Load(context.Background(), rdb).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(resent{})
	return ratelimit.New(rdb, lim), ratelimit.New(env.RDB, lim)
}

// admitted counts the events Allow admits one by one until it refuses.
func admitted(t *testing.T, l *ratelimit.Limiter, k string) int {
	t.Helper()
	n := 0
	for ; n < 10; n++ {
		r, err := l.Allow(ctxT(t), k, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Allowed {
			break
		}
	}
	return n
}

// A refund whose reply was lost and that go-redis resent gives back what it
// names once: 1 per minute with a burst of 2 admits 2 events, however the
// refund of a third travels.
func TestRefundResentGivesBackOnce(t *testing.T) {
	t.Parallel()
	lim := ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 2}
	rl, plain := resendingLimiter(t, lim)
	k := key(t)
	if n := admitted(t, plain, k); n != 2 {
		t.Fatalf("%d admitted from a full bucket, want 2", n)
	}
	if err := rl.Refund(ctxT(t), k, 1); err != nil {
		t.Fatal(err)
	}
	if n := admitted(t, plain, k); n != 1 {
		t.Fatalf("%d events admitted after a refund of 1 (3 in all where 2 are allowed a minute)", n)
	}
}

// Every call that takes is resend safe too: a resent Allow, Take or
// Reserve takes n once, and a resent refused Take queues its caller once.
func TestTakesResentTakeOnce(t *testing.T) {
	t.Parallel()
	lim := ratelimit.Limit{Rate: 1, Per: time.Minute, Burst: 3}
	for _, mode := range []string{"allow", "take", "reserve", "wait"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			rl, plain := resendingLimiter(t, lim)
			k := key(t)
			switch mode {
			case "allow":
				r, err := rl.Allow(ctxT(t), k, 1)
				if err != nil || !r.Allowed || r.Remaining != 2 {
					t.Fatalf("resent Allow: %+v %v, want allowed with 2 left", r, err)
				}
			case "take":
				ok, _, _, err := rl.Take(ctxT(t), k, 1, 0)
				if err != nil || !ok {
					t.Fatalf("resent Take: %v %v", ok, err)
				}
			case "reserve":
				d, err := rl.Reserve(ctxT(t), k, 1)
				if err != nil || d != 0 {
					t.Fatalf("resent Reserve: wait %v %v, want 0", d, err)
				}
			case "wait":
				if err := rl.Wait(ctxT(t), k, 1); err != nil {
					t.Fatal(err)
				}
			}
			if n := admitted(t, plain, k); n != 2 {
				t.Fatalf("%d events admitted after one of 3 was taken, want 2", n)
			}
		})
	}
	t.Run("refused take", func(t *testing.T) {
		t.Parallel()
		rl, plain := resendingLimiter(t, lim)
		k := key(t)
		if n := admitted(t, plain, k); n != 3 {
			t.Fatalf("%d admitted from a full bucket, want 3", n)
		}
		// The first caller refused gets the next token: its turn comes
		// when that is there, within one interval.
		ok, wait, turn, err := rl.Take(ctxT(t), k, 1, 0)
		if err != nil || ok || turn == 0 {
			t.Fatalf("resent Take of an empty bucket: %v %v %v %v", ok, wait, turn, err)
		}
		if wait > time.Minute {
			t.Fatalf("first refused caller waits %v, more than the interval: it was queued twice", wait)
		}
		// The next caller is queued one interval behind it, not two.
		_, _, turn2, err := plain.Take(ctxT(t), k, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Duration(turn2-turn) * time.Microsecond; d != time.Minute {
			t.Fatalf("the next turn comes %v after the first, want one interval (1m)", d)
		}
	})
}

// Concurrent calls share pipelines; a resent pipeline takes once per call
// too: exactly the burst gets through.
func TestConcurrentResentAllowAdmitsBurst(t *testing.T) {
	t.Parallel()
	rl, _ := resendingLimiter(t, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 25})
	k := key(t)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				r, err := rl.Allow(ctxT(t), k, 1)
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
