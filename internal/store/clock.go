package store

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Clock estimates Redis' time from the local clock and a measured offset, so
// that deadlines decided on the client and checked on workers agree on one
// time: Redis'. Sync measures the offset with TIME, taking the midpoint of
// the round trip.
type Clock struct {
	offset atomic.Int64 // Redis time minus local time, ns
	synced atomic.Int64 // when Sync last succeeded, local Unix ns
}

// Refresh syncs the clock when the last sync is older than maxAge; on error
// it keeps the old offset.
func (c *Clock) Refresh(ctx context.Context, rdb redis.Cmdable, maxAge time.Duration) {
	if time.Since(time.Unix(0, c.synced.Load())) > maxAge {
		_ = c.Sync(ctx, rdb)
	}
}

// Sync measures the offset.
func (c *Clock) Sync(ctx context.Context, rdb redis.Cmdable) error {
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

// Now returns the estimate of Redis' current time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// ToRedis converts a local time to Redis time.
func (c *Clock) ToRedis(t time.Time) time.Time { return t.Add(time.Duration(c.offset.Load())) }

// ToLocal converts a Redis time to local time.
func (c *Clock) ToLocal(t time.Time) time.Time { return t.Add(-time.Duration(c.offset.Load())) }

// Time reads Redis' clock once.
func Time(ctx context.Context, rdb redis.Cmdable) (time.Time, error) {
	return rdb.Time(ctx).Result()
}
