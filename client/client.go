package client

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
}

const (
	defaultQueue       = "default"
	defaultMaxAttempts = 25
	defaultRetention   = 24 * time.Hour
	defaultMaxPayload  = 1 << 20
)

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.DefaultQueue == "" {
		out.DefaultQueue = defaultQueue
	}
	if out.DefaultMaxAttempts == 0 {
		out.DefaultMaxAttempts = defaultMaxAttempts
	}
	if out.Retention == 0 {
		out.Retention = defaultRetention
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = defaultMaxPayload
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
	return nil
}

// Client enqueues tasks and looks them up. It is safe for concurrent use.
// Concurrent Enqueue calls are coalesced into shared round trips.
type Client struct {
	rdb  redis.UniversalClient
	cfg  Config
	comb combiner
	hub  *hub

	groups sync.Map    // queue names whose consumer group this client ensured
	clock  store.Clock // Redis time, for deadlines

	// markerTTL is how long an enqueue's op marker lives: the longest
	// time after a first attempt reached Redis that the same call may send
	// it again (go-redis' resends, and the client's own on LOADING).
	markerTTL time.Duration
	// read holds the op ids of enqueue calls whose replies were read, for
	// the next call to the same queue to shorten their markers.
	read readOps

	closeOnce sync.Once
}

// New returns a Client on rdb, which it uses but never closes. It refuses Redis
// older than 6.2, warns (in the log) when maxmemory-policy is not noeviction
// or when rdb does not bound socket reads by the ctx deadline
// (ContextTimeoutEnabled), and loads the Lua scripts. It reads rdb's retry
// and timeout options once, here: they decide how long an enqueue stays
// safe to resend (see the package doc).
func New(rdb redis.UniversalClient, cfg *Config) (*Client, error) {
	if rdb == nil {
		return nil, errors.New("client: redis client is nil")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := store.CheckServer(ctx, rdb, c.Logger); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	warnContextDeadlines(rdb, c.Logger)
	cl := &Client{rdb: rdb, cfg: c, markerTTL: store.MarkerTTL(rdb) + loadingPatience + loadingMaxBackoff}
	if err := cl.clock.Sync(ctx, rdb); err != nil {
		return nil, fmt.Errorf("client: read redis time: %w", err)
	}
	cl.hub = newHub(rdb)
	return cl, nil
}

// warnedCtx holds the Redis clients whose missing ContextTimeoutEnabled was
// reported, so that each gets one warning however many clients use it.
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

// Close stops the client's background notification listener, which Outcome
// starts on first use. It does not close the Redis client. Calls in flight
// return errors; Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(c.hub.close)
	return nil
}

// Redis returns the Redis client c was built on.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }
