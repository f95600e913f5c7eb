package client

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
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
	ds, err := c.eng.DeadEntries(ctx, queue, offset, limit)
	if err != nil {
		return nil, err
	}
	out := make([]DeadTask, 0, len(ds))
	for _, de := range ds {
		d := DeadTask{ID: keys.TaskID(queue, de.Key), DiedAt: time.UnixMilli(de.DiedMs), Error: de.Error, Attempt: de.Attempt}
		if env, err := codec.DecodeEnvelope(de.Envelope); err == nil {
			d.Kind, d.Payload = env.Kind, env.Payload
		} else {
			d.Payload = de.Envelope
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
