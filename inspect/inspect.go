// Package inspect is the public read and control surface of a fleet on one
// Redis, for operators, dashboards, alerts and tests. It reads what workers,
// clients and coordinators keep in Redis, through the same typed store they
// use; it needs no client or worker of its own, and holds nothing but the
// Redis client it is given.
//
//   - Queues, Queue and History: each queue's counts by state, paused or
//     not, and the fleet-wide processed and failed totals, per minute over
//     the last day.
//   - Tasks and Task: a queue's tasks by state, a page at a time; one task
//     in any state, with its earlier attempts; both with the progress the
//     tasks' handlers reported (worker.ReportProgress).
//   - Pause, Resume, DeleteQueue, RetryDead, PurgeDead and CancelAll: steer
//     a queue fleet-wide.
//   - Groups, Repeats and Workers: groups with their progress (members
//     ended, and the work their members reported), repeat
//     schedules with their next and last fires, the live workers.
//
// Counts are exact at the moment they are read (one script per queue reads
// them all at once), never negative, and cost O(1) per queue, all queues in
// one round trip; except Waiting of a queue set up by an earlier version, in
// the case QueueInfo.WaitingFallback describes.
package inspect

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// ErrQueueNotEmpty is returned by DeleteQueue, unless forced, for a queue
// that holds tasks.
var ErrQueueNotEmpty = errors.New("queue is not empty")

// Inspector reads the queues of one Redis. It is safe for concurrent use.
type Inspector struct {
	rdb redis.UniversalClient
}

// New returns an Inspector on rdb, which it uses but never closes. It does
// no I/O.
func New(rdb redis.UniversalClient) *Inspector {
	return &Inspector{rdb: rdb}
}

