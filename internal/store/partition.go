package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// AppendPartitioner appends items (msgpack each, in order) to partitioner
// name of q, in one round trip that is safe to resend (partappend.lua: a
// resend of a call whose reply was lost appends nothing again).
func AppendPartitioner(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, name string, items [][]byte) error {
	op := q.Op("pa." + name + "." + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36))
	args := make([]any, 0, 1+len(items))
	args = append(args, MarkerTTL(rdb).Milliseconds())
	for _, it := range items {
		args = append(args, it)
	}
	if err := script.PartAppend.Run(ctx, rdb, []string{q.Partitioner(name), op}, args...).Err(); err != nil {
		return fmt.Errorf("append to partitioner %s of queue %q: %w", name, q.Name, err)
	}
	return nil
}

// PartitionerLen is how many items partitioner name of q holds for the
// next take.
func PartitionerLen(ctx context.Context, rdb redis.Cmdable, q keys.Queue, name string) (int64, error) {
	return rdb.LLen(ctx, q.Partitioner(name)).Result()
}

// TakePartitioner moves everything appended to partitioner name of q into
// snapshot snap, listed as pending at nowMs (parttake.lua; safe to resend).
// It reports false when nothing was appended.
func TakePartitioner(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, name, snap string, nowMs int64) (bool, error) {
	took, err := script.PartTake.Run(ctx, rdb,
		[]string{q.Partitioner(name), q.PartitionerSnap(name, snap), q.PartitionerSnaps(name), q.Op("pt." + name + "." + snap)},
		snap, nowMs, MarkerTTL(rdb).Milliseconds()).Int()
	return took == 1, err
}

// PendingSnapshots lists the snapshots of partitioner name of q taken at or
// before beforeMs and not yet done.
func PendingSnapshots(ctx context.Context, rdb redis.Cmdable, q keys.Queue, name string, beforeMs int64) ([]string, error) {
	return rdb.ZRangeByScore(ctx, q.PartitionerSnaps(name), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(beforeMs, 10)}).Result()
}

// SnapshotItems reads the items of snapshot snap of partitioner name of q
// (msgpack each, in append order).
func SnapshotItems(ctx context.Context, rdb redis.Cmdable, q keys.Queue, name, snap string) ([]string, error) {
	return rdb.LRange(ctx, q.PartitionerSnap(name, snap), 0, -1).Result()
}

// SnapshotDone drops snapshot snap of partitioner name of q, whose groups
// have started: unlisted and its items deleted, in one script (partdone.lua),
// which a resend runs again to the same end.
func SnapshotDone(ctx context.Context, rdb redis.Scripter, q keys.Queue, name, snap string) error {
	return script.PartDone.Run(ctx, rdb, []string{q.PartitionerSnaps(name), q.PartitionerSnap(name, snap)}, snap).Err()
}
