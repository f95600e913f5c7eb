// Package coordinator runs the fleet's timed duties:
//
//   - delayed tasks (client.EnqueueOpts.ProcessAt, Delay; patterns.Spread's
//     members): moved into their queues when due, within milliseconds;
//   - repeat schedules (patterns.Repeat, RepeatCron): each slot's task
//     enqueued once;
//   - housekeeping of every queue the fleet has used: streams trimmed below
//     their oldest unacknowledged entry, dead letters capped, consumers of
//     workers that are gone removed once they hold nothing, continuation
//     outboxes swept (also of queues no worker serves), due tasks of
//     every queue forwarded.
//
// A coordinator sleeps until the earliest due time in an index that every
// delayed enqueue and repeat declaration keeps, and is woken (pub/sub) when
// an earlier one is added; there is no polling interval.
//
// Any number of coordinators may run, in their own processes or inside
// worker processes. They need no leader, so there is nothing to take over
// when one dies: moving a task or firing a slot is one script that checks
// the task is still scheduled, or the schedule still holds the slot it read
// (compare-and-set), and moves it on in the same step, so each happens once
// however many coordinators try. Housekeeping runs once per interval across
// the fleet: a coordinator takes that interval's claim (SET NX with an
// expiry, under a token of its own that a resent take recognises) before
// it sweeps; one that dies holding it is replaced at the next interval. Without a coordinator, workers still move due tasks of
// their own queues within a second, and housekeep their queues; repeat
// schedules need a coordinator.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/maintain"
	"github.com/taskfleet/async/internal/store"
)

// Config configures a Coordinator. A nil *Config means all defaults.
type Config struct {
	// MaxSleep bounds how long the coordinator sleeps without looking at
	// the index (a wake-up lost with a broken connection is made up for by
	// then). Defaults to 1s.
	MaxSleep time.Duration

	// HousekeepInterval is how often the fleet's coordinators (one of them
	// each time) keep house. Defaults to 30s.
	HousekeepInterval time.Duration

	// DeadLetterCap is how many dead tasks each queue keeps; the oldest go
	// first. Workers cap their own queues too, at worker.Config's
	// DeadLetterCap (the same default): the smallest cap configured for a
	// queue is the one that holds, so give them the same value. Defaults
	// to 100,000.
	DeadLetterCap int64

	// ConsumerIdle is how long a stream consumer (a worker) that holds no
	// pending task may be idle before it is removed. Defaults to 10 minutes.
	ConsumerIdle time.Duration

	// Retention is how long a task that housekeeping ends (a continuation
	// cancelled because its parent did not succeed) is kept; give it the
	// clients' Config.Retention. Defaults to 24 hours, the clients'
	// default.
	Retention time.Duration

	// Logger receives the coordinator's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Coordinator runs the timed duties; see the package docs.
type Coordinator struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	keep *maintain.Keeper // forwarding and housekeeping of each queue

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}

	clock store.Clock
	loops sync.WaitGroup
}

