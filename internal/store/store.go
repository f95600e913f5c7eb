// Package store is the project's only door to Redis: typed wrappers around the
// Lua scripts in internal/script, plus the server checks run at start.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// ErrRedisTooOld is returned by CheckServer for servers older than 6.2.
var ErrRedisTooOld = errors.New("redis server too old")

// CheckServer refuses Redis older than 6.2 (XAUTOCLAIM and XPENDING IDLE came
// then) and logs a warning when maxmemory-policy is not noeviction: eviction
// silently drops tasks. It then loads the Lua scripts. A server that reports
// no version (the embedded miniredis) is accepted.
func CheckServer(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) error {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil && !strings.Contains(err.Error(), "not supported") {
		return fmt.Errorf("redis INFO server: %w", err)
	}
	if v := infoField(info, "redis_version"); v != "" {
		if err := CheckVersion(v); err != nil {
			return err
		}
	}
	if policy, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result(); err == nil {
		if p, ok := policy["maxmemory-policy"]; ok && p != "noeviction" {
			log.Warn("redis maxmemory-policy is not noeviction: under memory pressure Redis may evict task data; set maxmemory-policy noeviction",
				slog.String("maxmemory-policy", p))
		}
	}
	return script.Load(ctx, rdb)
}

// CheckVersion returns ErrRedisTooOld for a version below 6.2.
func CheckVersion(v string) error {
	parts := strings.SplitN(v, ".", 3)
	major, err1 := strconv.Atoi(parts[0])
	minor := 0
	var err2 error
	if len(parts) > 1 {
		minor, err2 = strconv.Atoi(parts[1])
	}
	if err1 != nil || err2 != nil {
		return fmt.Errorf("redis reports version %q, which is not major.minor[.patch]: %w", v, ErrRedisTooOld)
	}
	if major < 6 || major == 6 && minor < 2 {
		return fmt.Errorf("redis %s found; streams with XAUTOCLAIM need redis 6.2 or newer: %w", v, ErrRedisTooOld)
	}
	return nil
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// EnsureGroup creates the queue's stream and consumer group if missing
// (groupmk.lua, which starts the queue's exact waiting count with it), and
// registers the queue for the coordinators' housekeeping.
//
// Redis over its maxmemory refuses XGROUP CREATE and SADD even when they
// would change nothing; then what exists already is accepted, so that a
// worker starts (and drains a backlog) at the memory limit.
func EnsureGroup(ctx context.Context, rdb redis.Cmdable, q keys.Queue) error {
	err := script.GroupMk.Run(ctx, rdb, []string{q.Stream(), q.Stats()}, keys.Group).Err()
	if err != nil && refusedForMemory(err) {
		if groups, gerr := rdb.XInfoGroups(ctx, q.Stream()).Result(); gerr == nil {
			for _, g := range groups {
				if g.Name == keys.Group {
					err = nil
				}
			}
		}
	}
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group of queue %q: %w", q.Name, err)
	}
	err = RegisterQueue(ctx, rdb, q.Name)
	if err != nil && refusedForMemory(err) {
		if in, merr := rdb.SIsMember(ctx, keys.Queues, q.Name).Result(); merr == nil && in {
			return nil
		}
	}
	return err
}

// refusedForMemory reports whether err is Redis refusing a command over its maxmemory.
func refusedForMemory(err error) bool {
	return strings.Contains(err.Error(), "OOM command not allowed")
}

// RegisterQueue records that queue is in use, so that the coordinators trim
// its stream, cap its dead letters and sweep its outbox even when no worker
// serves it. A process registers a queue once per Redis client (groups,
// partitioner appends and batches call it on every use).
func RegisterQueue(ctx context.Context, rdb redis.Cmdable, queue string) error {
	k := registration{rdb, queue}
	if _, done := registered.Load(k); done {
		return nil
	}
	if err := rdb.SAdd(ctx, keys.Queues, queue).Err(); err != nil {
		return fmt.Errorf("register queue %q: %w", queue, err)
	}
	registered.Store(k, struct{}{})
	return nil
}

