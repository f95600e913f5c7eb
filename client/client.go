package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
)

// Args is implemented by every task argument type. Kind returns a stable name
// for the type, the name workers register handlers under; it must not change
// when the Go type is renamed. Kinds follow the name rule [A-Za-z0-9._-]{1,128}.
type Args interface {
	Kind() string
}

// Config configures a Client. A nil *Config means all defaults.
type Config struct {
	// Logger receives warnings about the Redis setup. Defaults to slog.Default().
	Logger *slog.Logger

	// DefaultQueue is used when EnqueueOpts.Queue is empty. Defaults to "default".
	DefaultQueue string

	// DefaultMaxAttempts is used when EnqueueOpts.MaxAttempts is zero.
	// Defaults to 25.
	DefaultMaxAttempts int

	// Retention is how long a finished task's state and result are kept when
	// EnqueueOpts.Retention is zero. Defaults to 24 hours.
	Retention time.Duration

	// MaxPayloadBytes bounds the encoded args of a task; Enqueue refuses a larger
	// one with ErrPayloadTooLarge. Workers apply their own limit again when they
	// read a task. Defaults to 1 MiB.
	MaxPayloadBytes int

	// EnqueueHooks see each task the client is about to enqueue, in order,
	// before it is checked and sent: by Enqueue, EnqueueMany, and the
	// patterns (group members, continuations, batches...) that enqueue
	// through the client. A hook may change the task's options (add
	// metadata, say: a tenant, a request id); one that returns an error
	// refuses the task, and so the call (EnqueueMany adds none of its
	// tasks), as bad input does: errors.Is finds the hook's error.
	// Defaults to none.
	EnqueueHooks []EnqueueHook

	// EnqueuedHooks are told of each task the client added to Redis, or
	// found there already (a duplicate id), once Redis confirmed it: by
	// Enqueue, EnqueueMany, Handle.ContinueWith, and the patterns that
	// enqueue through the client (group members and joins, nested groups'
	// members, a group's continuations, the tasks of Partition and
	// Partitioner.Flush, patterns.Batch items). A continuation is told of
	// once it is registered, as a task that waits.
	//
	// Only tasks Redis holds are told of: not those of a call refused
	// (bad input, an EnqueueHook's error) or whose write failed. A call
	// made of several writes that failed part way (EnqueueMany across
	// queues or past 500 tasks, a group whose later step failed) reports
	// the tasks its successful writes added: they exist and will run.
	// A repeat schedule's template (patterns.Repeat) is not a task: the
	// tasks of its slots are made later by a coordinator's script, in no
	// client's call, and are not told of: patterns.Repeats (a schedule's
	// Last task and Fired count) and package inspect show them. A group's
	// join is told of once its group is sealed (a ForkJoin that failed
	// before reports its members, not the join, which goes with the
	// unsealed group). Not told of either: a ForkJoin or Group started
	// again with the ID of a group that exists (it adds nothing, so it
	// reports nothing), and a dead task RetryDead puts back in its queue
	// (it is the same task, run again, not a task enqueued anew).
	//
	// The hooks run in order, on the goroutine that enqueued, with its ctx,
	// after the call's write and in the order of the call's tasks; they
	// must be quick and safe for concurrent use. Package asynctest records
	// what a test enqueued with one. With none set, an enqueue pays one nil
	// check for them. Defaults to none.
	EnqueuedHooks []EnqueuedHook

	// TracerProvider makes the OpenTelemetry producer span of each Enqueue
	// and EnqueueMany call ("send <queue>"), whose trace context the tasks
	// carry to their workers' consumer spans (see the package doc).
	// Defaults to otel.GetTracerProvider(): no spans until an SDK is
	// installed.
	TracerProvider trace.TracerProvider

	// WaitReplicas makes enqueues durable against a failover: an enqueue
	// returns only once this many replicas of the master that holds the
	// task's queue have its writes (Redis WAIT, sent on the connection
	// that made them, after a mark written there so that it covers a
	// resent call too). It holds for Enqueue and EnqueueMany, and for the
	// tasks the patterns send through the client's enqueue calls (a
	// group's members and join, a task held as a continuation); the
	// patterns' other writes (a group's record, a continuation's
	// registration, patterns.Batch's items, a Repeat schedule) are not
	// waited for. Concurrent Enqueue calls share one WAIT per round trip,
	// and Enqueue does not take its one-command way. If fewer replicas
	// confirm within WaitTimeout, the
	// call returns an error matching ErrNotReplicated (a
	// *NotReplicatedError, with the counts) and, unlike other errors, the
	// handles: the tasks were added and will run, but a failover of that
	// master now may lose them. Redis replicates asynchronously, and even
	// a confirmed task is only on the replicas' memory: docs/design.md
	// ("What a failover can lose") says what this does and does not
	// promise. It needs a *redis.Client or a *redis.ClusterClient (New
	// refuses others). Defaults to 0: an enqueue returns once the master
	// has the task, and a failover may lose what had not reached its
	// replica yet.
	WaitReplicas int

	// WaitTimeout bounds how long an enqueue waits for WaitReplicas
	// replicas (WAIT's timeout), from when the master answered; the ctx
	// deadline still applies (with ContextTimeoutEnabled). Only with
	// WaitReplicas. Defaults to 1 second.
	WaitTimeout time.Duration
}

