package worker

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/maintain"
)

// Config configures a Worker. A nil *Config means all defaults.
type Config struct {
	// Queues maps each queue the worker serves to its weight. With several
	// queues, each fetch tries them in an order drawn by weight (a queue of
	// weight 6 comes first six times as often as one of weight 1), or by
	// descending weight when StrictPriority is set. Defaults to
	// {"default": 1}.
	Queues map[string]int

	// StrictPriority makes a lower-weight queue run only while every
	// higher-weight queue is empty; over several queues nothing is then read ahead (FetchBatch). Defaults to false.
	StrictPriority bool

	// Concurrency is how many handlers run at once. Defaults to 100.
	Concurrency int

	// Name is the worker's consumer name in each queue's consumer group. It
	// must be unique among running workers; a stable name (a pod name) lets a
	// restarted worker reuse its consumer. Defaults to
	// "<hostname>-<pid>-<n>", n counting workers in the process.
	Name string

	// Lease is how long a task stays with this worker without a heartbeat
	// before another worker may take it over. Heartbeats every Lease/4 keep
	// it while the handler runs; if none gets through, the handler's ctx is
	// cancelled (cause ErrLeaseLost) Lease/5 before the lease ends, and once
	// it returns its task is handed back to the queue at once (unless
	// another worker took it over meanwhile). Every worker of a queue should
	// use the same value. Defaults to 30s.
	Lease time.Duration

	// MaxDeliveries is how many times one attempt may be delivered (that is,
	// its worker died or lost the lease before recording an outcome) before
	// the task is dead-lettered as poison. Defaults to 10.
	MaxDeliveries int

	// Backoff returns the delay before attempt+1 after attempt failed.
	// Defaults to DefaultBackoff.
	Backoff func(attempt int) time.Duration

	// MaxPayloadBytes bounds a task's payload when it is read; a larger one is
	// dead-lettered with ErrPayloadTooLarge. Defaults to 1 MiB.
	MaxPayloadBytes int

	// FetchBatch is the most entries one read from a stream takes. Defaults
	// to 256. While a backlog waits and handlers return quickly (within
	// about a millisecond), the worker reads up to this many entries ahead
	// of its free slots, so that the next read's round trip hides behind
	// the handlers; slower handlers turn the read-ahead off, and an entry
	// read ahead that waits 10ms for a slot goes back to its queue for any
	// worker. Concurrency always bounds the handlers running at once.
	FetchBatch int

	// BlockTimeout is how long one blocking read waits for new entries; it
	// bounds how long Stop waits for the fetch loop. Defaults to 1s.
	BlockTimeout time.Duration

	// DeadLetterCap is how many dead tasks each of the worker's queues
	// keeps; older ones are deleted by housekeeping. Coordinators cap every
	// queue too, at coordinator.Config's DeadLetterCap (the same default):
	// the smallest cap configured for a queue is the one that holds, so
	// give workers and coordinators the same value. Defaults to 100000.
	DeadLetterCap int64

	// HousekeepInterval is how often the worker trims its queues' streams and
	// caps their dead-letter stores, as coordinators do for every queue (see
	// coordinator.Config). Defaults to 30s.
	HousekeepInterval time.Duration

	// Retention is how long a task the worker ends without a run of its own
	// (a continuation cancelled because its parent did not succeed) is
	// kept; give it the clients' Config.Retention. Defaults to 24 hours,
	// the clients' default.
	Retention time.Duration

	// KindLimits caps how many tasks of a kind run at once across the whole
	// fleet: every worker, in every process, that sets a limit for the kind
	// (give them all the same number), e.g. {"transcode": 10}. A task that
	// finds its limit full waits in Redis, not in a worker, and never holds
	// up other tasks; it is woken as a slot frees (in order), or retries
	// after LimitWait. A slot is leased like the task (renewed by the
	// heartbeats): a worker that dies frees it when its lease ends. Defaults
	// to none.
	KindLimits map[string]int

	// QueueLimits caps how many tasks of a queue run at once across the
	// fleet, as KindLimits does for kinds. A task subject to both takes a
	// slot of each. Defaults to none.
	QueueLimits map[string]int

	// LimitWait is how long a task parked by a full limit waits at most
	// before it tries again, should no release wake it (its waker died).
	// Defaults to Lease.
	LimitWait time.Duration

	// RateLimits throttle tasks fleet-wide, by the RateKey they were
	// enqueued with (per key prefix), by queue or by kind: a task takes a
	// token of each bucket that applies before it runs, and one that must
	// wait is parked in Redis until its token is due, holding no worker (no
	// head-of-line blocking, no polling). Give every worker the same
	// limits. Defaults to none.
	RateLimits []RateLimit

	// Logger receives the worker's logs. Defaults to slog.Default().
	Logger *slog.Logger

	// Observers receive the worker's task events (see Event), in order.
	// Defaults to none.
	Observers []Observer

	// Middleware wraps every handler (see Middleware), the first
	// outermost; Worker.Use adds more inside them. Defaults to none.
	Middleware []Middleware

	// TracerProvider makes the OpenTelemetry consumer span around each
	// attempt ("process <queue>"), a child of the producer span of the
	// task's enqueue, linked to it; the handler's ctx carries it. Defaults
	// to otel.GetTracerProvider(): no spans until an SDK is installed.
	TracerProvider trace.TracerProvider
}