// registered holds the queues this process registered, per client.
var registered sync.Map

type registration struct {
	rdb   redis.Cmdable
	queue string
}

// NewTask is one task of an enqueue batch.
type NewTask struct {
	UserKey  string // '' for an auto-keyed task
	Envelope []byte
	Group    string // public id of the group it is a member of (keyed tasks only)
	Hold     bool   // created waiting, outside the stream (keyed tasks only)
	DueMs    int64  // when it is due, Unix ms in Redis time; 0 now (keyed tasks only)
	Part     string // partition key, or "" (keyed tasks only)
	// IfThere writes the task only where its key has a task already: its
	// partition key's list, or the task its id names (keyed tasks only).
	// Else nothing is written and the answer is Moved: a sharded queue's
	// task sent to its key's old shard, whose tasks ended meanwhile, goes
	// to its new shard instead (engine/shard21.go).
	IfThere bool
	// IfThereFromMs, when not 0, makes the task IfThere from that Redis
	// time on (Unix ms): a task placed by a sharded queue's old layout
	// during a change's grace that reaches Redis after the change took
	// effect is written in the old place only if its key has a task there.
	IfThereFromMs int64
}

// Enqueued is the answer for one task of a batch.
type Enqueued struct {
	Key     string
	Existed bool
	Moved   bool // an IfThere task whose key had no task there: not added
}

// MarkerGrace is how long the op marker of an enqueue call lives once the
// client read the call's reply: go-redis sends that call no more, and only a
// try already on its way (in a closed connection's buffer, behind a busy
// Redis) may still arrive.
const MarkerGrace = 2 * time.Second

// EnqueueArgs builds the keys and args of enqueue.lua for one batch. done
// are the op ids of earlier calls to q whose replies were read: the call
// shortens their markers to MarkerGrace.
func EnqueueArgs(q keys.Queue, opID string, opTTLms int64, tasks []NewTask, done ...string) ([]string, []any) {
	ks := []string{q.Stream(), q.Op(opID), q.Scheduled(), q.Stats()}
	auto := true
	for _, t := range tasks {
		auto = auto && t.UserKey == ""
	}
	if auto {
		// Envelopes alone (enqueue.lua's auto-keyed form).
		args := make([]any, 0, 5+len(tasks))
		args = append(args, keys.Group, opTTLms, "a"+strconv.Itoa(len(tasks)))
		for _, t := range tasks {
			args = append(args, t.Envelope)
		}
		return enqueueDone(q, ks, args, done)
	}
	args := make([]any, 0, 5+6*len(tasks))
	args = append(args, keys.Group, opTTLms, len(tasks))
	for _, t := range tasks {
		if t.UserKey != "" {
			ks = append(ks, q.Task(t.UserKey), q.Result(t.UserKey))
			if t.Part != "" {
				ks = append(ks, q.Partition(t.Part))
			}
		}
		hold := ""
		if t.Hold {
			hold = "1"
		}
		part := t.Part
		switch {
		case t.IfThere:
			part = "\x01" + part // enqueue.lua's marks of an IfThere task
		case t.IfThereFromMs > 0:
			part = "\x02" + strconv.FormatInt(t.IfThereFromMs, 10) + ":" + part
		}
		args = append(args, t.UserKey, t.Envelope, t.Group, hold, t.DueMs, part)
	}
	return enqueueDone(q, ks, args, done)
}

// enqueueDone adds to an enqueue.lua call the markers of the earlier calls
// done, which it shortens.
func enqueueDone(q keys.Queue, ks []string, args []any, done []string) ([]string, []any) {
	if len(done) > 0 {
		for _, id := range done {
			ks = append(ks, q.Op(id))
		}
		args = append(args, len(done), MarkerGrace.Milliseconds())
	}
	return ks, args
}

