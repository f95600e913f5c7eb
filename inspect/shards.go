package inspect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Issue 21: a sharded queue (client.Client.DeclareShards) as the inspector
// shows it. Its physical queues are the plain queue (which producers that
// have not read the declaration yet write to, and which its workers serve
// too) and its shards, "<queue>~<i>.<salt>". Queues lists it once, under
// its name, with the sums of its physical queues and one ShardInfo each;
// no shard is listed as a queue of its own. Queue, History, Tasks,
// Running, RetryDead, PurgeDead, CancelAll and DeleteQueue given the
// sharded queue's name cover all its physical queues; given a shard's
// name, that shard alone.

// ShardInfo is one physical queue of a sharded queue: its own counts
// (QueueInfo.Queue is its physical name; Shards is empty), which shard it
// is, and where it lives.
type ShardInfo struct {
	QueueInfo
	// Index is the shard's index, 0 to N-1; -1 for the plain queue.
	Index int `json:"index"`
	// Slot is the Redis Cluster hash slot of the physical queue's keys.
	Slot int `json:"slot"`
	// Master is, on a Redis Cluster, the address of the master that
	// serves Slot (as CLUSTER SLOTS gave it when the counts were read);
	// empty on one Redis.
	Master string `json:"master,omitempty"`
}

// part is one physical queue of a queue as the inspector groups them.
type part struct {
	name  string
	index int // -1: the plain queue
}

// logical is one queue as Queues lists it: a plain queue alone, or a
// sharded queue's plain queue and shards.
type logical struct {
	name    string
	sharded bool
	parts   []part // the plain queue first, then the shards by index
	bad     error  // the queue's registry entry does not decode
}

// group sorts the physical queue names into logical queues, sorted by
// name: a shard's name (keys.ParseShard) goes under its queue, and every
// shard the registry holds for a queue is listed even when no process has
// used it yet (it counts zeros).
func group(names []string, sets map[string]store.ShardSet, bad map[string]error) []*logical {
	by := map[string]*logical{}
	get := func(q string) *logical {
		l := by[q]
		if l == nil {
			l = &logical{name: q}
			by[q] = l
		}
		return l
	}
	seen := map[string]bool{}
	add := func(q string, p part) {
		if seen[p.name] {
			return
		}
		seen[p.name] = true
		l := get(q)
		l.parts = append(l.parts, p)
		if p.index >= 0 {
			l.sharded = true
		}
	}
	for _, n := range names {
		if q, idx, ok := keys.ParseShard(n); ok {
			add(q, part{name: n, index: idx})
		} else {
			add(n, part{name: n, index: -1})
		}
	}
	for q, s := range sets {
		for idx, n := range s.Names {
			add(q, part{name: n, index: idx})
		}
	}
	for q, err := range bad {
		get(q).bad = err
	}
	out := make([]*logical, 0, len(by))
	for _, l := range by {
		if l.sharded || l.bad != nil {
			l.sharded = true
			if !seen[l.name] {
				l.parts = append(l.parts, part{name: l.name, index: -1})
				seen[l.name] = true
			}
		}
		slices.SortFunc(l.parts, func(a, b part) int {
			if c := cmp.Compare(a.index, b.index); c != 0 {
				return c
			}
			return cmp.Compare(a.name, b.name)
		})
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *logical) int { return cmp.Compare(a.name, b.name) })
	return out
}

// logicalOf returns the logical queue name (a valid queue name) stands
// for: the plain queue alone when the registry does not hold it, else its
// physical queues, those the queue index lists (keys.Queues) and those
// its registry entry holds.
func (i *Inspector) logicalOf(ctx context.Context, name string) (*logical, error) {
	s, ok, err := store.Shards(ctx, i.rdb, name)
	var bad map[string]error
	switch {
	case errors.Is(err, store.ErrBadShardSet):
		bad = map[string]error{name: err}
	case err != nil:
		return nil, err
	case !ok:
		return &logical{name: name, parts: []part{{name: name, index: -1}}}, nil
	}
	all, err := store.QueueNames(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	names := []string{name}
	for _, n := range all {
		if q, _, ok := keys.ParseShard(n); ok && q == name {
			names = append(names, n)
		}
	}
	sets := map[string]store.ShardSet{}
	if ok {
		sets[name] = s
	}
	return group(names, sets, bad)[0], nil
}

// physical returns the physical queues that queue (a public name or a
// shard's) stands for: a shard's name itself, else logicalOf's parts.
func (i *Inspector) physical(ctx context.Context, queue string) ([]string, error) {
	if err := keys.ValidatePhysicalQueue(queue); err != nil {
		return nil, err
	}
	if keys.IsShard(queue) {
		return []string{queue}, nil
	}
	l, err := i.logicalOf(ctx, queue)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(l.parts))
	for j, p := range l.parts {
		out[j] = p.name
	}
	return out, nil
}

