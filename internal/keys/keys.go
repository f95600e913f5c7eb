// Package keys builds every Redis key and channel name the project uses, and
// validates the user-supplied names that end up inside them.
//
// Each key of a queue carries the hash tag {q:<queue>}, so every key a script
// touches for one queue lives in one Redis Cluster slot.
package keys

import (
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every key.
const Prefix = "async"

// Group is the consumer group every worker of a queue reads through.
const Group = "workers"

// MaxNameLen bounds queue, kind and task key names.
const MaxNameLen = 128

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid name")

// ValidateName checks a queue, kind or task key name against the allow-list
// [A-Za-z0-9._-]{1,128}. what names the field in the error ("queue", "kind").
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty: %w", what, ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s name %.32q... is %d bytes long, the limit is %d: %w", what, name, len(name), MaxNameLen, ErrInvalidName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%s name %q has %q at byte %d; allowed are A-Z a-z 0-9 . _ -: %w", what, name, c, i, ErrInvalidName)
	}
	return nil
}

// MaxPartitionKeyLen bounds partition keys.
const MaxPartitionKeyLen = 256

// ValidatePartitionKey checks a partition key: 1 to 256 bytes of A-Z a-z
// 0-9 and . _ - : / (so "user:42" and "s3/bucket-a" work).
func ValidatePartitionKey(pk string) error {
	if pk == "" {
		return fmt.Errorf("partition key is empty: %w", ErrInvalidName)
	}
	if len(pk) > MaxPartitionKeyLen {
		return fmt.Errorf("partition key %.32q... is %d bytes long, the limit is %d: %w", pk, len(pk), MaxPartitionKeyLen, ErrInvalidName)
	}
	if i := BadKeyByte(pk); i >= 0 {
		return fmt.Errorf("partition key %q has %q at byte %d; allowed are A-Z a-z 0-9 . _ - : /: %w", pk, pk[i], i, ErrInvalidName)
	}
	return nil
}

// BadKeyByte returns the index of the first byte of s outside A-Z a-z 0-9
// and . _ - : / (the bytes of partition and rate-limit keys), or -1.
func BadKeyByte(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/' {
			continue
		}
		return i
	}
	return -1
}