// ParseEnqueued decodes enqueue.lua's reply.
func ParseEnqueued(v any, n int) ([]Enqueued, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 2*n {
		return nil, fmt.Errorf("enqueue.lua: unexpected reply %T of %d items for %d tasks", v, len(arr), n)
	}
	out := make([]Enqueued, n)
	for i := range out {
		key, _ := arr[2*i].(string)
		if key == "" {
			return nil, fmt.Errorf("enqueue.lua: task %d of the reply has no key (%T)", i, arr[2*i])
		}
		ex, _ := arr[2*i+1].(int64)
		out[i] = Enqueued{Key: key, Existed: ex == 1, Moved: ex == 2}
	}
	return out, nil
}

// Completion is one attempt's outcome, fenced by (EntryID, Deliveries) under
// the consumer that sends it. Outcome says what happened, built by Succeed,
// Retry, Dead, Park or Cancelled.
type Completion struct {
	EntryID    string
	Deliveries int64
	Key        string
	Fresh      bool   // the entry is the first of an auto-keyed task
	Attempt    int    // the number of the attempt that ended (0 when none ran)
	Group      string // public id of the task's group, if it is a member
	Outcome    Outcome

	// Part and Next are the partition key and the task behind it that the
	// entry named (fields pk and nx; ReadEntry.Part, Next): given, an end
	// steps the partition in the same call when its list still agrees
	// (complete.lua), rather than through the outbox. Empty for an entry
	// that named none.
	Part, Next string
}

// Outcome is what complete.lua does with an attempt's task. Its zero value
// is no outcome: Complete refuses it.
type Outcome struct {
	op   string // complete.lua's op code
	data []byte // result (s), next envelope (r, p), envelope or raw entry (d)
	ms   int64  // retention (s, c), delay (r, p)
	text string // error text (r, d), reason (c)
}

// Succeed ends the task as succeeded with result, kept for retainMs.
func Succeed(result []byte, retainMs int64) Outcome {
	return Outcome{op: "s", data: result, ms: retainMs}
}

// Retry schedules the task's next attempt, whose envelope is next, after
// delay (a negative one counts as 0); msg is the error of the attempt that
// ended.
func Retry(next []byte, delay time.Duration, msg string) Outcome {
	return Outcome{op: "r", data: next, ms: max(delay.Milliseconds(), 0), text: msg}
}

// Dead moves the task to the dead-letter store with its envelope (or, for
// an entry that cannot be decoded, the raw entry) and error text msg.
func Dead(env []byte, msg string) Outcome {
	return Outcome{op: "d", data: env, text: msg}
}

// Park hands the task back with envelope next, into the stream now (delay
// 0) or into the scheduled set for delay. It does not end the attempt.
func Park(next []byte, delay time.Duration) Outcome {
	return Outcome{op: "p", data: next, ms: delay.Milliseconds()}
}

// Cancelled ends the task as cancelled for reason, its record kept for
// retainMs.
func Cancelled(retainMs int64, reason string) Outcome {
	return Outcome{op: "c", ms: retainMs, text: reason}
}

// Scheduled reports whether o puts the task in the scheduled set (a retry,
// or a park with a delay), for a forwarder to move when due.
func (o Outcome) Scheduled() bool {
	return o.op == "r" || o.op == "p" && o.ms > 0
}

// args are o's a1, a2 and a3 in complete.lua's argument list (see its
// header).
func (o Outcome) args() (a1, a2, a3 any) {
	switch o.op {
	case "s", "p":
		return o.data, o.ms, ""
	case "r":
		return o.data, o.ms, o.text
	case "d":
		return o.data, o.text, ""
	case "c":
		return o.ms, o.text, ""
	}
	return nil, nil, nil
}

// Applied is complete.lua's answer for one item.
type Applied int

// The answers of complete.lua.
const (
	LeaseLost Applied = 0 // nothing was written
	Recorded  Applied = 1
	Fired     Applied = 2 // recorded, and continuations went to the outbox
)

