// Package engine is the typed core under packages client, worker and
// patterns: it prepares and sends tasks (alone, as group members, held
// waiting, or as templates that scripts copy later), watches for their ends,
// and reads, cancels and continues them. Redis is reached only through
// package store.
//
// client.Client wraps an Engine and is its public face. Package patterns and
// package worker reach the Engine of a *client.Client through Of, a typed
// accessor that needs no public method: client.Client embeds an Anchor under
// an unexported name, and Of reads it through an unexported method.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Args is what every task argument type implements (client.Args has the
// same method set).
type Args interface {
	Kind() string
}

// Config is an Engine's settings, defaults applied and checked by the caller
// (client.Config documents each).
type Config struct {
	Logger             *slog.Logger
	DefaultQueue       string
	DefaultMaxAttempts int
	Retention          time.Duration
	MaxPayloadBytes    int

	// Hook, if set, sees each task before it is checked: o is a copy of its
	// options (Queue set, Meta a map of its own) that it may change; an
	// error refuses the task (client.Config.EnqueueHooks).
	Hook func(ctx context.Context, args Args, o *Opts) error

	// Enqueued, if set, is told of each task once Redis confirmed it was
	// added or found (client.Config.EnqueuedHooks), in the order of the
	// call's tasks, on the goroutine that enqueued.
	Enqueued func(ctx context.Context, t EnqueuedTask)

	// TracerProvider makes the tracer of the producer spans (see
	// trace.go); nil means the global one (otel.GetTracerProvider()).
	TracerProvider trace.TracerProvider

	// Durable, if its Replicas is set, makes every enqueue wait until
	// that many replicas have its tasks (durable21.go;
	// client.Config.WaitReplicas).
	Durable Durability
}