// EnqueueHook sees a task on its way to Redis (see Config.EnqueueHooks). It
// is called on the goroutine that enqueues, with its ctx, and must be safe
// for concurrent use.
type EnqueueHook func(ctx context.Context, t *Enqueuing) error

// Enqueuing is a task an EnqueueHook sees.
type Enqueuing struct {
	// Kind is the task's kind (Args.Kind()).
	Kind string
	// Args are the task's args, not encoded yet, to read (replacing them
	// changes nothing).
	Args Args
	// Opts are the task's options, with Queue set (Config.DefaultQueue
	// when the caller left it empty), and never nil. They are the task's
	// own copy (Meta too): a hook may change them, and they are checked
	// after the hooks ran; the caller's are left alone. A task enqueued
	// from a handler inherits its metadata later, under the entries set
	// here.
	Opts *EnqueueOpts
}

// EnqueuedHook is told of a task the client enqueued (see
// Config.EnqueuedHooks).
type EnqueuedHook func(ctx context.Context, t *Enqueued)

// Enqueued is a task an EnqueuedHook is told of.
type Enqueued struct {
	// ID is the task's id (Handle.ID); for a continuation or a join, the
	// id it will run under.
	ID string
	// Kind is the task's kind (Args.Kind()).
	Kind string
	// Queue is the queue the task went to.
	Queue string
	// Args are the task's args as the caller gave them (not a copy).
	Args Args
	// Opts are the task's options as they were sent (Queue set, after the
	// EnqueueHooks ran): a copy of their own, never nil.
	Opts *EnqueueOpts
	// Duplicate is set when a task with the same ID was already there,
	// and this call added nothing (Handle.Duplicate).
	Duplicate bool
	// Parent is the id of the task whose handler's ctx enqueued this one
	// (it is that task's child), or "".
	Parent string
	// Continues is the id of the task or group this task continues (a
	// continuation, or a group's join), or "".
	Continues string
	// Group is the id of the group this task is a member of, or "".
	Group string
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.DefaultQueue == "" {
		out.DefaultQueue = engine.DefaultQueue
	}
	if out.DefaultMaxAttempts == 0 {
		out.DefaultMaxAttempts = engine.DefaultMaxAttempts
	}
	if out.Retention == 0 {
		out.Retention = engine.DefaultRetention
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = engine.DefaultMaxPayload
	}
	if out.WaitReplicas > 0 && out.WaitTimeout == 0 {
		out.WaitTimeout = DefaultWaitTimeout
	}
	return out
}

func (c *Config) validate() error {
	if err := keys.ValidateName("queue", c.DefaultQueue); err != nil {
		return fmt.Errorf("client: Config.DefaultQueue: %w", err)
	}
	if c.DefaultMaxAttempts < 1 {
		return fmt.Errorf("client: Config.DefaultMaxAttempts is %d, must be at least 1", c.DefaultMaxAttempts)
	}
	if c.Retention < time.Millisecond {
		return fmt.Errorf("client: Config.Retention is %v, must be at least 1ms", c.Retention)
	}
	if c.MaxPayloadBytes < 1 {
		return fmt.Errorf("client: Config.MaxPayloadBytes is %d, must be positive", c.MaxPayloadBytes)
	}
	if err := c.validateWait(); err != nil {
		return err
	}
	for i, h := range c.EnqueueHooks {
		if h == nil {
			return fmt.Errorf("client: Config.EnqueueHooks[%d] is nil", i)
		}
	}
	for i, h := range c.EnqueuedHooks {
		if h == nil {
			return fmt.Errorf("client: Config.EnqueuedHooks[%d] is nil", i)
		}
	}
	return nil
}