// Complete records a batch of outcomes of one queue.
func Complete(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, items []Completion) ([]Applied, error) {
	ks := make([]string, 0, 9+3*len(items))
	ks = append(ks, q.Stream(), q.Scheduled(), q.Dead(), q.Hooks(), q.Outbox())
	args := make([]any, 0, 8+10*len(items))
	args = append(args, keys.Group, consumer, q.Done(), len(items), q.Name)
	// Groups whose home is this queue are counted in this same script; a
	// member of a group elsewhere tells it through the outbox.
	var groups []GroupRef
	index := map[string]bool{}
	for i, c := range items {
		if c.Outcome.op == "" {
			return nil, fmt.Errorf("record outcomes in queue %q: item %d (task %s) has no outcome", q.Name, i, c.Key)
		}
		ks = append(ks, q.Task(c.Key), q.Result(c.Key), q.Conts(c.Key))
		fresh := "0"
		if c.Fresh {
			fresh = "1"
		}
		if c.Group != "" && !index[c.Group] {
			if g, err := ParseGroupRef(c.Group); err == nil && g.Home.Name == q.Name {
				groups = append(groups, g)
				index[c.Group] = true
			}
		}
		a1, a2, a3 := c.Outcome.args()
		args = append(args, c.Outcome.op, c.EntryID, c.Deliveries, c.Key, fresh, c.Attempt, a1, a2, a3, c.Group)
	}
	args = append(args, len(groups))
	for _, g := range groups {
		h := g.Home
		ks = append(ks, h.Group(g.ID), h.GroupOpen(g.ID), h.GroupOrder(g.ID), h.GroupHeld(g.ID), h.GroupConts(g.ID))
		args = append(args, g.String(), g.ID)
	}
	ks = append(ks, q.Stats(), q.StatsHistory(), q.SchedRetrying(), q.SchedHeld())
	for _, g := range groups {
		ks = append(ks, g.Home.GroupProgress(g.ID)) // the group's lifetime and sums
	}
	ks, args = declareParts(q, items, ks, args)
	lo, hi := entryRange(items)
	args = append(args, lo, hi) // the range one XPENDING fences the batch over
	res, err := script.Complete.Run(ctx, rdb, ks, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("record outcomes in queue %q: %w", q.Name, err)
	}
	out := make([]Applied, len(res))
	for i, r := range res {
		out[i] = Applied(r)
	}
	return out, nil
}

// Lease is an attempt token: an entry and its delivery count.
type Lease struct {
	EntryID    string
	Deliveries int64
}

// Beat is heartbeat.lua's answer for one lease.
type Beat int

// The answers of heartbeat.lua.
const (
	BeatLost      Beat = 0
	BeatOK        Beat = 1
	BeatCancelled Beat = 2 // extended, but a cancel was requested
)

// Heartbeat extends the leases of the tasks with keys tasks.
func Heartbeat(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, leases []Lease, tasks []string) ([]Beat, error) {
	return HeartbeatWithin(ctx, rdb, q, consumer, 0, leases, tasks)
}

// HeartbeatWithin is Heartbeat that extends no lease whose entry has been
// idle for leaseMs or more (it lapsed; 0: no bound), reporting it lost.
func HeartbeatWithin(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, leaseMs int64, leases []Lease, tasks []string) ([]Beat, error) {
	ks := make([]string, 0, 1+len(tasks))
	ks = append(ks, q.Stream())
	for _, t := range tasks {
		ks = append(ks, q.Task(t))
	}
	args := make([]any, 0, 3+2*len(leases))
	args = append(args, keys.Group, consumer, leaseMs)
	for _, l := range leases {
		args = append(args, l.EntryID, l.Deliveries)
	}
	res, err := script.Heartbeat.Run(ctx, rdb, ks, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("heartbeat in queue %q: %w", q.Name, err)
	}
	out := make([]Beat, len(res))
	for i, r := range res {
		out[i] = Beat(r)
	}
	return out, nil
}

// Claimed is an entry taken over from a consumer whose lease ended.
type Claimed struct {
	EntryID    string
	Envelope   []byte // empty when the entry has no 'm' field
	Deliveries int64
}

