// Package ratelimit is a rate limiter shared by every process on one Redis:
// a token bucket per key, Rate events per Per with bursts of up to Burst,
// kept in Redis and changed by one Lua script per call, in Redis' own time.
//
// It stands alone (throttle calls to an external API across a fleet, say);
// the workers of this module use it for tasks enqueued with
// client.EnqueueOpts.RateKey and for patterns.Throttle.
//
// A bucket is one Redis key, "async:{rl:<key>}", holding one number (the
// time at which the bucket would be full again, GCRA style); it expires at
// that time, so an idle key costs nothing. Take keeps a second number next
// to it, "async:{rl:<key>}:wake", the next wake-up time it will hand out. A clock that steps back never
// adds events, and one that jumps forward adds Burst at most.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limit is a rate: Rate events per Per, of which up to Burst may happen at
// once (after a quiet spell). Burst defaults to 1: events are spread evenly,
// one every Per/Rate.
type Limit struct {
	Rate  int
	Per   time.Duration
	Burst int
}

// Interval is the time one event takes from the bucket: Per / Rate.
func (l Limit) Interval() time.Duration { return l.Per / time.Duration(max(l.Rate, 1)) }

// Validate reports what is wrong with l, if anything (Burst 0 is allowed and
// means 1).
func (l Limit) Validate() error {
	switch {
	case l.Rate < 1:
		return fmt.Errorf("ratelimit: Limit.Rate is %d, must be at least 1", l.Rate)
	case l.Per < time.Microsecond:
		return fmt.Errorf("ratelimit: Limit.Per is %v, must be at least 1µs", l.Per)
	case l.Burst < 0:
		return fmt.Errorf("ratelimit: Limit.Burst is %d, must be 0 (meaning 1) or more", l.Burst)
	case l.Per/time.Duration(l.Rate) < time.Microsecond:
		return fmt.Errorf("ratelimit: Limit of %d per %v is more than one event per µs, the limiter's resolution", l.Rate, l.Per)
	}
	return nil
}

func (l Limit) burst() int { return max(l.Burst, 1) }

// Limiter applies one Limit to any number of keys. It is safe for
// concurrent use.
type Limiter struct {
	rdb  redis.UniversalClient
	lim  Limit
	err  error // what is wrong with the limit, returned by every call
	comb combiner

	interval string // µs per event, formatted once
}

// New returns a Limiter of lim on rdb, which it uses but never closes. A bad
// lim (see Limit.Validate) is reported by every call, as is a nil rdb.
func New(rdb redis.UniversalClient, lim Limit) *Limiter {
	l := &Limiter{rdb: rdb, lim: lim, err: lim.Validate()}
	if rdb == nil && l.err == nil {
		l.err = errors.New("ratelimit: redis client is nil")
	}
	if l.err == nil {
		l.interval = strconv.FormatFloat(float64(lim.Per)/float64(lim.Rate)/float64(time.Microsecond), 'f', -1, 64)
	}
	return l
}

// Limit returns the limiter's limit.
func (l *Limiter) Limit() Limit { return l.lim }

// Result is the answer of Allow.
type Result struct {
	Allowed    bool
	RetryAfter time.Duration // when refused: how long until n events would fit; else 0
	Remaining  int           // events that still fit now, after this call
}

// ErrInvalidKey is wrapped by the errors about bad keys.
var ErrInvalidKey = errors.New("invalid rate limit key")

// MaxKeyLen bounds a key.
const MaxKeyLen = 256

// ValidateKey checks a key: 1 to 256 bytes of A-Z a-z 0-9 and . _ - : /
// (so "s3:bucket-a" and "api/v2" work).
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("ratelimit: key is empty: %w", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("ratelimit: key %.32q... is %d bytes, the limit is %d: %w", key, len(key), MaxKeyLen, ErrInvalidKey)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/' {
			continue
		}
		return fmt.Errorf("ratelimit: key %q has %q at byte %d; allowed are A-Z a-z 0-9 . _ - : /: %w", key, c, i, ErrInvalidKey)
	}
	return nil
}

// BucketKey is the Redis key of key's bucket.
func BucketKey(key string) string { return "async:{rl:" + key + "}" }

func (l *Limiter) check(key string, n int) error {
	if l.err != nil {
		return l.err
	}
	if err := ValidateKey(key); err != nil {
		return err
	}
	if n < 1 {
		return fmt.Errorf("ratelimit: n is %d, must be at least 1", n)
	}
	if n > l.lim.burst() {
		return fmt.Errorf("ratelimit: n is %d, more than the burst of %d: it could never be allowed", n, l.lim.burst())
	}
	return nil
}

func (l *Limiter) run(ctx context.Context, key string, n int, mode string) (taken bool, wait time.Duration, left int, err error) {
	bk := BucketKey(key)
	v, err := l.do(ctx, &call{keys: []string{bk, bk + ":wake"}, args: []any{l.interval, l.lim.burst(), n, mode},
		done: make(chan struct{}), lead: make(chan struct{})})
	if err != nil {
		return false, 0, 0, fmt.Errorf("ratelimit %s: %w", key, err)
	}
	if len(v) != 3 {
		return false, 0, 0, fmt.Errorf("ratelimit %s: unexpected reply %v", key, v)
	}
	return v[0] == 1, time.Duration(v[1]) * time.Microsecond, int(v[2]), nil
}

// Allow takes n events from key's bucket if they fit now. When they do not,
// nothing is taken and RetryAfter says when they would.
func (l *Limiter) Allow(ctx context.Context, key string, n int) (Result, error) {
	if err := l.check(key, n); err != nil {
		return Result{}, err
	}
	ok, wait, left, err := l.run(ctx, key, n, "allow")
	if err != nil {
		return Result{}, err
	}
	if ok {
		wait = 0
	}
	return Result{Allowed: ok, RetryAfter: wait, Remaining: left}, nil
}

// Wait takes n events from key's bucket, sleeping (never polling in a
// loop) for as long as Allow says they need. If ctx ends first it returns
// ctx.Err() and the bucket is as if Wait had not been called.
func (l *Limiter) Wait(ctx context.Context, key string, n int) error {
	if err := l.check(key, n); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, wait, _, err := l.run(ctx, key, n, "allow")
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// Take takes n events from key's bucket if they fit now. When they do not,
// nothing is taken and wait is the caller's turn: callers refused one after
// another get wake-up times one interval apart (from when n would fit), so
// that waiters come back in turn rather than all at once. At its turn the
// caller calls Take again (the events are taken then, so a caller that
// comes late or not at all takes nothing from the others).
func (l *Limiter) Take(ctx context.Context, key string, n int) (taken bool, wait time.Duration, err error) {
	if err := l.check(key, n); err != nil {
		return false, 0, err
	}
	ok, wait, _, err := l.run(ctx, key, n, "take")
	if ok {
		wait = 0
	}
	return ok, wait, err
}

// Reserve takes n events from key's bucket now or in the future, and
// returns how long the caller must wait before acting on them (0: now).
// Reservations queue up: each one is due one interval after the one
// before, so many callers are spread out instead of retrying together. A
// reservation cannot be handed back.
func (l *Limiter) Reserve(ctx context.Context, key string, n int) (time.Duration, error) {
	if err := l.check(key, n); err != nil {
		return 0, err
	}
	_, wait, _, err := l.run(ctx, key, n, "reserve")
	return wait, err
}