// QueueInfo is the state of one queue, read at one moment.
type QueueInfo struct {
	Queue string `json:"queue"`
	// Waiting counts the tasks in the queue's stream that no worker has
	// read yet: the stream's length, less its entries pending, less the
	// entries read and acknowledged that housekeeping has not trimmed yet
	// (counted by the scripts that acknowledge, trim and delete entries).
	Waiting int64 `json:"waiting"`
	// WaitingFallback is set when the queue's consumer group was made by a
	// version before that count was kept, and housekeeping has not
	// established it yet (it does at its first pass that finds nothing
	// pending, or at most 1000 entries from the oldest pending to the last
	// read). Waiting then comes from the group's lag, O(1), or when Redis
	// cannot give a lag it vouches for (Redis 6.2, miniredis, a task
	// cancelled while it waited) from counting the stream: exact, but
	// O(waiting).
	WaitingFallback bool `json:"waiting_fallback,omitempty"`
	// Running counts the tasks a worker has read and holds the lease of,
	// whose attempt has no outcome yet.
	Running int64 `json:"running"`
	// Scheduled counts the tasks delayed to a due time (EnqueueOpts.Delay,
	// ProcessAt; an open batch). Tasks that went into the queue's
	// scheduled set to retry or parked before an upgrade to this version
	// count here, not in Retrying or Held, until they leave it.
	Scheduled int64 `json:"scheduled"`
	// Dead counts the dead tasks kept (see client.Client.DeadTasks).
	Dead int64 `json:"dead"`
	// Retrying counts the tasks waiting out a retry backoff.
	Retrying int64 `json:"retrying"`
	// Held counts the tasks parked because a concurrency limit or a rate
	// was full (or no worker had their kind's handler), those waiting in a
	// partition behind the task of their key that runs, and the members of
	// InvokeAll groups homed in this queue that wait for a slot (counted in
	// the home queue, wherever the member runs).
	Held int64 `json:"held"`
	// Paused is set while the queue is paused (Pause).
	Paused bool `json:"paused"`
	// Processed, Succeeded and Failed are fleet-wide totals of attempts
	// that ended with an outcome, kept in Redis by the completion scripts:
	// Processed = Succeeded + Failed (a failed attempt counts whether it
	// retries or dies; an entry dead-lettered unrun, malformed or poison,
	// counts as failed). An item of a patterns.Batch counts on its own
	// when the batch's run records it; a batch's run that fails as a whole
	// counts once. Cancels and hand-backs are not outcomes and count in
	// neither. The totals are as old as the queue (DeleteQueue resets
	// them).
	Processed int64 `json:"processed"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	// ProcessedLastMinute and FailedLastMinute count the attempts that
	// ended in the last 60 whole seconds of Redis time, this one included.
	ProcessedLastMinute int64 `json:"processed_last_minute"`
	FailedLastMinute    int64 `json:"failed_last_minute"`
	// StreamLength is the number of entries in the queue's stream: waiting
	// and running tasks, and ended ones that the coordinators' housekeeping
	// has not trimmed yet.
	StreamLength int64 `json:"stream_length"`
	// Read is the consumer group's read counter: how many entries had been
	// added to the stream up to the last one a worker read, those deleted
	// unread (cancelled while waiting) included; or -1 when Redis cannot
	// tell (Redis 6.2, miniredis, before the first read, or while a
	// cancelled entry lies ahead of the readers). Two readings a second
	// apart give the rate at which workers take tasks.
	Read int64 `json:"read"`
	// Error is set when the queue's keys could not be read (Redis refused:
	// one of them holds a value of another type, say); its counts are zero
	// then (for a sharded queue, the sums of the physical queues that could
	// be read; each shard's own Error says which). Queues lists such a
	// queue with its error rather than fail for all; Queue returns the
	// error.
	Error string `json:"error,omitempty"`
	// Shards is set for a sharded queue (client.Client.DeclareShards): its
	// physical queues, the plain queue first (Index -1: producers that had
	// not read the declaration yet wrote there), then shard 0 to N-1, each
	// with its own counts and, on a cluster, its master. The counts above
	// are then their sums (Read is -1 when any part's is), and Paused is
	// the sharded queue's own flag, which pauses every shard: a shard's
	// Paused is set by it, or by a pause of the shard alone.
	Shards []ShardInfo `json:"shards,omitempty"`
	// ShardError is set when the queue's entry in the shard registry could
	// not be decoded: the shards are then the ones the queue index lists.
	ShardError string `json:"shard_error,omitempty"`
}

// Queues returns every queue a client, worker or group has used on this
// Redis, sorted by name, with its counts: one SMEMBERS and one HGETALL of
// the shard registry, then one pipeline of one read-only script per
// physical queue (and one CLUSTER SLOTS on a cluster with sharded
// queues). A sharded queue is listed once, with its shards in
// QueueInfo.Shards; no shard is listed on its own.
func (i *Inspector) Queues(ctx context.Context) ([]QueueInfo, error) {
	names, err := store.QueueNames(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	sets, bad, err := store.ShardSets(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	return i.logicalStats(ctx, group(names, sets, bad))
}

// Queue returns the counts of the queue name. A queue nobody has used reads
// as all zeros. A bad name is an error that matches client.ErrInvalidName.
// A sharded queue's name gives the sums over its physical queues with the
// breakdown in QueueInfo.Shards, as Queues lists it; a shard's physical
// name gives that shard's own counts (Paused by its own flag or its
// queue's, as in the breakdown).
func (i *Inspector) Queue(ctx context.Context, name string) (QueueInfo, error) {
	if err := keys.ValidatePhysicalQueue(name); err != nil {
		return QueueInfo{}, err
	}
	var qs []QueueInfo
	var err error
	if lq, _, ok := keys.ParseShard(name); ok {
		// The shard's counts; paused by its own flag or its queue's.
		if qs, err = i.stats(ctx, []string{name, lq}); err == nil {
			qs[0].Paused = qs[0].Paused || qs[1].Paused
		}
	} else {
		var l *logical
		if l, err = i.logicalOf(ctx, name); err == nil {
			qs, err = i.logicalStats(ctx, []*logical{l})
		}
	}
	if err != nil {
		return QueueInfo{}, err
	}
	if qs[0].Error != "" {
		return QueueInfo{}, errors.New(qs[0].Error)
	}
	return qs[0], nil
}

func (i *Inspector) stats(ctx context.Context, names []string) ([]QueueInfo, error) {
	qs := make([]keys.Queue, len(names))
	for j, n := range names {
		qs[j] = keys.ForQueue(n)
	}
	cs, err := store.QueueStats(ctx, i.rdb, qs)
	if err != nil {
		return nil, err
	}
	out := make([]QueueInfo, len(cs))
	for j, c := range cs {
		if c.Err != nil {
			out[j] = QueueInfo{Queue: c.Queue, Read: -1, Error: c.Err.Error()}
			continue
		}
		out[j] = QueueInfo{Queue: c.Queue, Waiting: c.Waiting, WaitingFallback: c.WaitingFallback,
			Running: c.Running, Scheduled: c.Scheduled, Retrying: c.Retrying,
			Held: c.Parked + c.PartitionWaiting + c.InvokeAllHeld, Dead: c.Dead, Paused: c.Paused,
			Processed: c.Processed, Succeeded: c.Processed - c.Failed, Failed: c.Failed,
			ProcessedLastMinute: c.ProcessedLastMinute, FailedLastMinute: c.FailedLastMinute,
			StreamLength: c.Length, Read: c.Read}
	}
	return out, nil
}

// Running returns QueueInfo.Running of the queue name alone, with one O(1)
// command (XPENDING in its summary form): cheap enough to poll until a
// queue's workers hold no task. It fails for a queue no worker or client
// has set up yet. For a sharded queue it is the sum over its physical
// queues (one XPENDING each, after reading the registry and the queue
// index), those not set up yet counting 0; it fails when none is.
func (i *Inspector) Running(ctx context.Context, name string) (int64, error) {
	parts, err := i.physical(ctx, name)
	if err != nil {
		return 0, err
	}
	if len(parts) == 1 {
		return store.RunningCount(ctx, i.rdb, keys.ForQueue(parts[0]))
	}
	var n int64
	var first error
	counted := false
	for _, p := range parts {
		c, err := store.RunningCount(ctx, i.rdb, keys.ForQueue(p))
		switch {
		case err == nil:
			n += c
			counted = true
		case notSetUp(err):
			if first == nil {
				first = err
			}
		default:
			return 0, err
		}
	}
	if !counted {
		return 0, first
	}
	return n, nil
}

// DeleteQueue deletes the queue name: every task, result, schedule and dead
// letter in it. Unless force is set, a queue with waiting, running,
// scheduled, retrying, held or dead tasks is refused with ErrQueueNotEmpty
// (its counters go with it). It scans the
// keys of the server (SCAN, on every master of a cluster): O(keys), for
// cleanups rather than hot paths. A worker still serving the queue sets it
// up again; stop those first. The queue stays registered (Queues lists it,
// with zero counts), so that the coordinators keep house for it if a
// process that used it before uses it again.
//
// The check without force is not atomic with the deletion: it reads the
// counts, then deletes, and a task enqueued in between (by a producer, a
// repeat schedule, a continuation or group of another queue's task) is
// deleted with the rest, without an error. Before deleting a queue that may
// still be in use, stop its producers, Pause it (enqueue is still accepted
// while paused) and let its running tasks end.
//
// A sharded queue's name deletes its plain queue and every shard (one scan
// each); its entry in the shard registry stays, as the queue's
// registration does. A shard's name deletes that shard alone.
func (i *Inspector) DeleteQueue(ctx context.Context, name string, force bool) error {
	parts, err := i.physical(ctx, name)
	if err != nil {
		return err
	}
	if !force {
		q, err := i.Queue(ctx, name)
		if err != nil {
			return err
		}
		if n := q.Waiting + q.Running + q.Scheduled + q.Retrying + q.Held + q.Dead; n > 0 {
			return fmt.Errorf("delete queue %q: it holds %d task(s) (%d waiting, %d running, %d scheduled, %d retrying, %d held, %d dead): %w",
				name, n, q.Waiting, q.Running, q.Scheduled, q.Retrying, q.Held, q.Dead, ErrQueueNotEmpty)
		}
	}
	for _, p := range parts {
		if err := store.DeleteQueue(ctx, i.rdb, keys.ForQueue(p)); err != nil {
			return err
		}
	}
	return nil
}

// Decode decodes the bytes of a task's args or result, as read from Redis
// (client.Info.Payload and Result, client.DeadTask.Payload), into plain Go
// values: maps, slices, strings, numbers, bools, nil. Decoding goes through
// the project's checked decoder, so bytes that are malformed or hostile (a
// length beyond the bytes given, nesting too deep) give an error rather
// than a crash or a huge allocation.
func Decode(b []byte) (any, error) {
	var v any
	if err := codec.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}