// New returns a Coordinator on rdb, which it uses but never closes. Within
// ctx (New sets no time limit of its own: give ctx one) it checks the server
// as client.New does (Redis 6.2 or newer, the Lua scripts loaded, a warning
// about the eviction policy) and measures Redis' clock.
func New(ctx context.Context, rdb redis.UniversalClient, cfg *Config) (*Coordinator, error) {
	if rdb == nil {
		return nil, errors.New("coordinator: redis client is nil")
	}
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.MaxSleep == 0 {
		c.MaxSleep = time.Second
	}
	if c.MaxSleep < time.Millisecond {
		return nil, fmt.Errorf("coordinator: Config.MaxSleep is %v, must be at least 1ms", c.MaxSleep)
	}
	if c.HousekeepInterval == 0 {
		c.HousekeepInterval = maintain.DefaultHousekeepInterval
	}
	if c.HousekeepInterval < 10*time.Millisecond {
		return nil, fmt.Errorf("coordinator: Config.HousekeepInterval is %v, must be at least 10ms", c.HousekeepInterval)
	}
	if c.DeadLetterCap == 0 {
		c.DeadLetterCap = maintain.DefaultDeadLetterCap
	}
	if c.DeadLetterCap < 1 {
		return nil, fmt.Errorf("coordinator: Config.DeadLetterCap is %d, must be at least 1", c.DeadLetterCap)
	}
	if c.ConsumerIdle == 0 {
		c.ConsumerIdle = maintain.DefaultConsumerIdle
	}
	if c.ConsumerIdle < time.Second {
		return nil, fmt.Errorf("coordinator: Config.ConsumerIdle is %v, must be at least 1s", c.ConsumerIdle)
	}
	if c.Retention == 0 {
		c.Retention = maintain.DefaultRetention
	}
	if c.Retention < time.Millisecond {
		return nil, fmt.Errorf("coordinator: Config.Retention is %v, must be at least 1ms", c.Retention)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := store.CheckServer(ctx, rdb, c.Logger); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	co := &Coordinator{rdb: rdb, cfg: c, log: c.Logger.With(slog.String("component", "coordinator")),
		keep: maintain.New(rdb, maintain.Settings{DeadLetterCap: c.DeadLetterCap, ConsumerIdle: c.ConsumerIdle, Retention: c.Retention})}
	if err := co.clock.Sync(ctx, rdb); err != nil {
		return nil, fmt.Errorf("coordinator: read redis time: %w", err)
	}
	return co, nil
}

// Start starts the coordinator's loop; it returns once subscribed to
// wake-ups. ctx bounds only the start.
func (c *Coordinator) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("coordinator: already started")
	}
	ps, err := store.SubscribeDueWake(ctx, c.rdb)
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	c.started, c.cancel, c.done = true, cancel, make(chan struct{})
	c.loops.Add(2)
	go c.loop(lctx, ps)
	go c.housekeepLoop(lctx)
	go func() { c.loops.Wait(); close(c.done) }()
	return nil
}

