// Package coordinator runs the fleet's timed duties. So far: it moves
// delayed tasks (client.EnqueueOpts.ProcessAt, Delay) into their queues
// when they are due, sleeping until the earliest due time in an index that
// every enqueue of a delayed task keeps, and woken when an earlier one is
// added. Spread, Repeat and housekeeping come next (see the README's
// roadmap).
//
// Any number of coordinators may run, in their own processes or inside
// worker processes; they need no leader: moving a task is one script that
// takes it out of the scheduled set (so it moves once however many try),
// and the index is updated by compare-and-set. Without a coordinator the
// workers still move due tasks of their queues, within a second.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Config configures a Coordinator. A nil *Config means all defaults.
type Config struct {
	// MaxSleep bounds how long the coordinator sleeps without looking at
	// the index (a wake-up lost with a broken connection is made up for by
	// then). Defaults to 1s.
	MaxSleep time.Duration

	// Logger receives the coordinator's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Coordinator moves delayed tasks when they are due.
type Coordinator struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	done    chan struct{}

	clock store.Clock
}

// New returns a Coordinator on rdb, which it uses but never closes.
func New(rdb redis.UniversalClient, cfg *Config) (*Coordinator, error) {
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := store.CheckServer(ctx, rdb, c.Logger); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	co := &Coordinator{rdb: rdb, cfg: c, log: c.Logger.With(slog.String("component", "coordinator"))}
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
	ps := c.rdb.Subscribe(ctx, keys.DueWake)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return fmt.Errorf("coordinator: subscribe to wake-ups: %w", err)
	}
	lctx, cancel := context.WithCancel(context.Background())
	c.started, c.cancel, c.done = true, cancel, make(chan struct{})
	go c.loop(lctx, ps)
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
	defer close(c.done)
	defer ps.Close()
	wake := ps.Channel()
	for {
		wait, err := c.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Error("move due tasks", slog.Any("err", err))
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

// pass moves the tasks of every queue whose earliest due time has come, and
// returns how long to sleep until the next one.
func (c *Coordinator) pass(ctx context.Context) (time.Duration, error) {
	c.clock.Refresh(ctx, c.rdb, time.Minute)
	now := c.clock.ToRedis(time.Now()).UnixMilli()
	due, err := c.rdb.ZRangeByScoreWithScores(ctx, keys.DueIndex, &redis.ZRangeBy{Min: "-inf", Max: fmt.Sprint(now), Count: 100}).Result()
	if err != nil {
		return 0, fmt.Errorf("read the due index: %w", err)
	}
	for _, z := range due {
		qn, _ := z.Member.(string)
		if keys.ValidateName("queue", qn) != nil {
			continue
		}
		q := keys.ForQueue(qn)
		moved, next, _, err := store.Forward(ctx, c.rdb, q, 100)
		if err != nil {
			return 0, err
		}
		if moved == 100 {
			return 0, nil // more of this queue: come back at once
		}
		if err := store.UpdateDue(ctx, c.rdb, qn, int64(z.Score), next); err != nil {
			return 0, err
		}
	}
	if len(due) == 100 {
		return 0, nil
	}
	first, err := c.rdb.ZRangeWithScores(ctx, keys.DueIndex, 0, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("read the due index: %w", err)
	}
	if len(first) == 0 {
		return c.cfg.MaxSleep, nil
	}
	at := c.clock.ToLocal(time.UnixMilli(int64(first[0].Score)))
	// At least a millisecond: a due time our estimate of Redis' clock has
	// reached but Redis' has not yet is retried shortly, not in a spin.
	return min(max(time.Until(at), time.Millisecond), c.cfg.MaxSleep), nil
}
