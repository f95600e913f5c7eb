package client

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/engine"
)

// EnqueueOpts are per-task options. A nil *EnqueueOpts means all defaults.
type EnqueueOpts struct {
	// Queue is the queue the task goes to. Defaults to Config.DefaultQueue.
	Queue string

	// ID, when set, makes the enqueue idempotent: while a task with this id
	// exists in the queue (pending, running, dead, or finished within its
	// retention), enqueueing the same id returns that task's handle, with
	// Duplicate() true, and adds nothing. It follows the name rule
	// [A-Za-z0-9._-]{1,128} and must not look like a stream id ("123-4"), the
	// shape of generated ids. Defaults to none: every call adds a task.
	ID string

	// MaxAttempts is how many times the task runs before it goes to the
	// dead-letter store. Defaults to Config.DefaultMaxAttempts.
	MaxAttempts int

	// Timeout bounds each attempt: the handler's ctx is cancelled after it and
	// the attempt fails. Defaults to none.
	Timeout time.Duration

	// Retention is how long the state and result are kept once the task
	// succeeded. Defaults to Config.Retention.
	Retention time.Duration

	// Deadline ends the task if it has not succeeded by then: a task past its
	// deadline before it starts never starts, a running one's handler ctx
	// carries it (ctx.Deadline()), and either way the task ends cancelled, not
	// retried, with Outcome matching context.DeadlineExceeded. It is checked
	// in Redis' time (the client's clock is only used to express it). A task
	// enqueued from a handler inherits the handler's remaining deadline when
	// that is earlier. Defaults to none.
	Deadline time.Time

	// Meta is metadata for the handler (worker.Meta): at most 64 entries,
	// keys of 1 to 128 bytes, values of at most 4096 bytes. A task enqueued
	// from a handler inherits its metadata, its own entries winning.
	Meta map[string]string

	// TraceParent and TraceState carry a W3C trace context to the handler
	// (worker.TraceContext). When these are empty, the task carries the
	// context of the span in the enqueuing ctx, else (enqueued from a
	// handler) the handler's task's. When the call's producer span records
	// (Config.TracerProvider), the task carries that span's context, a
	// child of the one it would carry otherwise.
	TraceParent string
	TraceState  string

	// ProcessAt delays the task: it waits in Redis (state scheduled) and
	// enters its queue when Redis' clock reaches this time (the client's
	// clock only expresses it). A time in the past means now. A running
	// coordinator (package coordinator) moves it within milliseconds of its
	// time; workers also move their queues' due tasks, within a second.
	// Defaults to now.
	ProcessAt time.Time

	// Delay is ProcessAt as a duration from the enqueue (in Redis' time).
	// At most one of ProcessAt and Delay may be set.
	Delay time.Duration

	// RateKey throttles the task: before it runs, a worker takes a token
	// from the bucket of this key (package ratelimit), under the limit its
	// Config.RateLimits registers for the key's prefix. A task that must
	// wait is parked in Redis until its token is due; it holds no worker
	// meanwhile. Tasks with the same key share one rate across the fleet
	// (and with ratelimit calls on the same key). 1 to 256 bytes of A-Z a-z
	// 0-9 . _ - : / (e.g. "s3:bucket-a"). Defaults to none.
	RateKey string

	// PartitionKey makes the task one of a partition: the tasks enqueued
	// with the same key (in the same queue) run one at a time, in enqueue
	// order, across every worker and process; tasks of different keys run
	// in parallel. Only the oldest unfinished task of a key is in the
	// queue's stream (the others wait in Redis, state waiting), so a busy
	// or stuck key never holds up other keys. A task keeps its key's turn
	// through retries, and one whose worker died runs again (after its
	// lease) before the next of its key. The next starts once the task
	// succeeded, was cancelled or went to the dead-letter store; RetryDead
	// puts a dead one at the tail of its partition. 1 to 256 bytes of A-Z
	// a-z 0-9 . _ - : / (e.g. "user:42"). Not for delayed tasks, group
	// members or continuations. Defaults to none.
	PartitionKey string
}

// Spec is one task for EnqueueMany.
type Spec struct {
	Args Args
	Opts *EnqueueOpts
}

// engineOpts is o as the engine takes it (the two types have the same
// fields, in the same order: the compiler checks the conversion).
func engineOpts(o *EnqueueOpts) *engine.Opts { return (*engine.Opts)(o) }

// Enqueue adds one task and returns its handle. Bad input (a nil args, an
// invalid name, a payload over the limit) is refused before Redis is touched.
// Concurrent calls share round trips.
//
// When the error is not nil, whether the task was added depends on it:
//   - not added: bad input (matching ErrInvalidName, ErrPayloadTooLarge,
//     or any error returned before Redis was reached) and ErrRedisFull
//     (Redis refused the write);
//   - added: the handle is not nil as well (the task was added, only its
//     record as the child of the handler's task that enqueued it failed);
//   - maybe added: any other error (ctx ended, timeouts, a broken
//     connection, Redis restarting). The script may have run in Redis and
//     its reply been lost.
//
// Within one call, a lost reply is safe: go-redis resends the command and
// the client resends it while Redis answers LOADING (for up to 5 s), and a
// resend adds nothing: an auto-keyed task goes under a stream entry id the
// client chose, which a resend finds taken (with the task's entry, or its
// record once it ran), and other tasks carry an op marker kept for as long
// as those resends can come (see the package doc). Across calls nothing is remembered: to
// retry after a "maybe added" error, set EnqueueOpts.ID, so that a retry of
// a task that was added adds nothing and returns its handle with Duplicate
// true.
func (c *Client) Enqueue(ctx context.Context, args Args, opts *EnqueueOpts) (*Handle, error) {
	r, err := c.eng.Enqueue(ctx, args, engineOpts(opts))
	return c.handleOrNil(r), err
}

// EnqueueMany adds every task of specs in pipelined round trips and returns
// their handles in the order of specs. All specs are checked before anything is
// sent; the first bad one fails the call and nothing is added.
//
// Errors are read as Enqueue's, except that specs go to Redis in several
// script calls (one per queue and 500 tasks): after an error from Redis,
// including ErrRedisFull, the tasks of other calls may have been added. Set
// EnqueueOpts.ID on every spec to make the retry of the whole slice safe.
func (c *Client) EnqueueMany(ctx context.Context, specs []Spec) ([]*Handle, error) {
	es := make([]engine.Spec, len(specs))
	for i, s := range specs {
		es[i] = engine.Spec{Args: s.Args, Opts: engineOpts(s.Opts)}
	}
	rs, err := c.eng.EnqueueMany(ctx, es)
	if rs == nil {
		return nil, err
	}
	hs := make([]*Handle, len(rs))
	for i, r := range rs {
		hs[i] = c.handleOrNil(r)
	}
	return hs, err
}
