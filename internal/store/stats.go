package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// QueueNames returns the names of the registered queues (keys.Queues),
// sorted; a member that is not a valid queue name is left out.
func QueueNames(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	names, err := rdb.SMembers(ctx, keys.Queues).Result()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return keys.ValidateName("queue", n) != nil })
	slices.Sort(names)
	return names, nil
}

// QueueCounts are the counts of one queue, read at one moment (one
// pipeline); none is negative.
type QueueCounts struct {
	Queue string
	// Waiting is the number of entries of the stream the workers' group
	// has not read yet.
	Waiting int64
	// Running is the number of entries read by a worker and not yet
	// acknowledged: tasks leased, whose attempt has no outcome yet.
	Running int64
	// Scheduled is the number of tasks waiting for a due time: delayed,
	// retrying after a backoff, parked by a limit.
	Scheduled int64
	// Dead is the number of dead tasks kept.
	Dead int64
	// Length is the number of entries in the stream: the waiting and
	// running ones, and those already ended that housekeeping has not
	// trimmed yet.
	Length int64
	// Read is the group's entries-read counter: the number of entries
	// added to the stream up to the last one the group read, deleted ones
	// included; -1 when Redis cannot tell (Redis 6.2, miniredis, a group not
	// read from yet, entries deleted ahead of the readers).
	Read int64
}

// QueueStats reads the counts of each queue of qs, in their order. Each
// queue costs XLEN, XINFO GROUPS and two ZCARDs, all O(1), sent in one
// pipeline.
//
// Waiting comes from the group's lag when Redis reports one it can vouch
// for. It cannot after an entry ahead of the readers was deleted (a task
// cancelled while it waited): XINFO GROUPS then answers no lag until the
// workers read past the deleted entry. Nor on Redis 6.2 (no lag at all) or
// miniredis (whose lag ignores reads). Then Waiting is counted by reading the
// ids after the group's last delivered one (XRANGE, 1000 a call): still
// exact, but O(waiting).
func QueueStats(ctx context.Context, rdb redis.UniversalClient, qs []keys.Queue) ([]QueueCounts, error) {
	type cmds struct {
		xlen, dead, sched *redis.IntCmd
		groups            *redis.Cmd
	}
	cs := make([]cmds, len(qs))
	// The pipeline's error is its first command's; each is checked below.
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range qs {
			cs[i].xlen = p.XLen(ctx, q.Stream())
			groups := redis.NewCmd(ctx, "xinfo", "groups", q.Stream())
			groups.SetFirstKeyPos(2)
			_ = p.Process(ctx, groups)
			cs[i].groups = groups
			cs[i].sched = p.ZCard(ctx, q.Scheduled())
			cs[i].dead = p.ZCard(ctx, q.Dead())
		}
		return nil
	})
	out := make([]QueueCounts, len(qs))
	for i, q := range qs {
		c := QueueCounts{Queue: q.Name, Read: -1}
		var err error
		if c.Length, err = cs[i].xlen.Result(); err != nil {
			return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
		}
		if c.Scheduled, err = cs[i].sched.Result(); err != nil {
			return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
		}
		if c.Dead, err = cs[i].dead.Result(); err != nil {
			return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
		}
		g, found, err := groupInfo(cs[i].groups)
		if err != nil {
			return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
		}
		switch {
		case !found:
			// No stream, or no group yet: nothing read, every entry waits.
			c.Waiting, c.Read = c.Length, 0
		default:
			c.Running, c.Read = g.pending, g.entriesRead
			if w, ok := g.waiting(); ok {
				c.Waiting = w
			} else if c.Waiting, err = countAfter(ctx, rdb, q.Stream(), g.lastID); err != nil {
				return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
			}
		}
		out[i] = c
	}
	return out, nil
}

// RunningCount returns the number of entries of q's stream that workers
// read and have not acknowledged yet, with one XPENDING (summary form,
// O(1)). It fails when the queue has no consumer group yet.
func RunningCount(ctx context.Context, rdb redis.Cmdable, q keys.Queue) (int64, error) {
	p, err := rdb.XPending(ctx, q.Stream(), keys.Group).Result()
	if err != nil {
		return 0, fmt.Errorf("queue %q pending entries: %w", q.Name, err)
	}
	return p.Count, nil
}

