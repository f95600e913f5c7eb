package store

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// TakeSlot takes a slot of limit l (max slots) for holder, an attempt of
// task id, with a lease of leaseMs; false when the limit is full.
func TakeSlot(ctx context.Context, rdb redis.Scripter, l keys.Limit, max int, holder, id string, leaseMs int64) (bool, error) {
	n, err := script.LimAcquire.Run(ctx, rdb, []string{l.Holders(), l.Waiters()}, max, holder, leaseMs, id).Int64()
	if err != nil {
		return false, fmt.Errorf("take a slot of limit %s: %w", l.Scope, err)
	}
	return n == 1, nil
}

// AwaitSlot registers task id as waiting for a slot of l; true when a slot
// is free already (nothing registered: wake the task now).
func AwaitSlot(ctx context.Context, rdb redis.Scripter, l keys.Limit, max int, id string, keepMs int64) (bool, error) {
	n, err := script.LimWait.Run(ctx, rdb, []string{l.Holders(), l.Waiters()}, max, id, keepMs).Int64()
	if err != nil {
		return false, fmt.Errorf("wait for a slot of limit %s: %w", l.Scope, err)
	}
	return n == 1, nil
}

// GiveSlots gives back holders' slots of l and returns the ids of the
// waiting tasks to wake.
func GiveSlots(ctx context.Context, rdb redis.Scripter, l keys.Limit, max int, holders ...string) ([]string, error) {
	args := make([]any, 0, 1+len(holders))
	args = append(args, max)
	for _, h := range holders {
		args = append(args, h)
	}
	ids, err := script.LimRelease.Run(ctx, rdb, []string{l.Holders(), l.Waiters()}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("give back slots of limit %s: %w", l.Scope, err)
	}
	return ids, nil
}

// RenewSlots extends the leases of holders of l that still hold a slot; it
// returns how many did (a holder whose lease ended meanwhile is not added
// back).
func RenewSlots(ctx context.Context, rdb redis.Cmdable, l keys.Limit, holders []string, untilMs int64) (int, error) {
	zs := make([]redis.Z, len(holders))
	for i, h := range holders {
		zs[i] = redis.Z{Score: float64(untilMs), Member: h}
	}
	n, err := rdb.ZAddArgs(ctx, l.Holders(), redis.ZAddArgs{XX: true, Ch: true, Members: zs}).Result()
	if err != nil {
		return 0, fmt.Errorf("renew slots of limit %s: %w", l.Scope, err)
	}
	return int(n), nil
}

// Wake moves the scheduled task id into its queue's stream now; false when
// it was not scheduled.
func Wake(ctx context.Context, rdb redis.Scripter, id string) (bool, error) {
	qn, key, err := keys.SplitTaskID(id)
	if err != nil {
		return false, err
	}
	q := keys.ForQueue(qn)
	n, err := script.Wake.Run(ctx, rdb, []string{q.Scheduled(), q.Stream(), q.Task(key), q.SchedHeld(), q.SchedRetrying()}, key).Int64()
	if err != nil {
		return false, fmt.Errorf("wake task %s: %w", id, err)
	}
	return n == 1, nil
}
