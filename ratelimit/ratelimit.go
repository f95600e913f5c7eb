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
// to it, "async:{rl:<key>}:wake", the next turn it will hand out. A clock that steps back never
// adds events, and one that jumps forward adds Burst at most.
//
// Every call is safe to resend: a call that changes the bucket leaves its
// reply under a marker of its own, "async:{rl:<key>}:op:<id>", for as long
// as the client may resend it (store.MarkerTTL: a few minutes with
// go-redis' defaults), and a resend returns that reply and changes nothing.
// So a call whose reply was lost takes, reserves or refunds once. Once the
// Limiter has read a call's reply, go-redis sends it no more: the next call
// on the same bucket cuts that marker to a grace of 2 seconds (for a try
// still on its way), so a busy bucket holds the markers of its calls of the
// last 2 seconds, not of the last minutes.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Limit is a rate: Rate events per Per, of which up to Burst may happen at
// once (after a quiet spell). Burst defaults to 1: events are spread evenly,
// one every Per/Rate.
type Limit struct {
	Rate  int
	Per   time.Duration
	Burst int
}

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
	comb *combiner

	interval string        // µs per event, formatted once
	markerMs int64         // how long a call's op marker lives: rdb's resend window and a margin
	marker   time.Duration // the same
	graceMs  int64         // how long it lives once its reply was read (markerGrace at most)
	marks    marks         // markers of calls whose replies were read, to cut
}

// New returns a Limiter of lim on rdb, which it uses but never closes. A bad
// lim (see Limit.Validate) is reported by every call, as is a nil rdb.
func New(rdb redis.UniversalClient, lim Limit) *Limiter {
	l := &Limiter{rdb: rdb, lim: lim, err: lim.Validate()}
	l.comb = l.newCombiner()
	if rdb == nil && l.err == nil {
		l.err = errors.New("ratelimit: redis client is nil")
	}
	if l.err == nil {
		l.interval = strconv.FormatFloat(float64(lim.Per)/float64(lim.Rate)/float64(time.Microsecond), 'f', -1, 64)
		l.marker = store.MarkerTTL(rdb)
		l.markerMs = l.marker.Milliseconds()
		l.graceMs = min(markerGrace, l.marker).Milliseconds()
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
	if i := keys.BadKeyByte(key); i >= 0 {
		return fmt.Errorf("ratelimit: key %q has %q at byte %d; allowed are A-Z a-z 0-9 . _ - : /: %w", key, key[i], i, ErrInvalidKey)
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

func (l *Limiter) run(ctx context.Context, key string, n int, mode string, turn int64) (r reply, err error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err // nothing is sent for a call already cancelled
	}
	bk := BucketKey(key)
	// Each call carries an op id of its own: a resend of it (go-redis
	// sends a call again when its reply was lost) finds the marker the
	// first run left and returns that run's reply, taking nothing again.
	// It also carries the ids of earlier calls on the bucket whose replies
	// were read: go-redis sends those no more, and their markers are cut
	// to a short grace instead of living the whole resend window.
	op := opID{rand.Uint64(), rand.Uint64()}
	done := l.marks.take(bk, l.marker)
	var cut []string
	if len(done) > 0 {
		cut = make([]string, len(done))
		for i, id := range done {
			cut[i] = id.key(bk)
		}
	}
	v, err := l.comb.Do(ctx, store.RateCall{Bucket: bk, Wake: bk + ":wake", Marker: op.key(bk), Cut: cut,
		Interval: l.interval, Burst: l.lim.burst(), N: n, Mode: mode, Turn: turn, MarkerMs: l.markerMs, GraceMs: l.graceMs})
	if err != nil {
		// Perhaps not run: the next call cuts those markers. This call's
		// own keeps its full lifetime.
		l.marks.put(bk, l.marker, done...)
		return reply{}, fmt.Errorf("ratelimit %s: %w", key, err)
	}
	if v.Marked {
		l.marks.put(bk, l.marker, op)
	}
	return reply{taken: v.Taken, wait: time.Duration(v.WaitUs) * time.Microsecond, left: v.Left, turn: v.Turn}, nil
}

type reply struct {
	taken bool
	wait  time.Duration
	left  int
	turn  int64
}

// Allow takes n events from key's bucket if they fit now. When they do not,
// nothing is taken and RetryAfter says when they would.
func (l *Limiter) Allow(ctx context.Context, key string, n int) (Result, error) {
	if err := l.check(key, n); err != nil {
		return Result{}, err
	}
	r, err := l.run(ctx, key, n, "allow", 0)
	if err != nil {
		return Result{}, err
	}
	if r.taken {
		r.wait = 0
	}
	return Result{Allowed: r.taken, RetryAfter: r.wait, Remaining: r.left}, nil
}

// Wait takes n events from key's bucket, sleeping until they are due: it
// reserves them in one call (so many waiters are spread out, and none
// polls), and gives them back if ctx ends first, returning ctx.Err(): the
// bucket then holds as many events as if Wait had not been called.
func (l *Limiter) Wait(ctx context.Context, key string, n int) error {
	if err := l.check(key, n); err != nil {
		return err
	}
	r, err := l.run(ctx, key, n, "reserve", 0)
	if err != nil {
		return err
	}
	if r.wait <= 0 {
		return nil
	}
	t := time.NewTimer(r.wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := l.Refund(rctx, key, n); err != nil {
			return fmt.Errorf("%w (and the reservation could not be given back: %v)", ctx.Err(), err)
		}
		return ctx.Err()
	}
}

// Take takes n events from key's bucket if they fit now and no earlier
// caller waits for them. When it refuses, nothing is taken, and the caller
// gets a turn: come back after wait and present turn. Callers refused one
// after another get turns one interval apart, so waiters come back in
// order rather than all at once, and a newcomer does not take the events a
// waiter was told to come back for. The events are taken only at the turn,
// so a caller that comes late or not at all takes nothing from the others
// (turns nobody used are forgotten once the bucket has been full for an
// interval). Pass
// turn 0 on the first call.
func (l *Limiter) Take(ctx context.Context, key string, n int, turn int64) (taken bool, wait time.Duration, next int64, err error) {
	if err := l.check(key, n); err != nil {
		return false, 0, 0, err
	}
	r, err := l.run(ctx, key, n, "take", turn)
	if err != nil {
		return false, 0, 0, err
	}
	if r.taken {
		return true, 0, 0, nil
	}
	return false, r.wait, r.turn, nil
}

// Refund gives back n events taken from key's bucket (by a caller that
// then did not act on them); the bucket never holds more than Burst.
func (l *Limiter) Refund(ctx context.Context, key string, n int) error {
	if err := l.check(key, n); err != nil {
		return err
	}
	_, err := l.run(ctx, key, n, "refund", 0)
	return err
}

// Reserve takes n events from key's bucket now or in the future, and
// returns how long the caller must wait before acting on them (0: now).
// Reservations queue up: each one is due one interval after the one
// before. Refund gives a reservation back.
func (l *Limiter) Reserve(ctx context.Context, key string, n int) (time.Duration, error) {
	if err := l.check(key, n); err != nil {
		return 0, err
	}
	r, err := l.run(ctx, key, n, "reserve", 0)
	return r.wait, err
}
