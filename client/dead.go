package client

import (
	"context"
	"fmt"
	"time"

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
//
// For a sharded queue (DeclareShards) it lists the dead tasks of the plain
// queue and of every shard together, newest first, each with the id that
// names its shard (RetryDead and PurgeDead take it); it reads the newest
// offset+limit of each, so keep offset small. A shard's physical name
// ("<queue>~<i>.<salt>", Handle.Queue) lists that shard's alone.
func (c *Client) DeadTasks(ctx context.Context, queue string, offset, limit int) ([]DeadTask, error) {
	var parts []keys.Queue
	if keys.IsShard(queue) {
		parts = []keys.Queue{keys.ForQueue(queue)}
	} else if keys.ValidateName("queue", queue) == nil {
		s, ok, err := store.Shards(ctx, c.eng.Redis(), queue)
		if err != nil {
			return nil, fmt.Errorf("dead tasks of queue %q: %w", queue, err)
		}
		if ok {
			parts = append(parts, keys.ForQueue(queue))
			for _, n := range s.Names {
				parts = append(parts, keys.ForQueue(n))
			}
		}
	}
	if parts == nil {
		// A queue that is not sharded (or a bad name, which the engine
		// reports).
		ds, err := c.eng.DeadEntries(ctx, queue, offset, limit)
		if err != nil {
			return nil, err
		}
		out := make([]DeadTask, 0, len(ds))
		for _, de := range ds {
			out = append(out, deadTask(queue, de))
		}
		return out, nil
	}
	ds, err := store.DeadMerged(ctx, c.eng.Redis(), parts, offset, limit)
	if err != nil {
		return nil, fmt.Errorf("dead tasks of queue %q: %w", queue, err)
	}
	out := make([]DeadTask, 0, len(ds))
	for _, de := range ds {
		out = append(out, deadTask(de.Queue, de.DeadEntry))
	}
	return out, nil
}

// deadTask is the DeadTask of de, an entry of queue's dead-letter store.
func deadTask(queue string, de store.DeadEntry) DeadTask {
	d := DeadTask{ID: keys.TaskID(queue, de.Key), DiedAt: time.UnixMilli(de.DiedMs), Error: de.Error, Attempt: de.Attempt}
	if env, err := codec.DecodeEnvelope(de.Envelope); err == nil {
		d.Kind, d.Payload = env.Kind, env.Payload
	} else {
		d.Payload = de.Envelope
	}
	return d
}

// RetryDead puts a dead task back into its queue with a fresh count of
// attempts, under the same id (of a sharded queue's task, the id DeadTasks
// gives, which names its shard). It fails with ErrNotFound when no dead task has
// that id, and refuses an entry that could not be decoded (purge it instead).
func (c *Client) RetryDead(ctx context.Context, id string) (*Handle, error) {
	h, err := c.Task(id)
	if err != nil {
		return nil, err
	}
	if err := c.eng.RetryDead(ctx, h.ref); err != nil {
		return nil, err
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
	return c.eng.PurgeDead(ctx, h.ref)
}
