package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/bridge"
)

func init() {
	bridge.Enqueue = func(ctx context.Context, c any, items []bridge.Item) ([]bridge.Placed, error) {
		ps, err := c.(*Client).prepareItems(ctx, items)
		if err != nil {
			return nil, err
		}
		return c.(*Client).sendItems(ctx, ps)
	}
	bridge.Prepare = func(ctx context.Context, c any, items []bridge.Item) (any, error) {
		return c.(*Client).prepareItems(ctx, items)
	}
	bridge.Send = func(ctx context.Context, c any, ps any) ([]bridge.Placed, error) {
		return c.(*Client).sendItems(ctx, ps.([]prepared))
	}
	bridge.Watch = func(ctx context.Context, c any, channel, key string) (<-chan struct{}, func(), error) {
		h := c.(*Client).hub
		w, err := h.watch(ctx, channel, key)
		if err != nil {
			return nil, nil, err
		}
		return w, func() { h.unwatch(channel, key, w) }, nil
	}
	bridge.Handle = func(c any, queue, key string, dup bool) any {
		return &Handle{c: c.(*Client), queue: queue, key: key, dup: dup}
	}
	bridge.Retention = func(c any) time.Duration { return c.(*Client).cfg.Retention }
	bridge.QueueOf = func(c any, opts any) string {
		if o, _ := opts.(*EnqueueOpts); o != nil && o.Queue != "" {
			return o.Queue
		}
		return c.(*Client).cfg.DefaultQueue
	}
}

// prepareItems checks and encodes tasks for the patterns: keys chosen by the
// caller, tasks that are group members or held waiting.
func (c *Client) prepareItems(ctx context.Context, items []bridge.Item) ([]prepared, error) {
	ps := make([]prepared, len(items))
	for i, it := range items {
		args, _ := it.Args.(Args)
		if it.Args != nil && args == nil {
			return nil, fmt.Errorf("spec %d: %T does not implement client.Args", i, it.Args)
		}
		var opts *EnqueueOpts
		if it.Opts != nil {
			o, ok := it.Opts.(*EnqueueOpts)
			if !ok {
				return nil, fmt.Errorf("spec %d: options of type %T", i, it.Opts)
			}
			if o != nil && o.ID != "" && it.Key != "" {
				return nil, fmt.Errorf("spec %d: EnqueueOpts.ID %q is set, but a group derives its members' ids from the group's id (set that to make the call idempotent)", i, o.ID)
			}
			if o != nil {
				cp := *o
				opts = &cp
			}
		}
		if opts == nil {
			opts = &EnqueueOpts{}
		}
		if it.Key != "" {
			opts.ID = it.Key
		}
		if opts.ID == "" {
			return nil, errors.New("bridge: item without a key")
		}
		p, err := c.prepare(ctx, args, opts, it.Prev)
		if err != nil {
			return nil, fmt.Errorf("spec %d: %w", i, err)
		}
		p.task.Group = it.Group
		p.task.Hold = it.Hold
		ps[i] = p
	}
	return ps, nil
}

// sendItems enqueues what prepareItems made.
func (c *Client) sendItems(ctx context.Context, ps []prepared) ([]bridge.Placed, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	hs, err := c.send(ctx, ps)
	if err != nil {
		return nil, err
	}
	if len(ps) > 0 && ps[0].parent != "" {
		if err := c.addKids(ctx, ps, hs); err != nil {
			return nil, err
		}
	}
	out := make([]bridge.Placed, len(hs))
	for i, h := range hs {
		out[i] = bridge.Placed{Queue: h.queue, Key: h.key, Existed: h.dup}
	}
	return out, nil
}