// DeleteQueue deletes every key of queue q (its stream, tasks, results,
// schedules, dead letters, partitions, groups and batches homed there), with
// SCAN and UNLINK: O(keys of the server) for the scan. The tasks it held are
// lost; a worker still serving q recreates the stream. Keys in other slots
// that name q's tasks (limit waiters, the coordinators' due index) are left
// to expire or be dropped as stale by their owners.
//
// q stays registered: a process registers a queue once (RegisterQueue) and
// would not register it again if it used q after the delete, so taking it
// out of the registry could leave a queue in use that no coordinator keeps
// house for.
func DeleteQueue(ctx context.Context, rdb redis.UniversalClient, q keys.Queue) error {
	// Every key of the queue starts with the prefix of its stream's name.
	match := strings.TrimSuffix(q.Stream(), "stream") + "*"
	unlinkAll := func(ctx context.Context, node redis.Cmdable) error {
		var cursor uint64
		for {
			ks, next, err := node.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return err
			}
			if len(ks) > 0 {
				if err := node.Unlink(ctx, ks...).Err(); err != nil {
					return err
				}
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return unlinkAll(ctx, node) })
	} else {
		err = unlinkAll(ctx, rdb)
	}
	if err != nil {
		return fmt.Errorf("delete queue %q: %w", q.Name, err)
	}
	return nil
}

// cgInfo is what QueueStats reads of the workers' group in XINFO GROUPS.
type cgInfo struct {
	pending     int64
	lastID      string
	entriesRead int64 // -1: Redis reported none
	lag         int64 // -1: Redis reported none
}

// waiting returns the group's lag when it is the number of entries waiting.
// Redis 7 reports a lag it can vouch for, or none; entries-read is reported
// from the first read on, until entries are deleted ahead of the readers.
// Before the first read (last delivered id 0-0) every entry waits and
// the lag is the stream's length. miniredis reports no entries-read and a
// lag that ignores reads, so it is trusted there before the first read only.
func (g cgInfo) waiting() (int64, bool) {
	if g.lag < 0 {
		return 0, false
	}
	if g.entriesRead >= 0 || g.lastID == "0-0" || g.lastID == "0" {
		return g.lag, true
	}
	return 0, false
}

// groupInfo finds the workers' group in an XINFO GROUPS reply (RESP2: a
// list of flat field/value lists; RESP3: a list of maps). found is false
// when the stream or the group does not exist.
func groupInfo(cmd *redis.Cmd) (g cgInfo, found bool, err error) {
	v, err := cmd.Result()
	if isNoSuchKey(err) {
		return g, false, nil
	}
	if err != nil {
		return g, false, err
	}
	list, ok := v.([]any)
	if !ok {
		return g, false, fmt.Errorf("XINFO GROUPS answered %T", v)
	}
	for _, item := range list {
		fields := map[string]any{}
		switch t := item.(type) {
		case map[any]any:
			for k, v := range t {
				if s, ok := k.(string); ok {
					fields[s] = v
				}
			}
		case []any:
			for j := 0; j+1 < len(t); j += 2 {
				if s, ok := t[j].(string); ok {
					fields[s] = t[j+1]
				}
			}
		default:
			return g, false, fmt.Errorf("XINFO GROUPS answered a group as %T", item)
		}
		if fields["name"] != keys.Group {
			continue
		}
		g = cgInfo{entriesRead: -1, lag: -1}
		g.lastID, _ = fields["last-delivered-id"].(string)
		p, ok := fields["pending"].(int64)
		if !ok || p < 0 || g.lastID == "" {
			return g, false, fmt.Errorf("XINFO GROUPS: group %q without pending count or last id: %v", keys.Group, fields)
		}
		g.pending = p
		if n, ok := fields["entries-read"].(int64); ok && n >= 0 {
			g.entriesRead = n
		}
		if n, ok := fields["lag"].(int64); ok && n >= 0 {
			g.lag = n
		}
		return g, true, nil
	}
	return g, false, nil
}

// countAfter counts the entries of stream after id, 1000 per XRANGE.
func countAfter(ctx context.Context, rdb redis.Cmdable, stream, id string) (int64, error) {
	var n int64
	for {
		es, err := rdb.XRangeN(ctx, stream, "("+id, "+", 1000).Result()
		if err != nil {
			return 0, fmt.Errorf("count waiting entries: %w", err)
		}
		n += int64(len(es))
		if len(es) < 1000 {
			return n, nil
		}
		id = es[len(es)-1].ID
	}
}

// isNoSuchKey reports the error XINFO answers for a missing stream.
func isNoSuchKey(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && strings.Contains(err.Error(), "no such key")
}