// IsEntryID reports whether s has the shape of a Redis stream entry id
// ("<ms>-<seq>"). Auto-assigned task keys have this shape; user ids must not.
func IsEntryID(s string) bool {
	dash := strings.IndexByte(s, '-')
	if dash <= 0 || dash == len(s)-1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i != dash && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

// Queue holds the key names of one queue.
type Queue struct {
	Name string
	tag  string // "async:{q:<name>}:"
}

// ForQueue returns the keys of queue name. The name must be valid.
func ForQueue(name string) Queue {
	return Queue{Name: name, tag: Prefix + ":{q:" + name + "}:"}
}

// Stream is the queue's task stream.
func (q Queue) Stream() string { return q.tag + "stream" }

// Task is the hash holding the state of the task with key key.
func (q Queue) Task(key string) string { return q.tag + "t:" + key }

// Result is the string holding a succeeded task's record and result, kept for
// the task's retention. One SET with PX writes it.
func (q Queue) Result(key string) string { return q.tag + "f:" + key }

// Scheduled is the sorted set of task keys waiting for a due time (retry
// backoff, delayed tasks, parked tasks), scored by due time in Unix ms.
func (q Queue) Scheduled() string { return q.tag + "sched" }

// Dead is the sorted set of dead task keys, scored by the time they died.
func (q Queue) Dead() string { return q.tag + "dead" }

// Op is the marker of one idempotent batch operation (enqueue replays).
func (q Queue) Op(id string) string { return q.tag + "op:" + id }

// Hooks is the sorted set of what makes a task's end need more than writing
// its result: "w:<id>" for each Outcome call waiting on a task of the queue,
// scored by when its registration expires (it renews it while it waits), and
// "c:<spec>" for each continuation registered and not yet fired, scored +inf.
// While no member is live, recording the first attempt of an auto-keyed task
// skips looking for a record (only those could have made one). Members are
// added and removed by id, so a resent command changes nothing.
func (q Queue) Hooks() string { return q.tag + "hooks" }

// Conts is the list of continuations registered on the task with key key:
// "<queue>/<key>|<1 if only on success, else 0>" each.
func (q Queue) Conts(key string) string { return q.tag + "c:" + key }

// Outbox is the stream of continuations whose parent (a task of this queue)
// ended, waiting to be activated in their own queues.
func (q Queue) Outbox() string { return q.tag + "outbox" }

// Repeats is the sorted set of the repeat schedules whose tasks go to this
// queue, scored by their next fire time (Unix ms, Redis time).
func (q Queue) Repeats() string { return q.tag + "reps" }

// Repeat is the hash holding the definition of the repeat schedule name.
func (q Queue) Repeat(name string) string { return q.tag + "rp:" + name }

// Partition is the list of the keys of the tasks of partition key pk, in
// enqueue order; its head is the one that may run.
func (q Queue) Partition(pk string) string { return q.tag + "p:" + pk }

// Partitioner is the list of the items appended to partitioner name
// (patterns.Partitioner), each with its partition key, until a flush.
func (q Queue) Partitioner(name string) string { return q.tag + "pp:" + name }

// PartitionerSnap is a flush's snapshot of partitioner name's items.
func (q Queue) PartitionerSnap(name, snap string) string { return q.tag + "pps:" + name + ":" + snap }

// PartitionerSnaps is the sorted set of partitioner name's snapshots taken
// and not yet started.
func (q Queue) PartitionerSnaps(name string) string { return q.tag + "ppz:" + name }

// BatchKeyPrefix starts the key of every batch task (patterns.Batch); an
// item of batch <key> has the task key "<key>.<index>".
const BatchKeyPrefix = "bt-"

// BatchOfItem returns the batch key and index of a batch item's task key.
func BatchOfItem(key string) (batch, index string, ok bool) {
	if !strings.HasPrefix(key, BatchKeyPrefix) {
		return "", "", false
	}
	dot := strings.LastIndexByte(key, '.')
	if dot <= len(BatchKeyPrefix) || dot == len(key)-1 {
		return "", "", false
	}
	for i := dot + 1; i < len(key); i++ {
		if key[i] < '0' || key[i] > '9' {
			return "", "", false
		}
	}
	if key[dot+1] == '0' && dot+2 < len(key) {
		return "", "", false // one spelling per index: no leading zeros
	}
	return key[:dot], key[dot+1:], true
}

// BatchResults is the hash of the result records of batch bkey's items
// that succeeded (index → the record a result key holds), kept for the
// batch's retention.
func (q Queue) BatchResults(bkey string) string { return q.tag + "br:" + bkey }

// BatchMarked is the set of the indexes of batch bkey's items that have a
// record of their own before they end (watched, continued, cancelled).
func (q Queue) BatchMarked(bkey string) string { return q.tag + "bm:" + bkey }

// BatchCancelled is the set of the indexes of batch bkey's items cancelled
// before it ran.
func (q Queue) BatchCancelled(bkey string) string { return q.tag + "bx:" + bkey }

// BatchOpen holds the key of the open batch of kind (patterns.Batch): the
// one appended items join.
func (q Queue) BatchOpen(kind string) string { return q.tag + "bo:" + kind }

// BatchItems is the list of the item keys of batch bkey.
func (q Queue) BatchItems(bkey string) string { return q.tag + "bi:" + bkey }

// Kids is the set of ids of the child tasks the task with key key enqueued
// from its handler; cancelling the task cancels them.
func (q Queue) Kids(key string) string { return q.tag + "k:" + key }

// Ctl is the pub/sub channel on which a cancel request reaches the worker
// running the task (message: "<entry id>").
func (q Queue) Ctl() string { return q.tag + "ctl" }

// Paused is the queue's pause flag: while it exists, workers do not fetch
// from the queue (inspect.Pause, Resume).
func (q Queue) Paused() string { return q.tag + "paused" }

// Stats is the hash of the queue's counters, kept by the scripts that move
// its tasks: "ack" (entries of the stream the group read and acknowledged
// that housekeeping has not trimmed yet), "ax" ("1" while ack is exact: the
// group was created by a version that counts it, or housekeeping
// established it), "pw" (tasks waiting in a partition behind its head),
// "ia" (members of InvokeAll groups homed here that are held), "n" and "f"
// (attempts that ended with an outcome, and those of them that failed).
func (q Queue) Stats() string { return q.tag + "stats" }

// StatsHistory is the hash of the queue's recent counts, two rings of
// fields "<stamp>:<ended>:<failed>": "s<i>" for the second i of a minute
// (stamp: Unix seconds) and "m<i>" for the minute i of a day (stamp: Unix
// minutes, Redis time). A field whose stamp is not the one asked for is
// stale and reads as zero. It expires a day (and a margin) after its last
// write, when every field would be stale.
func (q Queue) StatsHistory() string { return q.tag + "hist" }

// SchedRetrying is the sorted set of the members of Scheduled that wait
// out a retry backoff, with the same scores: an index, so that they are
// counted apart from delayed tasks.
func (q Queue) SchedRetrying() string { return q.tag + "sched:r" }

// SchedHeld is the sorted set of the members of Scheduled that were parked
// (a concurrency limit or a rate was full, or no worker had the kind's
// handler), with the same scores.
func (q Queue) SchedHeld() string { return q.tag + "sched:h" }

// Done is the pub/sub channel on which watched tasks of the queue announce
// that they ended.
func (q Queue) Done() string { return q.tag + "done" }

// TaskID joins a queue and a task key into a public task id.
func TaskID(queue, key string) string { return queue + "/" + key }

// SplitTaskID is the inverse of TaskID. The queue is a public name or a
// shard's physical name (ValidatePhysicalQueue).
func SplitTaskID(id string) (queue, key string, err error) {
	i := strings.IndexByte(id, '/')
	if i < 0 {
		return "", "", fmt.Errorf("task id %q has no queue part (want <queue>/<key>): %w", id, ErrInvalidName)
	}
	queue, key = id[:i], id[i+1:]
	// A shard's task names its physical queue (issue 21).
	if err := ValidatePhysicalQueue(queue); err != nil {
		return "", "", fmt.Errorf("task id %q: %w", id, err)
	}
	if err := ValidateName("task key", key); err != nil {
		return "", "", fmt.Errorf("task id %q: %w", id, err)
	}
	return queue, key, nil
}

// Groups (fork/join, InvokeAll) keep their state in the slot of their home
// queue, under these keys; a group's public id is "group:<home queue>/<id>".

// GroupPrefix starts every public group id. No queue name can contain ':',
// so a group id never reads as a task id.
const GroupPrefix = "group:"

// MaxGroupIDLen bounds a group's own id, so that its members' derived task
// keys ("<group id>.<index>") stay within MaxNameLen.
const MaxGroupIDLen = 100

// GroupID joins a home queue and a group's own id into a public group id.
func GroupID(home, id string) string { return GroupPrefix + home + "/" + id }

// IsGroupID reports whether s has the form of a public group id.
func IsGroupID(s string) bool { return strings.HasPrefix(s, GroupPrefix) }

// SplitGroupID is the inverse of GroupID.
func SplitGroupID(s string) (home, id string, err error) {
	if !IsGroupID(s) {
		return "", "", fmt.Errorf("group id %q does not start with %q: %w", s, GroupPrefix, ErrInvalidName)
	}
	home, id, err = SplitTaskID(s[len(GroupPrefix):])
	if err != nil {
		return "", "", fmt.Errorf("group id %q: %w", s, err)
	}
	if len(id) > MaxGroupIDLen {
		return "", "", fmt.Errorf("group id %q: its own part is %d bytes, the limit is %d: %w", s, len(id), MaxGroupIDLen, ErrInvalidName)
	}
	return home, id, nil
}

// Group is the hash of a group's counters and settings: st (running,
// succeeded, failed, cancelled), n (members), ok and bad (members that
// ended with and without success), ff (fail fast), lim and free (InvokeAll's
// limit and free slots), sealed, cx (cancel requested), pg and pm (the group
// this one is a member of, and its member name there), ret (retention ms),
// first (the first member that failed), at and fin (Unix ms); and per chunk
// of members enqueued into the home queue, "e:<chunk>" =
// "<index>,...;<entry id>,..." (where they went, in submission order).
func (q Queue) Group(id string) string { return q.tag + "g:" + id }

// GroupOpen is the set of a group's members that have not ended, plus the
// sentinel "~open" until every member is added.
func (q Queue) GroupOpen(id string) string { return q.tag + "gm:" + id }

// GroupOrder is the sorted set of the members a group added by name (those
// in other queues, held ones, nested groups), scored by submission index:
// with the chunk records of the group hash, the order of Outcome; and the
// proof that a member was added once (re-adding a member that already ended
// must not reopen it).
func (q Queue) GroupOrder(id string) string { return q.tag + "gl:" + id }

// GroupHeld is the sorted set of InvokeAll members waiting for a slot,
// scored by submission index.
func (q Queue) GroupHeld(id string) string { return q.tag + "gw:" + id }

// GroupSweep is held (SET NX with an expiry) by the process that cancels a
// group's open members, so that one process does the sweep at a time.
func (q Queue) GroupSweep(id string) string { return q.tag + "gx:" + id }

// GroupConts is the list of continuations (the join among them) of a group,
// in the format of Conts.
func (q Queue) GroupConts(id string) string { return q.tag + "gc:" + id }

// Limit holds the keys of one fleet-wide concurrency limit, scope being
// "kind:<kind>" or "queue:<queue>"; its own hash tag puts them in one slot.
type Limit struct {
	Scope string
	tag   string
}

// ForLimit returns the keys of the limit named scope.
func ForLimit(scope string) Limit { return Limit{Scope: scope, tag: Prefix + ":{lim:" + scope + "}:"} }

// Holders is the sorted set of the attempts holding a slot of the limit
// ("<queue>/<entry id>/<consumer>/<delivery>"), scored by when their lease
// ends (Unix ms); a holder not renewed by then has lost its slot.
func (l Limit) Holders() string { return l.tag + "h" }

// Waiters is the sorted set of task ids parked because the limit was full,
// scored by when they parked (Unix ms, Redis time; ties in id order), woken
// in that order as slots free. (Versions before it kept a list under "w",
// scanned whole by every park; that key expires by itself.)
func (l Limit) Waiters() string { return l.tag + "wz" }

// The coordinators' keys share one slot of their own.
const (
	// DueIndex is the sorted set of queues with delayed tasks, scored by
	// their earliest due time (Unix ms, Redis time).
	DueIndex = Prefix + ":{coord}:due"
	// DueGen is the hash of each queue's mark generation in the due
	// index, "<count>|<op id>|<answer>" (the op id and answer of the last
	// mark, so that a resent mark answers as its first run did): a
	// coordinator updates an entry only if no mark came since it read
	// the queue.
	DueGen = Prefix + ":{coord}:dueg"
	// DueWake is the channel on which an enqueue announces a due time
	// earlier than the index held (message: the due ms).
	DueWake = Prefix + ":{coord}:wake"
	// Queues is the set of every queue name a client, worker or group has
	// used: the queues the coordinators keep house for.
	Queues = Prefix + ":{coord}:queues"
	// RepeatIndex is the hash of repeat schedule names to the queue that
	// holds each one's definition.
	RepeatIndex = Prefix + ":{coord}:repeats"
	// HousekeepClaim is held by the coordinator keeping house this
	// interval.
	HousekeepClaim = Prefix + ":{coord}:hk"
)

// Issue 15: the inspector's tasks, control and fleet views.

// Groups is the sorted set of the ids of the groups homed in the queue
// (their own ids, not the public ones), scored by when each was created
// (Unix ms, Redis time). groupnew.lua adds a group; a reader drops the ids
// whose group hash is gone (it expired with its retention).
func (q Queue) Groups() string { return q.tag + "groups" }

// PauseNotice is the message published on a queue's control channel when
// its pause flag was set or deleted: workers read the flag again at once
// instead of at their next poll. No entry id has this form.
const PauseNotice = "~pause"

// WorkerIndex is the sorted set of the names of the registered workers,
// scored by when each one's registration expires (Unix ms, Redis time).
const WorkerIndex = Prefix + ":{coord}:workers"

// Worker is the hash in which the worker named name registers itself
// (name, host, pid, queues, concurrency, running, paused, started, last
// heartbeat); it expires unless the worker refreshes it.
func Worker(name string) string { return Prefix + ":{coord}:w:" + name }

// The public test kit (package asynctest) owns a whole database of a real
// Redis while a fleet of it runs there: these two keys (in a slot of their
// own) say so.

// TestKitMarker marks a database as the test kit's: the kit flushes a
// database only when it holds this key or no key at all, never someone's
// data.
const TestKitMarker = Prefix + ":{testkit}:marker"

// TestKitLock is held (its value names the holder) by the one fleet that
// owns the database; it expires unless the fleet renews it.
const TestKitLock = Prefix + ":{testkit}:lock"
