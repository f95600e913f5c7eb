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
// EnvRedisURL is set, unless its fleet has Options.Embedded or
// Options.Clock (which keep it on miniredis). Advance is a jump: once the clock stopped, nothing
// timed moves without it (a retry's backoff, a delay, a repeat slot), and
// a task running across a jump past its lease looks as if its worker died
// (another worker may take it over, as LoseWorker does). Advance does not
// wait for the tasks it made due to run: wait for them (WaitTask...).
//
// While the clock is stopped every process of the fleet (its clients,
// workers and coordinator) reads Redis' time as the stopped time, not as
// its local clock's estimate: Advance(d) reaches what is due d from now
// exactly, whether Redis decided it (a retry's backoff, a repeat slot) or
// a client did (EnqueueOpts.Delay d). EnqueueOpts.ProcessAt and Deadline
// are read in the stopped clock's frame: count them from Fleet.Now (a task
// enqueued with ProcessAt: f.Now().Add(time.Hour) runs after
// Advance(time.Hour)).
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
	f.stopped.Store(&next)
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