// Reclaim runs XAUTOCLAIM from cursor for up to count entries idle for at
// least leaseMs. It returns the next cursor ("0-0" after a full pass). opID
// names this call (fresh for each call): a resend of it reports what the
// first run took, from a marker that lives markerTTL (MarkerTTL of the
// client).
func Reclaim(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, leaseMs int64, cursor string, count int, opID string, markerTTL time.Duration) (next string, claimed []Claimed, err error) {
	v, err := script.Reclaim.Run(ctx, rdb, []string{q.Stream(), q.Op(opID)}, keys.Group, consumer, leaseMs, cursor, count, markerTTL.Milliseconds()).Slice()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			return "0-0", nil, nil
		}
		return cursor, nil, fmt.Errorf("reclaim in queue %q: %w", q.Name, err)
	}
	next, _ = v[0].(string)
	return next, parseClaimed(v[1]), nil
}

func parseClaimed(v any) []Claimed {
	var claimed []Claimed
	rows, _ := v.([]any)
	for _, r := range rows {
		f, _ := r.([]any)
		if len(f) != 3 {
			continue
		}
		id, _ := f[0].(string)
		env, _ := f[1].(string)
		dlv, _ := f[2].(int64)
		claimed = append(claimed, Claimed{EntryID: id, Envelope: []byte(env), Deliveries: dlv})
	}
	return claimed
}

// OwnPending lists up to count entries pending under consumer in q, idle for
// at least minIdleMs, with their tokens and idle times: deliveries to this
// consumer whose reply may have been lost on the way (see Adopt).
func OwnPending(ctx context.Context, rdb redis.Cmdable, q keys.Queue, consumer string, minIdleMs int64, count int) ([]Pending, error) {
	ps, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.Stream(), Group: keys.Group,
		Idle: time.Duration(minIdleMs) * time.Millisecond, Start: "-", End: "+", Count: int64(count), Consumer: consumer}).Result()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			return nil, nil
		}
		return nil, fmt.Errorf("pending entries in queue %q: %w", q.Name, err)
	}
	out := make([]Pending, len(ps))
	for i, p := range ps {
		out[i] = Pending{EntryID: p.ID, Deliveries: p.RetryCount, IdleMs: p.Idle.Milliseconds()}
	}
	return out, nil
}

// Pending is an entry pending under a consumer.
type Pending struct {
	EntryID    string
	Deliveries int64
	IdleMs     int64
}

// Adopt takes up again entries pending under consumer that it holds under
// the given tokens, idle for at least minIdleMs and less than leaseMs: it
// resets their idle time (their lease starts now) and keeps their delivery
// counts. It reports those it took, with their envelopes.
func Adopt(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, minIdleMs, leaseMs int64, leases []Lease) ([]Claimed, error) {
	args := make([]any, 0, 4+2*len(leases))
	args = append(args, keys.Group, consumer, minIdleMs, leaseMs)
	for _, l := range leases {
		args = append(args, l.EntryID, l.Deliveries)
	}
	v, err := script.Adopt.Run(ctx, rdb, []string{q.Stream()}, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("adopt entries in queue %q: %w", q.Name, err)
	}
	return parseClaimed(v), nil
}

// Forward moves due scheduled tasks of the queue into its stream. It returns
// how many moved, the next due time (ms, -1 for none) and Redis' now (ms).
func Forward(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, batch int64) (moved int, nextDue, now int64, err error) {
	cands, err := rdb.ZRange(ctx, q.Scheduled(), 0, batch-1).Result()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read scheduled tasks of queue %q: %w", q.Name, err)
	}
	ks := make([]string, 0, 4+len(cands))
	ks = append(ks, q.Scheduled(), q.Stream(), q.SchedRetrying(), q.SchedHeld())
	args := make([]any, len(cands))
	for i, c := range cands {
		ks = append(ks, q.Task(c))
		args[i] = c
	}
	res, err := script.Forward.Run(ctx, rdb, ks, args...).Int64Slice()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("move due tasks of queue %q: %w", q.Name, err)
	}
	return int(res[0]), res[1], res[2], nil
}

