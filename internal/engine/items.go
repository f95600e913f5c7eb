package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Item is one task a pattern enqueues.
type Item struct {
	Args Args
	Opts *Opts // or nil

	Key   string // the task's key, derived by the pattern (then Opts.ID must be empty); "" takes Opts.ID, or none for SendMembers
	Group string // public id of the group the task is a member of, or ""
	Hold  bool   // create it waiting, outside the stream, until activated
	Prev  string // what it continues (a group id for a join), or ""
	Index int    // its position among the caller's specs, for errors

	// A rate limit the task carries (patterns.Throttle): its bucket and
	// RateN events per RatePer.
	RateKey string
	RateN   int
	RatePer time.Duration

	// ProcessAt delays the task (patterns.Spread's members; keyed only).
	ProcessAt time.Time
}

// Prepared is a list of tasks checked and encoded by PrepareItems, ready for
// Send or SendMembers.
type Prepared struct {
	ps []prepared

	// quiet: Send and SendMembers do not tell Config.Enqueued of the
	// tasks; the caller does, with Tell, once its call succeeded.
	quiet bool
}

// Quiet returns p, whose tasks Send and SendMembers add without telling
// Config.Enqueued: a pattern that adds them as one step of its call tells
// of them with Tell once the call succeeded (Group.ContinueWith's
// continuation is a task only once it is registered).
func (p Prepared) Quiet() Prepared {
	p.quiet = true
	return p
}

// Tell tells Config.Enqueued of p's tasks that refs places (as Send or
// SendMembers returned them), in order.
func (e *Engine) Tell(ctx context.Context, p Prepared, refs []Ref) { e.tell(ctx, p.ps, refs) }

// Len is the number of tasks in p.
func (p Prepared) Len() int { return len(p.ps) }

// EnqueueItems checks every item, then adds them all (pipelined); nothing is
// added when one is bad.
func (e *Engine) EnqueueItems(ctx context.Context, items []Item) ([]Ref, error) {
	p, err := e.PrepareItems(ctx, items)
	if err != nil {
		return nil, err
	}
	return e.Send(ctx, p)
}

// EnqueueItemsQuiet is EnqueueItems without telling Config.Enqueued; it
// returns the Prepared to Tell of later.
func (e *Engine) EnqueueItemsQuiet(ctx context.Context, items []Item) ([]Ref, Prepared, error) {
	p, err := e.PrepareItems(ctx, items)
	if err != nil {
		return nil, Prepared{}, err
	}
	p = p.Quiet()
	refs, err := e.Send(ctx, p)
	return refs, p, err
}

// Watch registers interest in messages equal to key on channel, once
// subscribed; the returned channel receives a value whenever one may have
// arrived (also after a reconnect). stop unregisters.
func (e *Engine) Watch(ctx context.Context, channel, key string) (<-chan struct{}, func(), error) {
	w, err := e.hub.watch(ctx, channel, key)
	if err != nil {
		return nil, nil, err
	}
	return w, func() { e.hub.unwatch(channel, key, w) }, nil
}

// PrepareItems checks and encodes items without sending anything: keys
// chosen by the caller, tasks that are group members or held waiting.
func (e *Engine) PrepareItems(ctx context.Context, items []Item) (Prepared, error) {
	ps := make([]prepared, len(items))
	for i, it := range items {
		var opts *Opts
		if o := it.Opts; o != nil {
			if o.ID != "" && it.Key != "" {
				return Prepared{}, fmt.Errorf("spec %d: EnqueueOpts.ID %q is set, but a group derives its members' ids from the group's id (set that to make the call idempotent)", it.Index, o.ID)
			}
			cp := *o
			opts = &cp
		}
		if opts == nil {
			opts = &Opts{}
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
			return Prepared{}, errors.New("engine: item without a key")
		}
		p, err := e.prepare(ctx, it.Args, opts, extra{prev: it.Prev, group: it.Group, spread: !it.ProcessAt.IsZero(), rateN: it.RateN, ratePerUs: it.RatePer.Microseconds()})
		if err != nil {
			return Prepared{}, fmt.Errorf("spec %d: %w", it.Index, err)
		}
		p.task.Group = it.Group
		p.task.Hold = it.Hold
		ps[i] = p
	}
	if err := e.findEarlier(ctx, ps); err != nil {
		return Prepared{}, err
	}
	for i := range ps {
		// The caller records where each item goes (Prepared.Queue: a
		// group's members, a join) before Send: an item must not move at
		// Send. Items have no partition key, and an id found in an
		// earlier layout is found there again (a duplicate).
		ps[i].task.IfThere, ps[i].task.IfThereFromMs, ps[i].target = false, 0, ""
	}
	return Prepared{ps: ps}, nil
}

// Send enqueues what PrepareItems made.
func (e *Engine) Send(ctx context.Context, p Prepared) ([]Ref, error) {
	ps := p.ps
	if len(ps) == 0 {
		return nil, nil
	}
	hs, err := e.send(ctx, ps)
	if !p.quiet {
		e.tell(ctx, ps, hs) // those added, even when some calls failed
	}
	if err != nil {
		return nil, err
	}
	if len(ps) > 0 && ps[0].parent != "" {
		if err := e.addKids(ctx, ps, hs); err != nil {
			return nil, err
		}
	}
	return hs, nil
}

