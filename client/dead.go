package client

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// DeadTask is an entry of a queue's dead-letter store.
type DeadTask struct {
	ID      string
	Kind    string // empty when the entry could not be decoded
	Error   string // why it died: the last attempt's error, or the reason it could not run
	Attempt int
	DiedAt  time.Time
	Payload []byte // msgpack of the args (the raw entry when it could not be decoded)
}

// DeadTasks lists up to limit dead tasks of queue, newest first, skipping the
// first offset.
func (c *Client) DeadTasks(ctx context.Context, queue string, offset, limit int) ([]DeadTask, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return nil, err
	}
	if offset < 0 || limit < 1 {
		return nil, fmt.Errorf("dead tasks: offset %d must be ≥ 0 and limit %d ≥ 1", offset, limit)
	}
	q := keys.ForQueue(queue)
	zs, err := c.rdb.ZRevRangeWithScores(ctx, q.Dead(), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("dead tasks of queue %q: %w", queue, err)
	}
	cmds := make([]*redis.SliceCmd, len(zs))
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HMGet(ctx, q.Task(z.Member.(string)), "m", "err", "a")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dead tasks of queue %q: %w", queue, err)
	}
	out := make([]DeadTask, 0, len(zs))
	for i, z := range zs {
		v := cmds[i].Val()
		d := DeadTask{ID: keys.TaskID(queue, z.Member.(string)), DiedAt: time.UnixMilli(int64(z.Score))}
		raw, _ := v[0].(string)
		d.Error, _ = v[1].(string)
		if a, ok := v[2].(string); ok {
			d.Attempt, _ = strconv.Atoi(a)
		}
		if env, err := codec.DecodeEnvelope([]byte(raw)); err == nil {
			d.Kind, d.Payload = env.Kind, env.Payload
		} else {
			d.Payload = []byte(raw)
		}
		out = append(out, d)
	}
	return out, nil
}

// RetryDead puts a dead task back into its queue with a fresh count of
// attempts, under the same id. It fails with ErrNotFound when no dead task has
// that id, and refuses an entry that could not be decoded (purge it instead).
func (c *Client) RetryDead(ctx context.Context, id string) (*Handle, error) {
	h, err := c.Task(id)
	if err != nil {
		return nil, err
	}
	q := keys.ForQueue(h.queue)
	raw, err := c.rdb.HGet(ctx, q.Task(h.key), "m").Bytes()
	if err == redis.Nil {
		return nil, fmt.Errorf("retry dead task %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("retry dead task %s: %w", id, err)
	}
	env, err := codec.DecodeEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("retry dead task %s: its entry cannot be decoded, purge it instead: %w", id, err)
	}
	if env.Group != "" {
		// A member of an InvokeAll group gave its slot back when it died;
		// run again while the group runs, it would exceed the limit.
		if g, err := store.ParseGroupRef(env.Group); err == nil {
			gs, err := store.ReadGroup(ctx, c.rdb, g)
			if err != nil {
				return nil, fmt.Errorf("retry dead task %s: %w", id, err)
			}
			if gs.State == "running" && gs.Limit > 0 {
				return nil, fmt.Errorf("retry dead task %s: it is a member of group %s, which still runs at most %d members at once; retrying it now would exceed that (retry it once the group ended)", id, env.Group, gs.Limit)
			}
		}
	}
	env.Key, env.Attempt, env.Parked, env.Lost = h.key, 1, 0, 0
	ok, err := store.RetryDead(ctx, c.rdb, q, h.key, codec.AppendEnvelope(nil, env), newOpID(), env.Partition)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("retry dead task %s: it is not dead: %w", id, ErrNotFound)
	}
	return h, nil
}

// PurgeDead deletes a dead task for good. It fails with ErrNotFound when no
// dead task has that id.
func (c *Client) PurgeDead(ctx context.Context, id string) error {
	h, err := c.Task(id)
	if err != nil {
		return err
	}
	n, err := store.PurgeDead(ctx, c.rdb, keys.ForQueue(h.queue), []string{h.key})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("purge dead task %s: %w", id, ErrNotFound)
	}
	return nil
}
