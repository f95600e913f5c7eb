package ratelimit_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
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

// stillClock is a miniredis whose clock stands still: whatever the limiter
// decides is decided at one instant, however slowly the test runs.
func stillClock(t *testing.T) redis.UniversalClient {
	t.Helper()
	mini := miniredis.RunT(t)
	mini.SetTime(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	rdb := redis.NewClient(&redis.Options{Addr: mini.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestBandwidthBadInput(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	good := ratelimit.Bandwidth{BytesPerSecond: 1000, Burst: 100}
	for _, tc := range []struct {
		b    *ratelimit.BandwidthLimiter
		key  string
		n    int64
		want string
	}{
		{ratelimit.NewBandwidth(env.RDB, ratelimit.Bandwidth{}), "k", 1, "BytesPerSecond is 0"},
		{ratelimit.NewBandwidth(env.RDB, ratelimit.Bandwidth{BytesPerSecond: -5}), "k", 1, "BytesPerSecond is -5"},
		{ratelimit.NewBandwidth(env.RDB, ratelimit.Bandwidth{BytesPerSecond: ratelimit.MaxBytesPerSecond + 1}), "k", 1, "more than the most"},
		{ratelimit.NewBandwidth(env.RDB, ratelimit.Bandwidth{BytesPerSecond: 1000, Burst: -1}), "k", 1, "Burst is -1"},
		{ratelimit.NewBandwidth(nil, good), "k", 1, "redis client is nil"},
		{ratelimit.NewBandwidth(env.RDB, good), "", 1, "key is empty"},
		{ratelimit.NewBandwidth(env.RDB, good), "a{b}", 1, "allowed are"},
		{ratelimit.NewBandwidth(env.RDB, good), strings.Repeat("k", 254), 1, "the limit is 253"},
		{ratelimit.NewBandwidth(env.RDB, good), "k", -1, "n is -1"},
	} {
		err := tc.b.Wait(ctx, tc.key, tc.n)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Wait(%q, %d) with %+v: %v, want an error containing %q", tc.key, tc.n, tc.b.Bandwidth(), err, tc.want)
		}
		if tc.n < 0 {
			continue // Reader and Allow have no n of their own here
		}
		if _, _, err := tc.b.Allow(ctx, tc.key, tc.n); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Allow(%q, %d) with %+v: %v, want an error containing %q", tc.key, tc.n, tc.b.Bandwidth(), err, tc.want)
		}
		r := tc.b.Reader(ctx, tc.key, strings.NewReader("x"))
		if _, err := r.Read(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Reader(%q) with %+v: read %v, want an error containing %q", tc.key, tc.b.Bandwidth(), err, tc.want)
		}
	}
	b := ratelimit.NewBandwidth(env.RDB, good)
	for _, n := range []int64{0, 101} {
		if _, _, err := b.Allow(ctx, "k", n); err == nil || !strings.Contains(err.Error(), "must be 1 to the burst of 100") {
			t.Errorf("Allow(%d): %v", n, err)
		}
	}
	if err := b.Wait(ctx, "k", 0); err != nil {
		t.Errorf("Wait(0): %v", err)
	}
}

// TestBandwidthBurst: an idle key lets Burst bytes go at once and no more;
// a bucket of its own, apart from a Limiter's of the same key.
func TestBandwidthBurst(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	// 1000 B/s: the burst of 64 KiB (the least default) is 65.5 s of it,
	// far more than the test runs.
	bw := ratelimit.Bandwidth{BytesPerSecond: 1000}
	const burst = 64 << 10
	b := ratelimit.NewBandwidth(env.RDB, bw)
	k := key(t)
	if ok, _, err := b.Allow(ctx, k, burst); err != nil || !ok {
		t.Fatalf("the burst of an idle key: %v, %v", ok, err)
	}
	ok, after, err := b.Allow(ctx, k, burst)
	if err != nil || ok {
		t.Fatalf("a second burst: %v, %v", ok, err)
	}
	// Redis' clock only moves forward: the wait is the burst's time at
	// most, and less by no more than the test took.
	full := time.Duration(burst) * time.Second / 1000
	if after > full || after < full-10*time.Second {
		t.Errorf("a second burst is due in %v, want about %v", after, full)
	}
	// A request rate on the same key is a bucket of its own.
	if r, err := ratelimit.New(env.RDB, ratelimit.Limit{Rate: 1, Per: time.Hour}).Allow(ctx, k, 1); err != nil || !r.Allowed {
		t.Errorf("a Limiter on the same key: %+v, %v", r, err)
	}
}

// TestBandwidthSteps: with Redis' clock standing still, Wait takes more
// than Burst in steps of Burst, each due a burst's time after the one
// before, and the bytes left over from whole units are carried, not lost
// nor charged twice.
func TestBandwidthSteps(t *testing.T) {
	t.Parallel()
	rdb := stillClock(t)
	ctx := ctxT(t)
	// 1 MiB/s: a unit of 2 bytes, a burst of 104857 B (104856 in units),
	// about 100 ms.
	bw := ratelimit.Bandwidth{BytesPerSecond: 1 << 20}
	b := ratelimit.NewBandwidth(rdb, bw)
	const burst = 104856
	// Three bursts: the first at once, the next two 100 ms apart.
	if err := b.Wait(ctx, "steps", 3*burst); err != nil {
		t.Fatal(err)
	}
	// The clock stood still: the bucket is two bursts in debt, so a byte
	// more (a unit) is due two bursts' time later.
	probe := ratelimit.NewBandwidth(rdb, bw)
	ok, after, err := probe.Allow(ctx, "steps", 2)
	want := 2 * burst * time.Second / (1 << 20)
	if err != nil || ok || after < want || after > want+2*time.Microsecond {
		t.Fatalf("after three bursts: allowed %v, due in %v (want %v), %v", ok, after, want, err)
	}

	// 5 MB/s: a unit of 5 bytes. Twelve 1-byte calls are two units and 2
	// bytes carried: the bucket lost exactly two units.
	bw5 := ratelimit.Bandwidth{BytesPerSecond: 5_000_000, Burst: 1000}
	b5 := ratelimit.NewBandwidth(rdb, bw5)
	for i := 0; i < 12; i++ {
		if err := b5.Wait(ctx, "carry", 1); err != nil {
			t.Fatal(err)
		}
	}
	fresh := ratelimit.NewBandwidth(rdb, bw5)
	if ok, _, err := fresh.Allow(ctx, "carry", 1000-10); err != nil || !ok {
		t.Fatalf("990 bytes after 12 were counted: %v, %v", ok, err)
	}
	if ok, _, err := fresh.Allow(ctx, "carry", 5); err != nil || ok {
		t.Fatalf("the bucket held more than 990 after 12 bytes: %v, %v", ok, err)
	}
	// Three bytes more complete the third unit (2 carried + 3).
	if err := b5.Wait(ctx, "carry2", 2); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := b5.Allow(ctx, "carry2", 998); err != nil || !ok {
		t.Fatalf("998 after 2 carried: %v, %v", ok, err)
	}
	if ok, _, err := fresh.Allow(ctx, "carry2", 5); err != nil || ok {
		t.Fatalf("the carried bytes were not charged: %v, %v", ok, err)
	}
}

// TestBandwidthWaitCancelledRefunds: a Wait whose ctx ends while it
// sleeps gives back its reservation.
func TestBandwidthWaitCancelledRefunds(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := ctxT(t)
	bw := ratelimit.Bandwidth{BytesPerSecond: 1000, Burst: 1000}
	b := ratelimit.NewBandwidth(env.RDB, bw)
	k := key(t)
	if ok, _, err := b.Allow(ctx, k, 1000); err != nil || !ok {
		t.Fatalf("drain: %v, %v", ok, err)
	}
	_, before, err := b.Allow(ctx, k, 500)
	if err != nil || before <= 0 {
		t.Fatalf("probe before: %v, %v", before, err)
	}
	bk := ratelimit.BucketKey("bw:" + k)
	was, err := env.RDB.Get(ctx, bk).Result()
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Wait(wctx, k, 900) }() // due in 0.9 s and more
	testenv.Eventually(t, 10*time.Second, "the reservation", func() bool {
		v, err := env.RDB.Get(ctx, bk).Result()
		return err == nil && v != was
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait: %v, want context.Canceled", err)
	}
	// Redis' clock only moves forward: with the reservation given back,
	// 500 bytes are due no later than before it; kept, 0.9 s later.
	_, after, err := b.Allow(ctx, k, 500)
	if err != nil || after > before {
		t.Fatalf("a byte is due in %v after the cancelled Wait, %v before it (%v)", after, before, err)
	}
}

// TestBandwidthReader: a Reader passes the bytes through, asks for no more
// than Burst at a time, pays for what it returns, and stops at a Wait
// error.
func TestBandwidthReader(t *testing.T) {
	t.Parallel()
	rdb := stillClock(t)
	ctx := ctxT(t)
	bw := ratelimit.Bandwidth{BytesPerSecond: 1 << 20, Burst: 1 << 16} // a unit of 2 bytes
	b := ratelimit.NewBandwidth(rdb, bw)
	data := bytes.Repeat([]byte("0123456789abcdef"), 3<<12+1) // 3 bursts and 16 bytes
	got, err := io.ReadAll(b.Reader(ctx, "reader", bytes.NewReader(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v; want the %d sent", len(got), err, len(data))
	}
	// Three bursts and 16 bytes went with the clock standing still: the
	// bucket is 2 bursts and 16 bytes in debt.
	ok, after, err := ratelimit.NewBandwidth(rdb, bw).Allow(ctx, "reader", 2)
	want := time.Duration(2<<16+16) * time.Second / (1 << 20)
	if err != nil || ok || after < want || after > want+2*time.Microsecond {
		t.Fatalf("after the read: allowed %v, due in %v (want %v), %v", ok, after, want, err)
	}

	// A source that fills what it is given: one Read of 1 MiB asks it for
	// the burst.
	r := b.Reader(ctx, "reader-sizes", readFunc(func(p []byte) (int, error) { return len(p), nil }))
	if n, err := r.Read(make([]byte, 1<<20)); err != nil || n != 1<<16 {
		t.Fatalf("a read of 1 MiB: %d, %v; want the burst, %d", n, err, 1<<16)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	cr := b.Reader(cctx, "reader-cancel", bytes.NewReader(data))
	buf := make([]byte, 10)
	for i := 0; i < 2; i++ {
		if n, err := cr.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
			t.Fatalf("read %d with ctx cancelled: %d, %v", i, n, err)
		}
	}
}

type readFunc func(p []byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// TestBandwidthRateAcrossClients: three limiters on clients of their own
// (three processes) share one key's bandwidth; measured in Redis' clock
// over a few seconds, after the burst, the bytes granted stay within 5% of
// the rate.
func TestBandwidthRateAcrossClients(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	const rate = 2 << 20 // 2 MiB/s: a unit of 3 bytes
	const chunk = 16 << 10
	// The default burst, a tenth of a second: the bucket runs dry only if
	// every waiter is late by that much, which a loaded machine can make
	// happen with a burst of a few ms (then less than the rate flows: the
	// limiter never lends what nobody asked for in time).
	bw := ratelimit.Bandwidth{BytesPerSecond: rate}
	const burst = rate / 10
	k := key(t)
	var granted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		rdb := testenv.NewEnvClient(env)
		t.Cleanup(func() { _ = rdb.Close() })
		b := ratelimit.NewBandwidth(rdb, bw)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if err := b.Wait(ctx, k, chunk); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				granted.Add(chunk)
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	// Past the burst: the waiters are queued and the rate is what flows.
	testenv.Eventually(t, 20*time.Second, "the burst to be spent", func() bool { return granted.Load() >= 2*burst })
	redisNow := func() time.Time {
		now, err := env.RDB.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now
	}
	// While the window runs, a probe reads the bucket ("tat,last" in µs of
	// Redis' clock) with Redis' TIME every few ms. A reservation is due
	// when the one before it has passed, so waiters that ask for more than
	// the rate in time keep the bucket's theoretical arrival time ahead of
	// now; seen behind now, the bucket was filling with bytes nobody asked
	// for (every waiter was late: a starved machine), and then less than
	// the rate may flow without any fault of the limiter.
	var dry atomic.Int64 // samples that saw the bucket idle
	probeCtx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-tick.C:
			}
			pipe := env.RDB.Pipeline()
			now := pipe.Time(probeCtx)
			val := pipe.Get(probeCtx, ratelimit.BucketKey("bw:"+k))
			if _, err := pipe.Exec(probeCtx); errors.Is(err, redis.Nil) {
				dry.Add(1) // the bucket expired: it was full
				continue
			} else if err != nil {
				continue // the window's end cancelled it
			}
			tat, _, _ := strings.Cut(val.Val(), ",")
			tatUs, err := strconv.ParseInt(tat, 10, 64)
			if err != nil {
				dry.Add(1)
				continue
			}
			ahead := time.Duration(tatUs-now.Val().UnixMicro()) * time.Microsecond
			if ahead < 0 {
				dry.Add(1)
			}
		}
	}()
	t0, g0 := redisNow(), granted.Load()
	window := time.NewTimer(3 * time.Second)
	select {
	case <-window.C:
	case err := <-errs:
		t.Fatal(err)
	}
	t1, g1 := redisNow(), granted.Load()
	stopProbe()
	<-probeDone
	got := float64(g1-g0) / t1.Sub(t0).Seconds()
	t.Logf("%d bytes in %v of Redis' clock: %.0f B/s (%.2f%% of %d); the bucket was seen idle %d times", g1-g0, t1.Sub(t0), got, 100*got/rate, rate, dry.Load())
	// Never more than the rate (the burst was spent before the window).
	if got > 1.05*rate {
		t.Fatalf("%d bytes in %v of Redis' clock: %.0f B/s, more than %d +5%%", g1-g0, t1.Sub(t0), got, rate)
	}
	// The rate itself whenever the waiters kept asking for more than it.
	if dry.Load() == 0 && got < 0.95*rate {
		t.Fatalf("%d bytes in %v of Redis' clock: %.0f B/s, less than %d −5%% though the bucket was never seen idle", g1-g0, t1.Sub(t0), got, rate)
	}
}
