// Package maintain holds the queue duties that workers and coordinators
// share, so that both do them one way:
//
//   - forwarding: moving a queue's due tasks (retry backoff, parked and
//     delayed tasks) from its scheduled set into its stream, and starting
//     the continuations waiting in its outbox;
//   - housekeeping: trimming a queue's stream below its oldest
//     unacknowledged entry, removing consumers idle past ConsumerIdle that
//     hold nothing, capping its dead letters at DeadLetterCap and sweeping
//     its outbox.
//
// A worker does them for its own queues (so that a fleet without a
// coordinator still runs), a coordinator for every registered queue; each
// duty is a resend-safe script that any number of processes may run at
// once. The settings, and their defaults, are defined here once: a worker
// and a coordinator take them from their own Config (see Settings).
package maintain

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Defaults of the settings, shared by worker.Config and coordinator.Config.
const (
	DefaultHousekeepInterval = 30 * time.Second
	DefaultDeadLetterCap     = 100000
	DefaultConsumerIdle      = 10 * time.Minute
	// DefaultRetention is client.Config.Retention's default: how long a
	// task ended by a sweep (a continuation cancelled because its parent
	// did not succeed) is kept.
	DefaultRetention = 24 * time.Hour
)

// ForwardBatch is how many due tasks of a queue one Forward moves at most.
const ForwardBatch = 100

// Settings configure the duties. A process that runs them fills them from
// its Config; a zero field takes its default (WithDefaults).
type Settings struct {
	// DeadLetterCap is how many dead tasks each queue keeps; the oldest go
	// first. Every process that keeps house on a queue caps it at its own
	// setting, so the smallest cap configured for a queue is the one that
	// holds.
	DeadLetterCap int64
	// ConsumerIdle is how long a consumer that holds no pending entry may
	// be idle before housekeeping removes it.
	ConsumerIdle time.Duration
	// Retention is how long a task that a sweep ends is kept.
	Retention time.Duration
}

// WithDefaults returns s with each zero field set to its default.
func (s Settings) WithDefaults() Settings {
	if s.DeadLetterCap == 0 {
		s.DeadLetterCap = DefaultDeadLetterCap
	}
	if s.ConsumerIdle == 0 {
		s.ConsumerIdle = DefaultConsumerIdle
	}
	if s.Retention == 0 {
		s.Retention = DefaultRetention
	}
	return s
}

// Keeper does the duties on one Redis with one set of settings.
type Keeper struct {
	rdb redis.UniversalClient
	set Settings
}

// New returns a Keeper on rdb with settings s (defaults filled in).
func New(rdb redis.UniversalClient, s Settings) *Keeper {
	return &Keeper{rdb: rdb, set: s.WithDefaults()}
}

// Due is what one Forward found.
type Due struct {
	Moved  int   // tasks moved into the stream
	More   bool  // more tasks were due than one call moves: call again now
	NextMs int64 // the next due time (Unix ms, Redis time); -1 for none
	NowMs  int64 // Redis' time when the tasks were moved (Unix ms)
}

// ForwardDue moves up to ForwardBatch of q's due tasks into its stream.
func (k *Keeper) ForwardDue(ctx context.Context, q keys.Queue) (Due, error) {
	moved, next, now, err := store.Forward(ctx, k.rdb, q, ForwardBatch)
	if err != nil {
		return Due{}, err
	}
	return Due{Moved: moved, More: moved == ForwardBatch, NextMs: next, NowMs: now}, nil
}

// DrainOutbox starts the continuations waiting in q's outbox (and those its
// work passes on to other queues' outboxes).
func (k *Keeper) DrainOutbox(ctx context.Context, q keys.Queue) error {
	return store.DrainOutbox(ctx, k.rdb, q, k.set.Retention.Milliseconds())
}

// Housekeep trims q's stream, removes its idle empty consumers and caps its
// dead letters. An error of one step does not stop the next; the errors are
// joined.
func (k *Keeper) Housekeep(ctx context.Context, q keys.Queue) error {
	var errs []error
	if _, _, err := store.Housekeep(ctx, k.rdb, q, k.set.ConsumerIdle.Milliseconds()); err != nil {
		errs = append(errs, err)
	}
	if _, err := store.CapDead(ctx, k.rdb, q, k.set.DeadLetterCap); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
