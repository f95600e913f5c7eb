package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/taskfleet/async/internal/bridge"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
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
	bridge.SendMembers = func(ctx context.Context, c any, ps any, group string, indices []int) ([]bridge.Placed, error) {
		return c.(*Client).sendMembers(ctx, ps.([]prepared), group, indices)
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
	bridge.Template = func(ctx context.Context, c any, a, o any, key string) (string, []byte, error) {
		return c.(*Client).template(ctx, a, o, key)
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
			return nil, fmt.Errorf("spec %d: %T does not implement client.Args", it.Index, it.Args)
		}
		var opts *EnqueueOpts
		if it.Opts != nil {
			o, ok := it.Opts.(*EnqueueOpts)
			if !ok {
				return nil, fmt.Errorf("spec %d: options of type %T", it.Index, it.Opts)
			}
			if o != nil && o.ID != "" && it.Key != "" {
				return nil, fmt.Errorf("spec %d: EnqueueOpts.ID %q is set, but a group derives its members' ids from the group's id (set that to make the call idempotent)", it.Index, o.ID)
			}
			if o != nil {
				cp := *o
				opts = &cp
			}
		}
		if opts == nil {
			opts = &EnqueueOpts{}
		}
		if it.RateKey != "" {
			opts.RateKey = it.RateKey
		}
		if !it.ProcessAt.IsZero() {
			opts.ProcessAt, opts.Delay = it.ProcessAt, 0
		}
		if it.Key != "" {
			opts.ID = it.Key
		}
		if opts.ID == "" && (it.Group == "" || it.Hold) {
			return nil, errors.New("bridge: item without a key")
		}
		p, err := c.prepare(ctx, args, opts, extra{prev: it.Prev, group: it.Group, spread: !it.ProcessAt.IsZero(), rateN: it.RateN, ratePerUs: it.RatePer.Microseconds()})
		if err != nil {
			return nil, fmt.Errorf("spec %d: %w", it.Index, err)
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

// sendMembers enqueues members of group into the group's home queue, each
// added to the group in the same script (groupenq.lua); indices are their
// submission indices. Chunks are numbered in order, so a second call with
// the same members (completing one that failed) skips those done.
func (c *Client) sendMembers(ctx context.Context, ps []prepared, group string, indices []int) ([]bridge.Placed, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	ref, err := store.ParseGroupRef(group)
	if err != nil {
		return nil, err
	}
	q := ref.Home
	if err := c.ensureGroup(ctx, q); err != nil {
		return nil, err
	}
	ks := []string{q.Stream(), q.Group(ref.ID), q.GroupOpen(ref.ID)}
	var calls []*batchCall
	for start, n := 0, 0; start < len(ps); start, n = start+chunk, n+1 {
		end := min(start+chunk, len(ps))
		args := make([]any, 0, 3+2*(end-start))
		args = append(args, n, group, q.Name)
		idx := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			args = append(args, indices[i], ps[i].task.Envelope)
			idx = append(idx, i)
		}
		calls = append(calls, &batchCall{q: q, idx: idx, ks: ks, args: args, s: script.GroupEnq})
	}
	if err := c.runCalls(ctx, calls); err != nil {
		return nil, err
	}
	out := make([]bridge.Placed, len(ps))
	for _, bc := range calls {
		ids, err := bc.res.StringSlice()
		if err != nil {
			return nil, fmt.Errorf("enqueue members of %s: %w", group, err)
		}
		if len(ids) == 1 && strings.HasPrefix(ids[0], "!") {
			return nil, fmt.Errorf("enqueue members of %s: it ended %s: %w", group, ids[0][1:], bridge.ErrGroupEnded)
		}
		if len(ids) == 0 {
			// Enqueued by an earlier call: its record says where.
			rec, err := c.rdb.HGet(ctx, q.Group(ref.ID), "e:"+fmt.Sprint(bc.args[0])).Result()
			if err != nil {
				return nil, fmt.Errorf("enqueue members of %s: read chunk record: %w", group, err)
			}
			names := make([]string, indices[bc.idx[len(bc.idx)-1]]+1)
			if err := store.ParseChunk(rec, q.Name, names); err != nil {
				return nil, err
			}
			for _, i := range bc.idx {
				_, key, _ := keys.SplitTaskID(names[indices[i]])
				out[i] = bridge.Placed{Queue: q.Name, Key: key, Existed: true}
			}
			continue
		}
		for j, i := range bc.idx {
			out[i] = bridge.Placed{Queue: q.Name, Key: ids[j]}
		}
	}
	if ps[0].parent != "" {
		hs := make([]*Handle, len(out))
		for i, p := range out {
			hs[i] = &Handle{c: c, queue: p.Queue, key: p.Key, dup: p.Existed}
		}
		if err := c.addKids(ctx, ps, hs); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// template encodes a task for patterns.Repeat and Batch, detached from any
// handler whose ctx made it (the tasks are nobody's children and inherit no
// deadline, metadata or trace).
func (c *Client) template(ctx context.Context, a, o any, key string) (string, []byte, error) {
	args, _ := a.(Args)
	if a != nil && args == nil {
		return "", nil, fmt.Errorf("%T does not implement client.Args", a)
	}
	opts, ok := o.(*EnqueueOpts)
	if o != nil && !ok {
		return "", nil, fmt.Errorf("options of type %T", o)
	}
	if opts != nil {
		switch {
		case opts.ID != "":
			return "", nil, fmt.Errorf("EnqueueOpts.ID %q is set; each repeated task gets its own id from the schedule's name and slot", opts.ID)
		case !opts.Deadline.IsZero():
			return "", nil, errors.New("EnqueueOpts.Deadline is set; a repeated task's deadline would be the same for every slot (use Timeout)")
		case !opts.ProcessAt.IsZero() || opts.Delay != 0:
			return "", nil, errors.New("EnqueueOpts.ProcessAt or Delay is set; the schedule decides when its tasks run")
		case opts.PartitionKey != "":
			return "", nil, errors.New("EnqueueOpts.PartitionKey is set; repeated tasks are not partitioned")
		}
	}
	if key != "" {
		cp := EnqueueOpts{}
		if opts != nil {
			cp = *opts
		}
		cp.ID = key
		opts = &cp
	}
	p, err := c.prepare(detached{ctx}, args, opts, extra{})
	if err != nil {
		return "", nil, err
	}
	return p.queue, p.task.Envelope, nil
}

// detached is a ctx without values: a task prepared with it is nobody's
// child.
type detached struct{ context.Context }

func (detached) Value(any) any { return nil }