// logicalStats reads the counts of the logical queues ls: one pipeline of
// qstats.lua over all their physical queues, and for sharded ones on a
// cluster one CLUSTER SLOTS for their masters.
func (i *Inspector) logicalStats(ctx context.Context, ls []*logical) ([]QueueInfo, error) {
	var names []string
	anySharded := false
	for _, l := range ls {
		for _, p := range l.parts {
			names = append(names, p.name)
		}
		anySharded = anySharded || l.sharded
	}
	cs, err := i.stats(ctx, names)
	if err != nil {
		return nil, err
	}
	var masters []string
	if anySharded {
		if masters, err = store.QueueMasters(ctx, i.rdb, names); err != nil {
			return nil, err
		}
	}
	out := make([]QueueInfo, len(ls))
	at := 0
	for j, l := range ls {
		if !l.sharded {
			out[j] = cs[at]
			at++
			continue
		}
		q := QueueInfo{Queue: l.name, Shards: make([]ShardInfo, len(l.parts))}
		if l.bad != nil {
			q.ShardError = l.bad.Error()
		}
		var plainPaused bool
		var errs []string
		for k, p := range l.parts {
			c := cs[at+k]
			if p.index < 0 {
				plainPaused = c.Paused
			}
			if c.Error != "" {
				errs = append(errs, c.Error)
			}
			sum(&q, c, k == 0)
			si := ShardInfo{QueueInfo: c, Index: p.index, Slot: keys.QueueSlot(p.name)}
			if masters != nil {
				si.Master = masters[at+k]
			}
			q.Shards[k] = si
		}
		// Pausing the sharded queue's name pauses every shard in the
		// workers; a shard can also be paused on its own.
		q.Paused = plainPaused
		for k := range q.Shards {
			q.Shards[k].Paused = q.Shards[k].Paused || plainPaused
		}
		if len(errs) > 0 {
			q.Error = strings.Join(errs, "; ")
		}
		at += len(l.parts)
		out[j] = q
	}
	return out, nil
}

// sum adds the counts of c, one physical queue, to q's.
func sum(q *QueueInfo, c QueueInfo, first bool) {
	q.Waiting += c.Waiting
	q.WaitingFallback = q.WaitingFallback || c.WaitingFallback
	q.Running += c.Running
	q.Scheduled += c.Scheduled
	q.Dead += c.Dead
	q.Retrying += c.Retrying
	q.Held += c.Held
	q.Processed += c.Processed
	q.Succeeded += c.Succeeded
	q.Failed += c.Failed
	q.ProcessedLastMinute += c.ProcessedLastMinute
	q.FailedLastMinute += c.FailedLastMinute
	q.StreamLength += c.StreamLength
	switch {
	case first:
		q.Read = c.Read
	case q.Read < 0 || c.Read < 0:
		q.Read = -1
	default:
		q.Read += c.Read
	}
}

// shardCursor is a cursor of Tasks over a sharded queue: the index of the
// physical queue (in logicalOf's order) and that queue's own cursor.
func shardCursor(cursor string) (int, string, error) {
	if cursor == "" {
		return 0, "", nil
	}
	k, inner, ok := strings.Cut(cursor, ":")
	n, err := strconv.Atoi(k)
	if !ok || err != nil || n < 0 || strconv.Itoa(n) != k {
		return 0, "", fmt.Errorf("%w: %q (a cursor of a sharded queue is <part>:<cursor>)", ErrBadCursor, cursor)
	}
	return n, inner, nil
}

// shardedTasks lists a page of the tasks of the physical queues parts in
// opts.State, one after the other: the plain queue's, then shard 0's, and
// so on, each in its own order. The page is filled from the next queue
// when one runs out; its Next is "<part>:<that part's cursor>".
func (i *Inspector) shardedTasks(ctx context.Context, parts []string, opts ListOpts) (TaskPage, error) {
	limit := opts.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	k, inner, err := shardCursor(opts.Cursor)
	if err != nil {
		return TaskPage{}, err
	}
	if k >= len(parts) {
		return TaskPage{}, fmt.Errorf("%w: %q (the queue has %d physical queues)", ErrBadCursor, opts.Cursor, len(parts))
	}
	page := TaskPage{Tasks: []TaskInfo{}}
	for k < len(parts) {
		o := opts
		o.Cursor, o.Limit = inner, limit-len(page.Tasks)
		p, err := i.physicalTasks(ctx, parts[k], o, o.Limit)
		if err != nil {
			return TaskPage{}, err
		}
		page.Tasks = append(page.Tasks, p.Tasks...)
		if p.Next != "" {
			inner = p.Next
		} else {
			k, inner = k+1, ""
		}
		if len(page.Tasks) >= limit {
			break
		}
	}
	if k < len(parts) {
		page.Next = strconv.Itoa(k) + ":" + inner
	}
	return page, nil
}

// notSetUp reports whether err is Redis refusing to read a queue's
// pending entries because nothing set the queue up yet (no stream or no
// consumer group).
func notSetUp(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "NOGROUP") || strings.Contains(msg, "no such key")
}

// logicalName is the queue a physical queue serves: a shard's sharded
// queue, else the name itself.
func logicalName(name string) string {
	if q, _, ok := keys.ParseShard(name); ok {
		return q
	}
	return name
}