var workerSeq atomic.Int64

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if len(out.Queues) == 0 {
		out.Queues = map[string]int{"default": 1}
	}
	if out.Concurrency == 0 {
		out.Concurrency = 100
	}
	if out.Name == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		out.Name = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), workerSeq.Add(1))
	}
	if out.Lease == 0 {
		out.Lease = 30 * time.Second
	}
	if out.MaxDeliveries == 0 {
		out.MaxDeliveries = 10
	}
	if out.Backoff == nil {
		out.Backoff = DefaultBackoff
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = 1 << 20
	}
	if out.FetchBatch == 0 {
		out.FetchBatch = 256
	}
	if out.BlockTimeout == 0 {
		out.BlockTimeout = time.Second
	}
	if out.DeadLetterCap == 0 {
		out.DeadLetterCap = maintain.DefaultDeadLetterCap
	}
	if out.HousekeepInterval == 0 {
		out.HousekeepInterval = maintain.DefaultHousekeepInterval
	}
	if out.Retention == 0 {
		out.Retention = maintain.DefaultRetention
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.LimitWait == 0 {
		out.LimitWait = out.Lease
	}
	return out
}

func (c *Config) validate() error {
	for q, wt := range c.Queues {
		if err := keys.ValidateName("queue", q); err != nil {
			return fmt.Errorf("worker: Config.Queues: %w", err)
		}
		if wt < 1 {
			return fmt.Errorf("worker: Config.Queues[%q] has weight %d, must be at least 1", q, wt)
		}
	}
	for _, l := range []struct {
		what string
		m    map[string]int
	}{{"KindLimits", c.KindLimits}, {"QueueLimits", c.QueueLimits}} {
		for name, n := range l.m {
			if err := keys.ValidateName("limited", name); err != nil {
				return fmt.Errorf("worker: Config.%s: %w", l.what, err)
			}
			if n < 1 {
				return fmt.Errorf("worker: Config.%s[%q] is %d, must be at least 1", l.what, name, n)
			}
		}
	}
	for i, m := range c.Middleware {
		if m == nil {
			return fmt.Errorf("worker: Config.Middleware[%d] is nil", i)
		}
	}
	if err := validateRates(c.RateLimits); err != nil {
		return err
	}
	if c.LimitWait < time.Millisecond {
		return fmt.Errorf("worker: Config.LimitWait is %v, must be at least 1ms", c.LimitWait)
	}
	if err := keys.ValidateName("worker", c.Name); err != nil {
		return fmt.Errorf("worker: Config.Name: %w", err)
	}
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("worker: Config.Concurrency is %d, must be at least 1", c.Concurrency)
	case c.Lease < 50*time.Millisecond:
		return fmt.Errorf("worker: Config.Lease is %v, must be at least 50ms", c.Lease)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("worker: Config.MaxDeliveries is %d, must be at least 1", c.MaxDeliveries)
	case c.MaxPayloadBytes < 1:
		return fmt.Errorf("worker: Config.MaxPayloadBytes is %d, must be positive", c.MaxPayloadBytes)
	case c.FetchBatch < 1:
		return fmt.Errorf("worker: Config.FetchBatch is %d, must be at least 1", c.FetchBatch)
	case c.BlockTimeout < time.Millisecond:
		return fmt.Errorf("worker: Config.BlockTimeout is %v, must be at least 1ms", c.BlockTimeout)
	case c.DeadLetterCap < 1:
		return fmt.Errorf("worker: Config.DeadLetterCap is %d, must be at least 1", c.DeadLetterCap)
	case c.HousekeepInterval < time.Millisecond:
		return fmt.Errorf("worker: Config.HousekeepInterval is %v, must be at least 1ms", c.HousekeepInterval)
	case c.Retention < time.Millisecond:
		return fmt.Errorf("worker: Config.Retention is %v, must be at least 1ms", c.Retention)
	}
	return nil
}

// DefaultBackoff waits 1s after the first failed attempt and doubles with
// each further one, each delay drawn at random within ±25%, never over an
// hour.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 12)
	d = time.Duration(float64(d) * (0.75 + rand.Float64()/2))
	return min(d, time.Hour)
}
