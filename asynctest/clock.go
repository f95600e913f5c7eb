package asynctest

import (
	"context"
	"time"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/store"
)

// Now returns Redis' time: the time leases, deadlines, delays and repeat
// slots are decided in.
func (f *Fleet) Now() time.Time {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	now, err := store.Time(ctx, f.rdb)
	if err != nil {
		f.t.Fatalf("asynctest: read Redis' time: %v", err)
	}
	return now
}

// Advance moves Redis' clock forward by d (stopping it first, if it ran)
// and runs the coordinator's duties at the new time, so that what fell due
// (delayed tasks, retries, repeat slots) is in its queue when Advance
// returns. It returns the new time. On a real Redis it skips the test.
//
// Advance needs the embedded miniredis, whose clock it sets (TIME, stream
// ids, and the TTLs of keys, which move forward by d too): a real Redis'
// clock cannot be moved, so a test that calls Advance is skipped when
// EnvRedisURL is set. Advance is a jump: once the clock stopped, nothing
// timed moves without it (a retry's backoff, a delay, a repeat slot), and
// a task running across a jump past its lease looks as if its worker died
// (another worker may take it over, as LoseWorker does). Advance does not
// wait for the tasks it made due to run: wait for them (WaitTask...).
//
// What Redis decides is exact: retries' backoffs and repeat slots fall due
// at the jump that reaches them. A client, though, counts a Delay from its
// estimate of Redis' time, which moves on with the real clock while Redis'
// stands still: a task enqueued with Delay d is due after what an
// Advance(d) reaches, by the real time elapsed since the client last read
// Redis' clock (at its start, or a minute ago at most), so advance past
// it by that much (d + time.Minute). EnqueueOpts.ProcessAt and Deadline are times of the
// caller's clock, converted to Redis' by the client's measured offset:
// with Options.Clock far from the real time, express them as delays.
func (f *Fleet) Advance(d time.Duration) time.Time {
	f.t.Helper()
	if f.mini == nil {
		f.t.Skip("asynctest: Fleet.Advance needs the embedded miniredis: a real Redis' clock cannot be moved (" + EnvRedisURL + " is set)")
	}
	if d < 0 {
		f.t.Fatalf("asynctest: Advance(%v): the clock only moves forward", d)
	}
	next := f.Now().Add(d)
	f.mini.SetTime(next)
	f.mini.FastForward(d)
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	f.mu.Lock()
	co := f.ticker
	f.mu.Unlock()
	if co == nil {
		// A coordinator of its own, never started: it only runs the duties
		// now (NoCoordinator fleets get them too).
		var err error
		f.labeled(func(lctx context.Context) {
			cfg := f.opts.Coordinator
			if cfg.Logger == nil {
				cfg.Logger = f.logger
			}
			co, err = coordinator.New(ctx, f.rdb, &cfg)
		})
		if err != nil {
			f.t.Fatalf("asynctest: %v", err)
		}
		f.mu.Lock()
		f.ticker = co
		f.mu.Unlock()
	}
	if err := co.RunOnce(ctx); err != nil {
		f.t.Fatalf("asynctest: Advance: %v", err)
	}
	return next
}