// Housekeep trims acknowledged stream history and removes empty consumers
// idle for longer than consumerIdleMs.
func Housekeep(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumerIdleMs int64) (trimmed, removed int64, err error) {
	res, err := script.Housekeep.Run(ctx, rdb, []string{q.Stream(), q.Stats()}, keys.Group, consumerIdleMs).Int64Slice()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			return 0, 0, nil
		}
		return 0, 0, fmt.Errorf("housekeeping of queue %q: %w", q.Name, err)
	}
	return res[0], res[1], nil
}

// CapDead removes the oldest dead tasks beyond max (at most 1000 per call).
func CapDead(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, max int64) (int, error) {
	n, err := rdb.ZCard(ctx, q.Dead()).Result()
	if err != nil || n <= max {
		return 0, err
	}
	extra := min(n-max, 1000)
	victims, err := rdb.ZRange(ctx, q.Dead(), 0, extra-1).Result()
	if err != nil || len(victims) == 0 {
		return 0, err
	}
	if _, err := PurgeDead(ctx, rdb, q, victims); err != nil {
		return 0, fmt.Errorf("cap dead letters of queue %q: %w", q.Name, err)
	}
	return len(victims), nil
}

// TaskState is state.lua's answer.
type TaskState struct {
	State      string // '' when unknown
	EntryID    string
	Attempt    int
	Result     []byte
	Error      string
	Envelope   []byte
	FinishedMs int64
	Deliveries int64
}

// Unwatch removes a watcher registered by State.
func Unwatch(ctx context.Context, rdb redis.Cmdable, q keys.Queue, watcher string) error {
	return rdb.ZRem(ctx, q.Hooks(), "w:"+watcher).Err()
}

// WatchTTL is how long one registration of a watcher lasts; Outcome renews
// it at half that while it waits.
const WatchTTL = 10 * time.Minute

// State reads a task's state. With a watcher id it also marks an unfinished
// task watched and registers the watcher (see state.lua); the caller must
// call Unwatch with the same id when it stops waiting.
func State(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, watcher string) (TaskState, error) {
	ks, item := stateKeys(q, key)
	v, err := script.State.Run(ctx, rdb, ks, keys.Group, key, watcher, WatchTTL.Milliseconds(), item).Slice()
	if err != nil {
		return TaskState{}, fmt.Errorf("read state of task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return parseState(v), nil
}

// stateKeys are state.lua's keys for key, and for a batch item its index
// ("" otherwise).
func stateKeys(q keys.Queue, key string) ([]string, string) {
	batch, idx, ok := keys.BatchOfItem(key)
	if !ok {
		t := q.Task(key)
		return []string{t, q.Stream(), q.Result(key), q.Hooks(), t, t, t, t}, ""
	}
	return []string{q.Task(key), q.Stream(), q.Result(key), q.Hooks(), q.Task(batch), q.BatchResults(batch), q.BatchMarked(batch), q.BatchItems(batch)}, idx
}

func parseState(v []any) TaskState {
	var ts TaskState
	ts.State, _ = v[0].(string)
	if ts.State == "" || len(v) < 8 {
		return TaskState{}
	}
	ts.EntryID, _ = v[1].(string)
	if a, _ := v[2].(string); a != "" {
		ts.Attempt, _ = strconv.Atoi(a)
	}
	if r, _ := v[3].(string); r != "" {
		ts.Result = []byte(r)
	}
	ts.Error, _ = v[4].(string)
	if e, _ := v[5].(string); e != "" {
		ts.Envelope = []byte(e)
	}
	if f, _ := v[6].(string); f != "" {
		ts.FinishedMs, _ = strconv.ParseInt(f, 10, 64)
	}
	ts.Deliveries, _ = v[7].(int64)
	return ts
}

// States reads the states of many tasks (ids "<queue>/<key>") in one
// pipeline; an unknown task has State "".
func States(ctx context.Context, rdb redis.UniversalClient, ids []string) ([]TaskState, error) {
	out := make([]TaskState, len(ids))
	for try := 0; ; try++ {
		cmds := make([]*redis.Cmd, len(ids))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				qn, key, err := keys.SplitTaskID(id)
				if err != nil {
					return err
				}
				q := keys.ForQueue(qn)
				ks, item := stateKeys(q, key)
				cmds[i] = script.State.EvalSha(ctx, p, ks, keys.Group, key, "", WatchTTL.Milliseconds(), item)
			}
			return nil
		})
		if err != nil && try == 0 && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			if err := script.Load(ctx, rdb); err != nil {
				return nil, err
			}
			continue
		}
		for i, c := range cmds {
			v, cerr := c.Slice()
			if cerr != nil {
				if strings.HasPrefix(cerr.Error(), "NOGROUP") {
					continue
				}
				return nil, fmt.Errorf("read state of task %s: %w", ids[i], cerr)
			}
			out[i] = parseState(v)
		}
		return out, nil
	}
}