// SendMembers enqueues members of group into the group's home queue, each
// added to the group in the same script (groupenq.lua); indices are their
// submission indices. Chunks are numbered in order, so a second call with
// the same members (completing one that failed) skips those done.
func (e *Engine) SendMembers(ctx context.Context, p Prepared, group string, indices []int) ([]Ref, error) {
	ps := p.ps
	if len(ps) == 0 {
		return nil, nil
	}
	ref, err := store.ParseGroupRef(group)
	if err != nil {
		return nil, err
	}
	q := ref.Home
	if err := e.ensureGroup(ctx, q); err != nil {
		return nil, err
	}
	var calls []*batchCall
	for start, n := 0, 0; start < len(ps); start, n = start+chunk, n+1 {
		end := min(start+chunk, len(ps))
		envs := make([][]byte, 0, end-start)
		idx := make([]int, 0, end-start)
		for i := start; i < end; i++ {
			envs = append(envs, ps[i].task.Envelope)
			idx = append(idx, i)
		}
		calls = append(calls, &batchCall{q: q, idx: idx, n: n, call: store.MembersCall(ref, n, indices[start:end], envs)})
	}
	runErr := e.runCalls(ctx, calls)
	out := make([]Ref, len(ps))
	err = func() error {
		if runErr != nil {
			// The calls that succeeded added their members: fill their
			// Refs so that they are told of.
			for _, bc := range calls {
				if bc.call.Err() != nil {
					continue
				}
				if ids, ended, err := bc.call.Members(); err == nil && ended == "" && len(ids) == len(bc.idx) {
					for j, i := range bc.idx {
						out[i] = Ref{Queue: q.Name, Key: ids[j]}
					}
				}
			}
			return runErr
		}
		for _, bc := range calls {
			ids, ended, err := bc.call.Members()
			if err != nil {
				return fmt.Errorf("enqueue members of %s: %w", group, err)
			}
			if ended != "" {
				return fmt.Errorf("enqueue members of %s: it ended %s: %w", group, ended, ErrGroupEnded)
			}
			if len(ids) == 0 {
				// Enqueued by an earlier call: its record says where.
				rec, err := store.ChunkRecord(ctx, e.rdb, ref, bc.n)
				if err != nil {
					return fmt.Errorf("enqueue members of %s: read chunk record: %w", group, err)
				}
				names := make([]string, indices[bc.idx[len(bc.idx)-1]]+1)
				if err := store.ParseChunk(rec, q.Name, names); err != nil {
					return err
				}
				for _, i := range bc.idx {
					_, key, _ := keys.SplitTaskID(names[indices[i]])
					out[i] = Ref{Queue: q.Name, Key: key, Dup: true}
				}
				continue
			}
			for j, i := range bc.idx {
				out[i] = Ref{Queue: q.Name, Key: ids[j]}
			}
		}
		return nil
	}()
	if !p.quiet {
		e.tell(ctx, ps, out)
	}
	if err != nil {
		return nil, err
	}
	if ps[0].parent != "" {
		if err := e.addKids(ctx, ps, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Template checks and encodes a task that a script enqueues later
// (patterns.Repeat's slots, patterns.Batch's items and batches): its
// envelope with key (Repeat: "", each copy gets its own), and its queue. It
// is detached from any handler whose ctx made it (the tasks are nobody's
// children and inherit no deadline, metadata or trace). ID, Deadline,
// ProcessAt, Delay and PartitionKey are refused.
func (e *Engine) Template(ctx context.Context, args Args, opts *Opts, key string) (string, []byte, error) {
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
		cp := Opts{}
		if opts != nil {
			cp = *opts
		}
		cp.ID = key
		opts = &cp
	}
	p, err := e.prepare(detached{ctx}, args, opts, extra{template: true})
	if err != nil {
		return "", nil, err
	}
	return p.queue, p.task.Envelope, nil
}

// detached is a ctx without values: a task prepared with it is nobody's
// child.
type detached struct{ context.Context }

func (detached) Value(any) any { return nil }

// Listening reports whether Config.Enqueued is set: a pattern that adds
// tasks through its own scripts (patterns.Batch's items) builds what it
// tells of only then.
func (e *Engine) Listening() bool { return e.cfg.Enqueued != nil }

// TellTask tells Config.Enqueued of t, a task a pattern added through its
// own script; t.Opts gets its defaults (queue, attempts, retention). It is
// for a caller that checked Listening.
func (e *Engine) TellTask(ctx context.Context, t EnqueuedTask) {
	if e.cfg.Enqueued == nil {
		return
	}
	var o Opts
	if t.Opts != nil {
		o = *t.Opts
		o.Meta = maps.Clone(o.Meta)
	}
	if o.Queue == "" {
		o.Queue = e.cfg.DefaultQueue
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = e.cfg.DefaultMaxAttempts
	}
	if o.Retention == 0 {
		o.Retention = e.cfg.Retention
	}
	t.Opts = &o
	e.cfg.Enqueued(ctx, t)
}
