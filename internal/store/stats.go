package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// QueueNames returns the names of the registered queues (keys.Queues),
// sorted; a member that is not a valid queue name is left out.
func QueueNames(ctx context.Context, rdb redis.Cmdable) ([]string, error) {
	names, err := rdb.SMembers(ctx, keys.Queues).Result()
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return keys.ValidatePhysicalQueue(n) != nil })
	slices.Sort(names)
	return names, nil
}

// QueueCounts are the counts of one queue, read at one moment (one
// script); none is negative.
type QueueCounts struct {
	Queue string
	// Err is set when Redis refused to read the queue's keys (one holds a
	// value of another type, say): the counts are zero then. Only such a
	// refusal of one queue is kept here; a failure of the connection fails
	// QueueStats.
	Err error
	// Waiting is the number of entries of the stream the workers' group
	// has not read yet.
	Waiting int64
	// WaitingFallback is set when Waiting could not be worked out from the
	// queue's counters (a queue whose group an earlier version made, until
	// housekeeping establishes them) and came from the group's lag or, when
	// Redis gave none it could vouch for, from counting the stream.
	WaitingFallback bool
	// Running is the number of entries read by a worker and not yet
	// acknowledged: tasks leased, whose attempt has no outcome yet.
	Running int64
	// Scheduled is the number of delayed tasks waiting for their due time.
	Scheduled int64
	// Retrying is the number of tasks waiting out a retry backoff.
	Retrying int64
	// Parked is the number of tasks parked in the scheduled set because a
	// concurrency limit or a rate was full (or no worker had the kind's
	// handler); PartitionWaiting those waiting in a partition behind its
	// head; InvokeAllHeld the members of InvokeAll groups homed in the
	// queue that wait for a slot.
	Parked, PartitionWaiting, InvokeAllHeld int64
	// Dead is the number of dead tasks kept.
	Dead int64
	// Paused is set while the queue's pause flag exists.
	Paused bool
	// Processed and Failed count the attempts that ended with an outcome
	// (succeeded, or failed: retried or dead), fleet-wide, since the
	// queue's first; the LastMinute ones those that ended in the last 60
	// whole seconds of Redis time.
	Processed, Failed                     int64
	ProcessedLastMinute, FailedLastMinute int64
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

// QueueStats reads the counts of each queue of qs, in their order: one
// qstats.lua per queue, all in one pipeline. Each reads its queue at one
// moment with O(1) commands (and one HMGET of 60 fields).
//
// Waiting is the stream's length less its pending entries and less the
// entries read and acknowledged that housekeeping has not trimmed yet,
// which the scripts that acknowledge, trim and delete count in the queue's
// stats hash. A queue whose group was made by an earlier version has no
// such count until housekeeping establishes it; its Waiting comes, as
// before, from the group's lag when Redis reports one it can vouch for, and
// otherwise from reading the ids after the group's last delivered one
// (XRANGE, 1000 a call): exact, but O(waiting). WaitingFallback tells.
func QueueStats(ctx context.Context, rdb redis.UniversalClient, qs []keys.Queue) ([]QueueCounts, error) {
	calls := make([]*Call, len(qs))
	for i, q := range qs {
		calls[i] = &Call{s: script.QStats, keys: []string{q.Stream(), q.Stats(), q.StatsHistory(), q.Scheduled(),
			q.SchedRetrying(), q.SchedHeld(), q.Dead(), q.Paused()}, args: []any{keys.Group}}
	}
	if len(calls) > 0 {
		// The first error is also the failing call's own, checked below.
		_ = RunCalls(ctx, rdb, calls)
	}
	out := make([]QueueCounts, len(qs))
	for i, q := range qs {
		if err := calls[i].err; err != nil {
			var refused redis.Error
			if errors.As(err, &refused) && !IsLoading(err) {
				// One queue's broken keys do not blind the reader to
				// the others.
				out[i] = QueueCounts{Queue: q.Name, Err: fmt.Errorf("queue %q stats: %w", q.Name, err)}
				continue
			}
			return nil, fmt.Errorf("queue %q stats: %w", q.Name, err)
		}
		v, err := calls[i].res.Slice()
		if err != nil || len(v) != 18 {
			return nil, fmt.Errorf("queue %q stats: qstats.lua answered %v (%v)", q.Name, v, err)
		}
		n := func(j int) int64 { x, _ := v[j].(int64); return x }
		c := QueueCounts{Queue: q.Name, Length: n(0), Running: n(2), Read: n(4), Waiting: n(6),
			Scheduled: n(7), Retrying: n(8), Parked: n(9), PartitionWaiting: n(10), InvokeAllHeld: n(11),
			Dead: n(12), Paused: n(13) == 1, Processed: n(14), Failed: n(15),
			ProcessedLastMinute: n(16), FailedLastMinute: n(17)}
		if n(1) == 0 {
			c.Read = 0
		}
		if c.Waiting < 0 {
			last, _ := v[3].(string)
			g := cgInfo{pending: c.Running, lastID: last, entriesRead: c.Read, lag: n(5)}
			c.WaitingFallback = true
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
				// In order: the same keys make the same command whatever
				// order SCAN gave them in (the conformance table names a
				// call by its first key). A resend of an UNLINK that went
				// through unlinks nothing more: deleting is resend-safe.
				slices.Sort(ks)
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

// MinuteCount is what ended in one queue in one minute of Redis time.
type MinuteCount struct {
	Minute            int64 // Unix minutes
	Processed, Failed int64
}

// HistoryMinutes is how far back QueueHistory reaches: the minutes of the
// ring the history hash keeps (keys.Queue.StatsHistory).
const HistoryMinutes = 24 * 60

// QueueHistory returns the counts of q's last n minutes of Redis time
// (1 ≤ n ≤ HistoryMinutes), oldest first, the current minute last, zeros
// included: TIME and one HGETALL of the history hash (at most 1,500 small
// fields), in one pipeline.
func QueueHistory(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, n int) ([]MinuteCount, error) {
	if n < 1 || n > HistoryMinutes {
		return nil, fmt.Errorf("history of queue %q: %d minutes asked, want 1 to %d", q.Name, n, HistoryMinutes)
	}
	var now *redis.TimeCmd
	var all *redis.MapStringStringCmd
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		now = p.Time(ctx)
		all = p.HGetAll(ctx, q.StatsHistory())
		return nil
	}); err != nil {
		return nil, fmt.Errorf("history of queue %q: %w", q.Name, err)
	}
	cur := now.Val().Unix() / 60
	out := make([]MinuteCount, n)
	for i := range out {
		m := cur - int64(n-1-i)
		out[i].Minute = m
		v, ok := all.Val()["m"+strconv.FormatInt(m%HistoryMinutes, 10)]
		if !ok {
			continue
		}
		var stamp, p, f int64
		if _, err := fmt.Sscanf(v, "%d:%d:%d", &stamp, &p, &f); err == nil && stamp == m && p >= 0 && f >= 0 {
			out[i].Processed, out[i].Failed = p, f
		}
	}
	return out, nil
}