// RetryDead moves a dead task back into the stream with envelope env.
// It returns false when the task is not dead.
func RetryDead(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, env []byte, nonce, partition string) (bool, error) {
	ks := []string{q.Dead(), q.Stream(), q.Task(key), q.Stats()}
	if partition != "" {
		ks = append(ks, q.Partition(partition))
	}
	ks = append(ks, q.Progress(key)) // the dead run's report goes
	n, err := script.RetryDead.Run(ctx, rdb, ks, key, env, nonce, partition).Int64()
	if err != nil {
		return false, fmt.Errorf("retry dead task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return n == 1, nil
}

// PurgeDead deletes the dead tasks with keys ks that are still dead; it
// returns how many it deleted (a resend of the call, under its op marker,
// answers the same).
func PurgeDead(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, ks []string) (int, error) {
	allKeys := make([]string, 0, 2+len(ks))
	allKeys = append(allKeys, q.Dead(), q.Op("pd."+newOpID()))
	args := make([]any, 1+len(ks))
	args[0] = MarkerTTL(rdb).Milliseconds()
	for i, k := range ks {
		allKeys = append(allKeys, q.Task(k))
		args[1+i] = k
	}
	for _, k := range ks {
		allKeys = append(allKeys, q.Progress(k)) // it goes with the task
	}
	n, err := script.PurgeDead.Run(ctx, rdb, allKeys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("purge dead tasks of queue %q: %w", q.Name, err)
	}
	return n, nil
}

// MarkDue records in the due index that queue has a task due at dueMs, and
// wakes the coordinators when that is earlier than the index held. The
// mark's op id makes a resend of it answer as its first run did.
func MarkDue(ctx context.Context, rdb redis.UniversalClient, queue string, dueMs int64) error {
	n, err := script.DueMark.Run(ctx, rdb, []string{keys.DueIndex, keys.DueGen}, queue, dueMs, newOpID()).Int64()
	if err != nil {
		return fmt.Errorf("mark queue %q due: %w", queue, err)
	}
	if n == 1 {
		if err := rdb.Publish(ctx, keys.DueWake, dueMs).Err(); err != nil {
			return fmt.Errorf("wake the coordinators: %w", err)
		}
	}
	return nil
}

// DueGens reads the generations of queues in the due index (see
// UpdateDue), "0" for one never marked.
func DueGens(ctx context.Context, rdb redis.Cmdable, queues []string) ([]string, error) {
	if len(queues) == 0 {
		return nil, nil
	}
	v, err := rdb.HMGet(ctx, keys.DueGen, queues...).Result()
	if err != nil {
		return nil, fmt.Errorf("read due generations: %w", err)
	}
	out := make([]string, len(v))
	for i, x := range v {
		out[i], _ = x.(string)
		if out[i] == "" {
			out[i] = "0"
		}
	}
	return out, nil
}

// UpdateDue sets queue's entry in the due index to nextMs (-1: none) if no
// mark came since gen was read (DueGens), before the queue's tasks were.
func UpdateDue(ctx context.Context, rdb redis.Scripter, queue, gen string, nextMs int64) error {
	if err := script.DueUpdate.Run(ctx, rdb, []string{keys.DueIndex, keys.DueGen}, queue, gen, nextMs).Err(); err != nil {
		return fmt.Errorf("update due index of queue %q: %w", queue, err)
	}
	return nil
}