// Stop stops the loop and waits for it, or for ctx.
func (c *Coordinator) Stop(ctx context.Context) error {
	c.mu.Lock()
	if !c.started {
		c.mu.Unlock()
		return nil
	}
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Coordinator) loop(ctx context.Context, ps *redis.PubSub) {
	defer c.loops.Done()
	defer ps.Close()
	wake := ps.Channel()
	for {
		wait, err := c.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Error("move due tasks and fire repeats", slog.Any("err", err))
			wait = min(c.cfg.MaxSleep, 100*time.Millisecond)
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// RunOnce runs every duty once now, housekeeping included (without taking
// the interval's claim), after measuring Redis' clock afresh. It is for
// tests that move Redis' clock (miniredis' SetTime) and for operators; a
// started coordinator does all this by itself.
func (c *Coordinator) RunOnce(ctx context.Context) error {
	if err := c.clock.Sync(ctx, c.rdb); err != nil {
		return fmt.Errorf("coordinator: read redis time: %w", err)
	}
	for {
		wait, err := c.pass(ctx)
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		if wait > 0 {
			break
		}
	}
	if err := c.housekeep(ctx); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	return nil
}

// pass moves the tasks and fires the repeat slots of every queue whose
// earliest due time has come, and returns how long to sleep until the next
// one (0: come back at once, more is due).
func (c *Coordinator) pass(ctx context.Context) (time.Duration, error) {
	c.clock.Refresh(ctx, c.rdb, time.Minute)
	now := c.clock.ToRedis(time.Now()).UnixMilli()
	names, err := store.DueQueues(ctx, c.rdb, now, 100)
	if err != nil {
		return 0, err
	}
	again := len(names) == 100
	gens, err := store.DueGens(ctx, c.rdb, names)
	if err != nil {
		return 0, err
	}
	var errs []error
	for i, qn := range names {
		if keys.ValidatePhysicalQueue(qn) != nil {
			continue // a shard's name is a queue of its own here
		}
		more, next, err := c.serve(ctx, qn, now)
		if err != nil {
			// One queue's trouble does not hold up the others.
			errs = append(errs, err)
			continue
		}
		if more {
			again = true // leave the index entry: it is still due
			continue
		}
		if err := store.UpdateDue(ctx, c.rdb, qn, gens[i], next); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	if again {
		return 0, nil
	}
	first, ok, err := store.NextDue(ctx, c.rdb)
	if err != nil {
		return 0, err
	}
	if !ok {
		return c.cfg.MaxSleep, nil
	}
	at := c.clock.ToLocal(time.UnixMilli(first))
	// At least a millisecond: a due time our estimate of Redis' clock has
	// reached but Redis' has not yet is retried shortly, not in a spin.
	return min(max(time.Until(at), time.Millisecond), c.cfg.MaxSleep), nil
}

// serve moves queue's due tasks and fires its due repeat slots. It returns
// whether more is due already, else the queue's next due time (-1: none).
func (c *Coordinator) serve(ctx context.Context, queue string, nowMs int64) (more bool, next int64, err error) {
	q := keys.ForQueue(queue)
	due, err := c.keep.ForwardDue(ctx, q)
	if err != nil {
		return false, 0, err
	}
	fired, nextRep, moreRep, early, bad, err := store.FireRepeats(ctx, c.rdb, q, nowMs)
	if err != nil {
		return false, 0, err
	}
	if early {
		// Our estimate of Redis' clock runs ahead: measure it again.
		if err := c.clock.Sync(ctx, c.rdb); err != nil {
			return false, 0, fmt.Errorf("read redis time: %w", err)
		}
	}
	if bad != nil {
		c.log.Error("repeat schedule", slog.String("queue", queue), slog.Any("err", bad))
	}
	if len(fired) > 0 {
		c.log.Debug("repeats fired", slog.String("queue", queue), slog.Any("tasks", fired))
	}
	next = due.NextMs
	if nextRep >= 0 && (next < 0 || nextRep < next) {
		next = nextRep
	}
	return due.More || moreRep, next, nil
}

func (c *Coordinator) housekeepLoop(ctx context.Context) {
	defer c.loops.Done()
	t := time.NewTicker(c.cfg.HousekeepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// One coordinator of the fleet per interval: the claim expires
		// a little before the next tick, so the next interval is open to
		// all again.
		token := strconv.FormatUint(rand.Uint64(), 36)
		ok, err := store.ClaimHousekeeping(ctx, c.rdb, token, c.cfg.HousekeepInterval*9/10)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("housekeeping", slog.Any("err", err))
			}
			continue
		}
		if !ok {
			continue
		}
		if err := c.housekeep(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("housekeeping", slog.Any("err", err))
		}
	}
}

// housekeep trims, caps and sweeps every registered queue; an error on one
// queue does not stop the others.
func (c *Coordinator) housekeep(ctx context.Context) error {
	if err := c.clock.Sync(ctx, c.rdb); err != nil {
		return fmt.Errorf("read redis time: %w", err)
	}
	queues, err := store.RegisteredQueues(ctx, c.rdb)
	if err != nil {
		return err
	}
	var errs []error
	for _, qn := range queues {
		if keys.ValidatePhysicalQueue(qn) != nil {
			continue // a shard's name is a queue of its own here
		}
		q := keys.ForQueue(qn)
		if err := c.keep.Housekeep(ctx, q); err != nil {
			errs = append(errs, err)
		}
		if err := c.keep.DrainOutbox(ctx, q); err != nil {
			errs = append(errs, fmt.Errorf("start continuations of queue %q: %w", qn, err))
		}
		now := c.clock.Now().UnixMilli()
		if names, err := store.RemoveOrphanRepeats(ctx, c.rdb, q, now); err != nil {
			errs = append(errs, err)
		} else if len(names) > 0 {
			c.log.Warn("removed repeat definitions the repeat index does not name", slog.String("queue", qn), slog.Any("names", names))
		}
		// Tasks due without an index entry (retry backoff, parked tasks of
		// a queue whose workers are gone) and repeats whose entry was lost
		// with a failed write.
		if _, next, err := c.serve(ctx, qn, now); err != nil {
			errs = append(errs, err)
		} else if next >= 0 {
			if err := store.MarkDue(ctx, c.rdb, qn, next); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
