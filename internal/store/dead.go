package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// DeadEntry is one entry of a queue's dead-letter store, as Redis keeps it.
type DeadEntry struct {
	Key      string
	DiedMs   int64
	Envelope []byte // the task's envelope (raw: it may not decode)
	Error    string
	Attempt  int
}

// DeadEntries lists up to limit entries of q's dead-letter store, newest
// first, skipping the first offset.
func DeadEntries(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, offset, limit int) ([]DeadEntry, error) {
	zs, err := rdb.ZRevRangeWithScores(ctx, q.Dead(), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, len(zs))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HMGet(ctx, q.Task(fmt.Sprint(z.Member)), "m", "err", "a")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]DeadEntry, 0, len(zs))
	for i, z := range zs {
		v := cmds[i].Val()
		d := DeadEntry{Key: fmt.Sprint(z.Member), DiedMs: int64(z.Score)}
		raw, _ := v[0].(string)
		d.Envelope = []byte(raw)
		d.Error, _ = v[1].(string)
		if a, ok := v[2].(string); ok {
			d.Attempt, _ = strconv.Atoi(a)
		}
		out = append(out, d)
	}
	return out, nil
}

// TaskEnvelope reads the envelope kept in the record of q's task key; found
// is false when the record has none.
func TaskEnvelope(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) (env []byte, found bool, err error) {
	raw, err := rdb.HGet(ctx, q.Task(key), "m").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return raw, true, nil
}