// enqueueHook runs hooks in order, as the engine's hook; nil for none.
func enqueueHook(hooks []EnqueueHook) func(context.Context, engine.Args, *engine.Opts) error {
	if len(hooks) == 0 {
		return nil
	}
	hooks = append([]EnqueueHook(nil), hooks...)
	return func(ctx context.Context, args engine.Args, o *engine.Opts) error {
		t := &Enqueuing{Kind: args.Kind(), Args: args, Opts: (*EnqueueOpts)(o)}
		for _, h := range hooks {
			if err := h(ctx, t); err != nil {
				return err
			}
		}
		return nil
	}
}

// enqueuedHook tells hooks, in order, of a task the engine enqueued; nil
// for none.
func enqueuedHook(hooks []EnqueuedHook) func(context.Context, engine.EnqueuedTask) {
	if len(hooks) == 0 {
		return nil
	}
	hooks = append([]EnqueuedHook(nil), hooks...)
	return func(ctx context.Context, t engine.EnqueuedTask) {
		opts := (*EnqueueOpts)(t.Opts)
		if opts == nil {
			opts = &EnqueueOpts{Queue: t.Ref.Queue}
		}
		for _, h := range hooks {
			// Each hook its own copy: one may keep or change it.
			o := *opts
			o.Meta = maps.Clone(o.Meta)
			h(ctx, &Enqueued{
				ID: t.Ref.ID(), Kind: t.Kind, Queue: t.Ref.Queue, Args: t.Args, Opts: &o,
				Duplicate: t.Ref.Dup, Parent: t.Parent, Continues: t.Continues, Group: t.Group,
			})
		}
	}
}

// Client enqueues tasks and looks them up. It is safe for concurrent use.
// Concurrent Enqueue calls are coalesced into shared round trips.
type Client struct {
	// anchor lets packages worker and patterns reach eng, typed, without a
	// public method (see internal/engine.Of).
	anchor
	eng *engine.Engine
}

type anchor = engine.Anchor[*Handle]

// New returns a Client on rdb, which it uses but never closes. Within ctx
// (New sets no time limit of its own: give ctx one) it checks the server: it refuses Redis older than 6.2 (ErrRedisTooOld), warns
// in the log when maxmemory-policy is not noeviction or when rdb does not
// bound socket reads by the ctx deadline (ContextTimeoutEnabled), loads the
// Lua scripts and measures Redis' clock. It reads rdb's retry and timeout
// options once, here: they decide how long an enqueue stays safe to resend
// (see the package doc).
func New(ctx context.Context, rdb redis.UniversalClient, cfg *Config) (*Client, error) {
	if rdb == nil {
		return nil, errors.New("client: redis client is nil")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	eng, err := engine.New(ctx, rdb, engine.Config{
		Logger:             c.Logger,
		DefaultQueue:       c.DefaultQueue,
		DefaultMaxAttempts: c.DefaultMaxAttempts,
		Retention:          c.Retention,
		MaxPayloadBytes:    c.MaxPayloadBytes,
		Hook:               enqueueHook(c.EnqueueHooks),
		Enqueued:           enqueuedHook(c.EnqueuedHooks),
		TracerProvider:     c.TracerProvider,
		Durable:            engine.Durability{Replicas: c.WaitReplicas, Timeout: c.WaitTimeout},
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	cl := &Client{eng: eng}
	cl.anchor = engine.NewAnchor(eng, cl.handle)
	return cl, nil
}

// handle returns the handle of the task r names.
func (c *Client) handle(r engine.Ref) *Handle { return &Handle{c: c, ref: r} }

// handleOrNil is handle, or nil for the zero Ref (nothing was placed).
func (c *Client) handleOrNil(r engine.Ref) *Handle {
	if r.Key == "" {
		return nil
	}
	return c.handle(r)
}

// Close stops the client's background notification listener, which Outcome
// starts on first use. It does not close the Redis client. Calls in flight
// return errors; Close is idempotent.
func (c *Client) Close() error {
	c.eng.Close()
	return nil
}
