package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// DueQueues lists, earliest first, up to count queues in the due index whose
// due time is at or before nowMs (Redis time).
func DueQueues(ctx context.Context, rdb redis.Cmdable, nowMs int64, count int) ([]string, error) {
	due, err := rdb.ZRangeByScore(ctx, keys.DueIndex, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(nowMs, 10), Count: int64(count)}).Result()
	if err != nil {
		return nil, fmt.Errorf("read the due index: %w", err)
	}
	return due, nil
}

// NextDue returns the earliest due time in the due index (Unix ms, Redis
// time); ok is false when the index is empty.
func NextDue(ctx context.Context, rdb redis.Cmdable) (dueMs int64, ok bool, err error) {
	first, err := rdb.ZRangeWithScores(ctx, keys.DueIndex, 0, 0).Result()
	if err != nil {
		return 0, false, fmt.Errorf("read the due index: %w", err)
	}
	if len(first) == 0 {
		return 0, false, nil
	}
	return int64(first[0].Score), true, nil
}

// RegisteredQueues lists every queue registered for housekeeping (see
// RegisterQueue).
func RegisteredQueues(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	qs, err := rdb.SMembers(ctx, keys.Queues).Result()
	if err != nil {
		return nil, fmt.Errorf("read the queue registry: %w", err)
	}
	return qs, nil
}

// SubscribeDueWake subscribes to the coordinators' wake-ups (see MarkDue)
// and waits for the confirmation: a wake-up published once it returned is
// received. The caller closes the subscription.
func SubscribeDueWake(ctx context.Context, rdb redis.UniversalClient) (*redis.PubSub, error) {
	ps := rdb.Subscribe(ctx, keys.DueWake)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to wake-ups: %w", err)
	}
	return ps, nil
}