// Defaults of Config, applied by client.Config and by the workers' engine.
const (
	DefaultQueue       = "default"
	DefaultMaxAttempts = 25
	DefaultRetention   = 24 * time.Hour
	DefaultMaxPayload  = 1 << 20
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultQueue == "" {
		c.DefaultQueue = DefaultQueue
	}
	if c.DefaultMaxAttempts == 0 {
		c.DefaultMaxAttempts = DefaultMaxAttempts
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxPayloadBytes == 0 {
		c.MaxPayloadBytes = DefaultMaxPayload
	}
	return c
}

// Engine prepares, sends, watches and reads tasks. It is safe for concurrent
// use.
type Engine struct {
	rdb  redis.UniversalClient
	cfg  Config
	comb *combiner
	hub  *hub

	tracers *Tracers // of the producer spans (trace.go)

	groups sync.Map    // queue names whose consumer group this engine ensured
	clock  store.Clock // Redis time, for deadlines

	// shardsOf caches the shard registry's entries (shard21.go).
	shardsOf shardCache

	// markerTTL is how long an enqueue's op marker lives: the longest
	// time after a first attempt reached Redis that the same call may send
	// it again (go-redis' resends, and the engine's own on LOADING).
	markerTTL time.Duration
	// read holds the op ids of enqueue calls whose replies were read, for
	// the next call to the same queue to shorten their markers.
	read readOps
	// ids chooses the entry ids of the tasks enqueueOne adds.
	ids *store.EntryIDs
	// keepsLastID is whether the server keeps a stream's last id when its
	// last entry is deleted (Redis does, miniredis does not): enqueueOne's
	// resends rely on it.
	keepsLastID bool
	// oneBusy is set while an enqueueOne call is in flight.
	oneBusy atomic.Bool

	closeOnce sync.Once
}

// New checks the server (Redis 6.2 or newer; a warning in the log when
// maxmemory-policy is not noeviction or when rdb does not bound socket reads
// by the ctx deadline), loads the Lua scripts and measures Redis' clock, all
// within ctx. It reads rdb's retry and timeout options once: they decide how
// long an enqueue stays safe to resend.
func New(ctx context.Context, rdb redis.UniversalClient, cfg Config) (*Engine, error) {
	if rdb == nil {
		return nil, errors.New("redis client is nil")
	}
	cfg = cfg.WithDefaults()
	if err := checkDurable(rdb, cfg.Durable); err != nil {
		return nil, err
	}
	if err := store.CheckServer(ctx, rdb, cfg.Logger); err != nil {
		return nil, err
	}
	warnContextDeadlines(rdb, cfg.Logger)
	e := &Engine{rdb: rdb, cfg: cfg, markerTTL: store.MarkerTTL(rdb) + loadingPatience + loadingMaxBackoff}
	e.comb = e.newCombiner()
	e.ids = store.NewEntryIDs()
	e.tracers = NewTracers(cfg.TracerProvider)
	if err := e.clock.Sync(ctx, rdb); err != nil {
		return nil, fmt.Errorf("read redis time: %w", err)
	}
	// Unknown (INFO failed): every Enqueue keeps the op marker's way.
	keeps, err := store.KeepsLastID(ctx, rdb)
	if err != nil {
		cfg.Logger.Info("async: INFO server could not be read, so Enqueue keeps an op marker per call (the one-command way needs to know the server keeps a stream's last id)",
			slog.String("err", err.Error()))
	}
	e.keepsLastID = keeps
	e.hub = newHub(rdb)
	return e, nil
}

// warnedCtx holds the Redis clients whose missing ContextTimeoutEnabled was
// reported, so that each gets one warning however many engines use it.
var warnedCtx sync.Map

// warnContextDeadlines warns, once per Redis client, when rdb does not bound
// its socket reads and writes by the ctx deadline: go-redis then waits for
// its own ReadTimeout on a dead connection, whatever deadline the caller set.
func warnContextDeadlines(rdb redis.UniversalClient, log *slog.Logger) {
	on, known := store.ContextDeadlines(rdb)
	if on {
		return
	}
	if _, done := warnedCtx.LoadOrStore(rdb, struct{}{}); done {
		return
	}
	if !known {
		log.Warn("async: cannot read the options of this redis client; unless it has ContextTimeoutEnabled set, a call on a dead connection waits for the client's read timeout, not the ctx deadline",
			slog.String("type", fmt.Sprintf("%T", rdb)))
		return
	}
	log.Warn("async: the redis client has ContextTimeoutEnabled off, so go-redis ignores ctx deadlines on socket reads and writes: a call on a dead connection waits for ReadTimeout/WriteTimeout instead; set ContextTimeoutEnabled: true in the redis options")
}

// Close stops the notification listener that Outcome and Watch start on
// first use. It does not close the Redis client; it is idempotent.
func (e *Engine) Close() {
	e.closeOnce.Do(e.hub.close)
}

// Redis is the client e was built on, for package store's functions.
func (e *Engine) Redis() redis.UniversalClient { return e.rdb }

// Retention is the default retention of a finished task's record.
func (e *Engine) Retention() time.Duration { return e.cfg.Retention }

// Logger is where e reports what it cannot return.
func (e *Engine) Logger() *slog.Logger { return e.cfg.Logger }

// QueueOf is the queue opts names, or the default queue.
func (e *Engine) QueueOf(opts *Opts) string {
	if opts != nil && opts.Queue != "" {
		return opts.Queue
	}
	return e.cfg.DefaultQueue
}

// Ref names one task, as an enqueue placed it.
type Ref struct {
	Queue string
	Key   string
	Dup   bool // a task with that key existed: nothing was added
}

// ID is the task's id, "<queue>/<key>".
func (r Ref) ID() string { return keys.TaskID(r.Queue, r.Key) }

// RefOf parses a task id.
func RefOf(id string) (Ref, error) {
	q, k, err := keys.SplitTaskID(id)
	if err != nil {
		return Ref{}, err
	}
	return Ref{Queue: q, Key: k}, nil
}

// Anchor ties an Engine to the public client that wraps it, with the
// function that turns a Ref into that client's handle type H. client.Client
// embeds one (under an unexported alias), which makes it an Owner.
type Anchor[H any] struct {
	e    *Engine
	wrap func(Ref) H
}

// NewAnchor returns the Anchor of e, whose handles wrap makes.
func NewAnchor[H any](e *Engine, wrap func(Ref) H) Anchor[H] {
	return Anchor[H]{e: e, wrap: wrap}
}

func (a Anchor[H]) anchor() Anchor[H] { return a }

// Owner is a value that embeds an Anchor: only a type of this module can be
// one, since the method is unexported.
type Owner[H any] interface {
	anchor() Anchor[H]
}

// Of returns the Engine of o, and the function that makes o's handles; a nil
// Engine for an Owner built without New.
func Of[H any](o Owner[H]) (*Engine, func(Ref) H) {
	a := o.anchor()
	return a.e, a.wrap
}

// EnqueuedTask is a task an enqueue added to Redis or found there
// (Config.Enqueued).
type EnqueuedTask struct {
	Ref       Ref
	Kind      string
	Args      Args
	Opts      *Opts  // as sent: Queue set, the hooks' changes applied; a copy
	Parent    string // the task whose handler's ctx enqueued it, or ""
	Continues string // the task or group it continues, or ""
	Group     string // the group it is a member of, or ""
}
