package store

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// SetPaused sets (paused) or deletes q's pause flag, then publishes
// keys.PauseNotice on q's control channel so that its workers read the flag
// at once. Both writes give the same state however often they run.
func SetPaused(ctx context.Context, rdb redis.Cmdable, q keys.Queue, paused bool) error {
	var err error
	if paused {
		err = rdb.Set(ctx, q.Paused(), "1", 0).Err()
	} else {
		err = rdb.Del(ctx, q.Paused()).Err()
	}
	if err == nil {
		err = rdb.Publish(ctx, q.Ctl(), keys.PauseNotice).Err()
	}
	if err != nil {
		what := "resume"
		if paused {
			what = "pause"
		}
		return fmt.Errorf("%s queue %q: %w", what, q.Name, err)
	}
	return nil
}

// PausedFlags reads the pause flags of qs in one pipelined round of EXISTS
// (one per queue: on a cluster they may live in different slots).
func PausedFlags(ctx context.Context, rdb redis.Cmdable, qs []keys.Queue) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(qs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range qs {
			cmds[i] = p.Exists(ctx, q.Paused())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pause flags: %w", err)
	}
	out := make([]bool, len(qs))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}
