package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

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
