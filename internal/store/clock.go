package store

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// StoppedClock is implemented by a Redis client whose server's clock can be
// stopped (the test kit's, on its embedded miniredis): StoppedAt reports
// the time the clock stands at, and false while it runs.
type StoppedClock interface {
	StoppedAt() (time.Time, bool)
}

// Clock estimates Redis' time from the local clock and a measured offset, so
// that deadlines decided on the client and checked on workers agree on one
// time: Redis'. Sync measures the offset with TIME, taking the midpoint of
// the round trip.
//
// When the client Sync is given implements StoppedClock, the clock asks it
// at every reading: while Redis' clock is stopped, Now is the stopped time
// (it does not move on with the local clock), and the offset between the
// two clocks is the stopped time minus the local time of the reading.
type Clock struct {
	offset  atomic.Int64 // Redis time minus local time, ns
	synced  atomic.Int64 // when Sync last succeeded, local Unix ns
	stopped atomic.Pointer[stoppedRef]
}

type stoppedRef struct{ s StoppedClock }

// Refresh syncs the clock when the last sync is older than maxAge; on error
// it keeps the old offset.
func (c *Clock) Refresh(ctx context.Context, rdb redis.Cmdable, maxAge time.Duration) {
	if time.Since(time.Unix(0, c.synced.Load())) > maxAge {
		_ = c.Sync(ctx, rdb)
	}
}

// Sync measures the offset.
func (c *Clock) Sync(ctx context.Context, rdb redis.Cmdable) error {
	if s, ok := rdb.(StoppedClock); ok && c.stopped.Load() == nil {
		c.stopped.Store(&stoppedRef{s})
	}
	before := time.Now()
	t, err := rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	after := time.Now()
	mid := before.Add(after.Sub(before) / 2)
	c.offset.Store(int64(t.Sub(mid)))
	c.synced.Store(after.UnixNano())
	return nil
}

// offsetAt returns Redis' time minus the local time now, and Redis' stopped
// time when its clock is stopped.
func (c *Clock) offsetAt(now time.Time) (time.Duration, time.Time, bool) {
	if r := c.stopped.Load(); r != nil {
		if at, ok := r.s.StoppedAt(); ok {
			return at.Sub(now), at, true
		}
	}
	return time.Duration(c.offset.Load()), time.Time{}, false
}

// Now returns the estimate of Redis' current time.
func (c *Clock) Now() time.Time {
	now := time.Now()
	off, at, stopped := c.offsetAt(now)
	if stopped {
		return at
	}
	return now.Add(off)
}

// Stopped reports whether Redis' clock is stopped (see StoppedClock).
func (c *Clock) Stopped() bool {
	_, _, stopped := c.offsetAt(time.Now())
	return stopped
}

// ToRedis converts a local time to Redis time.
func (c *Clock) ToRedis(t time.Time) time.Time {
	off, _, _ := c.offsetAt(time.Now())
	return t.Add(off)
}

// ToLocal converts a Redis time to local time.
func (c *Clock) ToLocal(t time.Time) time.Time {
	off, _, _ := c.offsetAt(time.Now())
	return t.Add(-off)
}

// FromCaller converts a time a caller gave (a task's ProcessAt or Deadline)
// to Redis time: a local time, converted as ToRedis does, except while
// Redis' clock is stopped, when the caller's times are taken to be in the
// stopped clock's frame (a test that stopped it reads its time and counts
// from there) and kept as they are.
func (c *Clock) FromCaller(t time.Time) time.Time {
	off, _, stopped := c.offsetAt(time.Now())
	if stopped {
		return t
	}
	return t.Add(off)
}

// Time reads Redis' clock once.
func Time(ctx context.Context, rdb redis.Cmdable) (time.Time, error) {
	return rdb.Time(ctx).Result()
}
