package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
)

// grace is how long the marker of a call whose reply was read lives once a
// later call cut it (the package's markerGrace).
const grace = 2 * time.Second

// longMarkers counts the op markers of k's bucket that live longer than the
// grace: those of calls whose replies the limiter has not read, or that no
// later call has cut yet.
func longMarkers(t *testing.T, rdb redis.UniversalClient, k string) int {
	t.Helper()
	ctx := ctxT(t)
	var mu sync.Mutex
	n := 0
	scan := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, ratelimit.BucketKey(k)+":op:*", 1000).Iterator()
		for it.Next(ctx) {
			d, err := c.PTTL(ctx, it.Val()).Result()
			if err != nil {
				return err
			}
			if d > grace {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}
		return it.Err()
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		t.Fatalf("cannot scan a %T", rdb)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Once a call's reply is read, the next call on the bucket cuts its marker
// to the grace: after any number of calls one after another, only the last
// one's marker keeps the full resend window. (Before, each of the calls
// kept its marker for minutes: a hot bucket held millions.)
func TestMarkersOfReadRepliesAreCut(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 1000})
	k := key(t)
	for i := 0; i < 40; i++ {
		var err error
		switch i % 4 {
		case 0:
			_, err = l.Allow(ctx, k, 1)
		case 1:
			_, _, _, err = l.Take(ctx, k, 1, 0)
		case 2:
			_, err = l.Reserve(ctx, k, 1)
		case 3:
			err = l.Refund(ctx, k, 1)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := longMarkers(t, env.RDB, k); n != 1 {
		t.Fatalf("%d op markers live past the grace after 40 calls in turn, want 1 (the last call's)", n)
	}

	// A refused Allow wrote nothing and leaves no marker, but it cuts the
	// markers of the calls before it like any call.
	tight := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1})
	k2 := key(t)
	for i := 0; i < 5; i++ {
		if _, err := tight.Allow(ctx, k2, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := longMarkers(t, env.RDB, k2); n != 0 {
		t.Fatalf("%d op markers live past the grace after 1 allowed and 4 refused calls, want 0", n)
	}
}

// Concurrent calls hand each other the markers to cut: when they are done,
// only the markers of replies read after the last call began are left, and
// one more call cuts those.
func TestConcurrentCallsCutMarkers(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	l := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 100000, Per: time.Second, Burst: 100000})
	k := key(t)
	const goroutines = 16
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := l.Allow(ctx, k, 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := longMarkers(t, env.RDB, k); n > goroutines {
		t.Fatalf("%d op markers live past the grace after 400 calls, want at most one per goroutine, %d", n, goroutines)
	}
	if _, err := l.Allow(ctx, k, 1); err != nil {
		t.Fatal(err)
	}
	if n := longMarkers(t, env.RDB, k); n != 1 {
		t.Fatalf("%d op markers live past the grace after one more call, want 1", n)
	}
}

// lost makes the client it hooks lose the reply of the next limiter call
// while armed: the call runs, and the caller gets an error instead of its
// reply (as when go-redis gives up resending).
type lost struct{ armed *atomic.Bool }

func (lost) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h lost) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && isLimiterCall(cmd) && h.armed.CompareAndSwap(true, false) {
			err = errors.New("i/o timeout (test: reply lost)")
			cmd.SetErr(err)
		}
		return err
	}
}

func (lost) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A call whose reply the limiter never read keeps its marker for the whole
// resend window; the markers it was to cut are cut by the next call.
func TestLostReplyKeepsItsMarker(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	var armed atomic.Bool
	rdb.AddHook(lost{armed: &armed})
	l := ratelimit.New(rdb, ratelimit.Limit{Rate: 1000, Per: time.Second, Burst: 1000})
	k := key(t)
	if _, err := l.Allow(ctx, k, 1); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if _, err := l.Allow(ctx, k, 1); err == nil {
		t.Fatal("the call whose reply was lost returned no error")
	}
	for i := 0; i < 3; i++ {
		if _, err := l.Allow(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := longMarkers(t, env.RDB, k); n != 2 {
		t.Fatalf("%d op markers live past the grace, want 2: the lost call's and the last call's", n)
	}
}
