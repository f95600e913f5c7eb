package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Page sizes of Tasks.
const (
	defaultLimit = 50
	maxLimit     = 1000
)

// ErrBadCursor is returned by Tasks for a cursor it did not hand out.
var ErrBadCursor = errors.New("inspect: bad cursor")

// tasks lists one page of queue's tasks in opts.State (Tasks). Where each
// state is read:
//
//   - waiting: the stream's entries after the workers' group's last read
//     one, oldest first (the cursor is the last entry id shown);
//   - running: the group's pending entries (XPENDING), oldest first, with
//     their entries;
//   - retrying and held: the indexes of the scheduled set that the
//     scripts keep for them (sched:r, sched:h), soonest due first, the
//     cursor a rank; held goes on (cursors "g<rank>") to the InvokeAll
//     members held in the groups homed in the queue, wherever they run,
//     through its index of groups. Tasks waiting behind others of their
//     partition key are counted in QueueInfo.Held but not listed (nothing
//     indexes a queue's partition keys; Task shows them one by one);
//   - scheduled: the scheduled set less the members of those two indexes
//     (a page can come short of Limit: they are read and left out);
//   - dead: the dead-letter set, the oldest first.
//
// A sharded queue's name lists its physical queues one after the other
// (shardedTasks); a shard's name that shard alone.
func (i *Inspector) tasks(ctx context.Context, queue string, opts ListOpts) (TaskPage, error) {
	if err := keys.ValidatePhysicalQueue(queue); err != nil {
		return TaskPage{}, err
	}
	limit := opts.Limit
	switch {
	case limit == 0:
		limit = defaultLimit
	case limit < 0 || limit > maxLimit:
		return TaskPage{}, fmt.Errorf("inspect: ListOpts.Limit is %d; want 0 (%d) to %d", limit, defaultLimit, maxLimit)
	}
	if !keys.IsShard(queue) {
		parts, err := i.physical(ctx, queue)
		if err != nil {
			return TaskPage{}, err
		}
		if len(parts) > 1 {
			return i.shardedTasks(ctx, parts, opts)
		}
	}
	return i.physicalTasks(ctx, queue, opts, limit)
}

// physicalTasks lists one page of one physical queue's tasks (tasks).
func (i *Inspector) physicalTasks(ctx context.Context, queue string, opts ListOpts, limit int) (TaskPage, error) {
	q := keys.ForQueue(queue)
	v := &view{i: i, q: q}
	var page TaskPage
	var err error
	switch opts.State {
	case StateWaiting:
		page, err = v.waiting(ctx, opts.Cursor, limit)
	case StateRunning:
		page, err = v.running(ctx, opts.Cursor, limit)
	case StateScheduled, StateRetrying, StateHeld:
		page, err = v.scheduled(ctx, opts.State, opts.Cursor, limit)
	case StateDead:
		page, err = v.dead(ctx, opts.Cursor, limit)
	default:
		return TaskPage{}, fmt.Errorf("inspect: tasks in state %q cannot be listed; want waiting, running, scheduled, retrying, held or dead", opts.State)
	}
	if err != nil {
		return TaskPage{}, err
	}
	for j := range page.Tasks {
		page.Tasks[j].lastAttemptTimes()
	}
	if opts.Kind != "" {
		page.Tasks = slices.DeleteFunc(page.Tasks, func(t TaskInfo) bool { return t.Kind != opts.Kind })
	}
	if err := v.i.fillProgress(ctx, page.Tasks); err != nil {
		return TaskPage{}, err
	}
	if page.Tasks == nil {
		page.Tasks = []TaskInfo{}
	}
	return page, nil
}

// view reads one queue's tasks, and once what the fleet serves.
type view struct {
	i *Inspector
	q keys.Queue

	fleetRead bool
	serving   bool            // a live worker serves the queue
	kinds     map[string]bool // the kinds its live workers handle
	paused    bool
}

// fleet reads which live workers serve the queue, for Why.
func (v *view) fleet(ctx context.Context) {
	if v.fleetRead {
		return
	}
	v.fleetRead = true
	v.kinds = map[string]bool{}
	ws, err := store.Workers(ctx, v.i.rdb)
	if err != nil {
		return
	}
	// Workers register the queues they were configured with: a shard is
	// served by the workers of its sharded queue, and paused with it.
	served, flags := v.q.Name, []keys.Queue{v.q}
	if lq, _, ok := keys.ParseShard(v.q.Name); ok {
		served, flags = lq, append(flags, keys.ForQueue(lq))
	}
	for _, w := range ws {
		if _, ok := w.Queues[served]; ok {
			v.serving = true
			for _, k := range w.Kinds {
				v.kinds[k] = true
			}
		}
	}
	if fs, err := store.PausedFlags(ctx, v.i.rdb, flags); err == nil {
		v.paused = slices.Contains(fs, true)
	}
}

// whyWaits says why a task of kind that waits to be read is not taken.
func (v *view) whyWaits(ctx context.Context, kind string) string {
	v.fleet(ctx)
	switch {
	case v.paused:
		return "queue " + v.q.Name + " is paused"
	case !v.serving:
		return "no worker serves queue " + v.q.Name
	case kind != "" && !v.kinds[kind]:
		return "no worker serves kind " + kind
	}
	return ""
}

func (v *view) waiting(ctx context.Context, cursor string, limit int) (TaskPage, error) {
	after, err := store.LastDelivered(ctx, v.i.rdb, v.q)
	if err != nil {
		return TaskPage{}, err
	}
	if cursor != "" {
		if !keys.IsEntryID(cursor) {
			return TaskPage{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
		}
		if cmpID(cursor, after) > 0 {
			after = cursor
		}
	}
	es, err := store.StreamAfter(ctx, v.i.rdb, v.q, after, limit)
	if err != nil {
		return TaskPage{}, err
	}
	var page TaskPage
	for _, e := range es {
		t := v.fromEntry(e, StateWaiting)
		t.Why = v.whyWaits(ctx, t.Kind)
		page.Tasks = append(page.Tasks, t)
	}
	if len(es) == limit {
		page.Next = es[len(es)-1].EntryID
	}
	return page, nil
}

func (v *view) running(ctx context.Context, cursor string, limit int) (TaskPage, error) {
	if cursor != "" && !keys.IsEntryID(cursor) {
		return TaskPage{}, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
	}
	now, err := store.Time(ctx, v.i.rdb)
	if err != nil {
		return TaskPage{}, err
	}
	ps, err := store.PendingAfter(ctx, v.i.rdb, v.q, cursor, limit)
	if err != nil {
		return TaskPage{}, err
	}
	var page TaskPage
	for _, p := range ps {
		t := v.fromEntry(p.StreamTask, StateRunning)
		t.Worker = p.Consumer
		t.Deliveries = int(p.Deliveries)
		t.LeasedAt = now.Add(-time.Duration(p.IdleMs) * time.Millisecond)
		if !p.Found {
			t.Why = "its entry is gone from the stream (trimmed or deleted while leased)"
		}
		page.Tasks = append(page.Tasks, t)
	}
	if len(ps) == limit {
		page.Next = ps[len(ps)-1].EntryID
	}
	return page, nil
}

// offsetCursor parses a cursor that is a rank.
func offsetCursor(cursor string) (int, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(cursor)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: %q", ErrBadCursor, cursor)
	}
	return n, nil
}

func (v *view) scheduled(ctx context.Context, state State, cursor string, limit int) (TaskPage, error) {
	if state == StateHeld && strings.HasPrefix(cursor, "g") {
		return v.heldInGroups(ctx, cursor[1:], limit)
	}
	off, err := offsetCursor(cursor)
	if err != nil {
		return TaskPage{}, err
	}
	// Retrying and held tasks have indexes of their own (the members of
	// the scheduled set that wait out a backoff, or were parked); the
	// scheduled ones are the rest of the set.
	set := v.q.Scheduled()
	switch state {
	case StateRetrying:
		set = v.q.SchedRetrying()
	case StateHeld:
		set = v.q.SchedHeld()
	}
	zs, err := store.ZPage(ctx, v.i.rdb, set, off, limit, false)
	if err != nil {
		return TaskPage{}, err
	}
	ks := make([]string, len(zs))
	for j, z := range zs {
		ks[j] = z.Member
	}
	var indexed [][]bool
	if state == StateScheduled {
		if indexed, err = store.InSets(ctx, v.i.rdb, []string{v.q.SchedRetrying(), v.q.SchedHeld()}, ks); err != nil {
			return TaskPage{}, err
		}
	}
	rs, err := store.TaskRecords(ctx, v.i.rdb, v.q, ks)
	if err != nil {
		return TaskPage{}, err
	}
	var page TaskPage
	for j, r := range rs {
		if indexed != nil && (indexed[0][j] || indexed[1][j]) {
			continue // listed as retrying or held
		}
		t := v.fromRecord(r)
		t.NextRunAt = time.UnixMilli(zs[j].Score)
		t.State = state
		if state == StateHeld {
			if err := v.whyHeld(ctx, &t); err != nil {
				return TaskPage{}, err
			}
		}
		page.Tasks = append(page.Tasks, t)
	}
	switch {
	case len(zs) == limit:
		page.Next = strconv.Itoa(off + limit)
	case state == StateHeld:
		// On to the InvokeAll members held in the queue's groups.
		page.Next = "g0"
	}
	return page, nil
}

// heldInGroups lists the InvokeAll members held in the groups homed in the
// queue, wherever they run (as QueueInfo.Held counts them). cursor is a
// rank among the held members of those groups.
func (v *view) heldInGroups(ctx context.Context, cursor string, limit int) (TaskPage, error) {
	off, err := offsetCursor(cursor)
	if err != nil {
		return TaskPage{}, err
	}
	ms, more, err := store.HeldMembers(ctx, v.i.rdb, v.q, off, limit)
	if err != nil {
		return TaskPage{}, err
	}
	// The members' records, one pipeline per queue they are in.
	byQueue := map[string][]string{}
	for _, m := range ms {
		if qn, key, err := keys.SplitTaskID(m.ID); err == nil {
			byQueue[qn] = append(byQueue[qn], key)
		}
	}
	recs := map[string]store.TaskRecord{}
	for qn, ks := range byQueue {
		rs, err := store.TaskRecords(ctx, v.i.rdb, keys.ForQueue(qn), ks)
		if err != nil {
			return TaskPage{}, err
		}
		for _, r := range rs {
			recs[keys.TaskID(qn, r.Key)] = r
		}
	}
	var page TaskPage
	for _, m := range ms {
		r, ok := recs[m.ID]
		if !ok || r.State != "waiting" {
			continue // released meanwhile
		}
		qn, _, _ := keys.SplitTaskID(m.ID)
		t := (&view{i: v.i, q: keys.ForQueue(qn)}).fromRecord(r)
		t.State, t.Why = StateHeld, "held by "+m.Group.String()+" until it has a free slot"
		page.Tasks = append(page.Tasks, t)
	}
	if more {
		page.Next = "g" + strconv.Itoa(off+len(ms))
	}
	return page, nil
}

// whyHeld says why a parked task waits: its turn at a rate key, a
// limit's slot (its waiters list it), or a worker with its kind's handler.
func (v *view) whyHeld(ctx context.Context, t *TaskInfo) error {
	if t.RateKey != "" && t.rateTurn > 0 {
		t.Why = "waiting for its turn at rate key " + t.RateKey
		return nil
	}
	scopes := []string{"queue:" + logicalName(v.q.Name)} // one limiter for all shards
	if t.Kind != "" {
		scopes = append(scopes, "kind:"+t.Kind)
	}
	in, err := store.LimitWaiting(ctx, v.i.rdb, scopes, t.ID)
	if err != nil {
		return err
	}
	for j, ok := range in {
		if ok {
			t.Why = "parked by limit " + scopes[j]
			return nil
		}
	}
	if w := v.whyWaits(ctx, t.Kind); w != "" {
		t.Why = w
	} else if t.parked > 0 {
		t.Why = "handed back: the worker that read it had no handler for kind " + t.Kind
	}
	return nil
}

// classify sets the state and Why of one task of the scheduled set
// (Task): retrying or held when the index of either lists it, else
// scheduled.
func (v *view) classify(ctx context.Context, t *TaskInfo, key string) error {
	in, err := store.InSets(ctx, v.i.rdb, []string{v.q.SchedRetrying(), v.q.SchedHeld()}, []string{key})
	if err != nil {
		return err
	}
	switch {
	case in[0][0]:
		t.State = StateRetrying
	case in[1][0]:
		t.State = StateHeld
		return v.whyHeld(ctx, t)
	default:
		t.State = StateScheduled
	}
	return nil
}

func (v *view) dead(ctx context.Context, cursor string, limit int) (TaskPage, error) {
	off, err := offsetCursor(cursor)
	if err != nil {
		return TaskPage{}, err
	}
	zs, err := store.ZPage(ctx, v.i.rdb, v.q.Dead(), off, limit, false)
	if err != nil {
		return TaskPage{}, err
	}
	ks := make([]string, len(zs))
	for j, z := range zs {
		ks[j] = z.Member
	}
	rs, err := store.TaskRecords(ctx, v.i.rdb, v.q, ks)
	if err != nil {
		return TaskPage{}, err
	}
	var page TaskPage
	for j, r := range rs {
		t := v.fromRecord(r)
		t.State = StateDead
		if t.FinishedAt.IsZero() {
			t.FinishedAt = time.UnixMilli(zs[j].Score)
		}
		page.Tasks = append(page.Tasks, t)
	}
	if len(zs) == limit {
		page.Next = strconv.Itoa(off + limit)
	}
	return page, nil
}

// fromEntry is a task as its stream entry shows it.
func (v *view) fromEntry(e store.StreamTask, state State) TaskInfo {
	t := TaskInfo{Queue: v.q.Name, State: state}
	key := e.EntryID
	if e.Envelope == nil {
		t.Why = "malformed entry: no 'm' field"
	} else if env, err := codec.DecodeEnvelope(e.Envelope); err != nil {
		t.Why = "malformed entry: " + err.Error()
	} else {
		fill(&t, env)
		if env.Key != "" {
			key = env.Key
		}
	}
	t.ID = keys.TaskID(v.q.Name, key)
	if t.EnqueuedAt.IsZero() {
		t.EnqueuedAt = idTime(e.EntryID)
	}
	if t.Group == "" {
		t.Group = e.Group
	}
	return t
}

// fromRecord is a task as its record shows it.
func (v *view) fromRecord(r store.TaskRecord) TaskInfo {
	t := TaskInfo{ID: keys.TaskID(v.q.Name, r.Key), Queue: v.q.Name, Attempt: r.Attempt, LastError: r.Error}
	if r.FinMs > 0 {
		t.FinishedAt = time.UnixMilli(r.FinMs)
	}
	if r.Envelope != nil {
		if env, err := codec.DecodeEnvelope(r.Envelope); err == nil {
			a := t.Attempt
			fill(&t, env)
			if a > 0 && r.State != "retrying" {
				t.Attempt = a // the attempt that ended it
			}
		} else {
			t.Why = "malformed envelope: " + err.Error()
		}
	}
	if t.EnqueuedAt.IsZero() {
		if keys.IsEntryID(r.Key) {
			t.EnqueuedAt = idTime(r.Key)
		} else if r.Entry != "" {
			t.EnqueuedAt = idTime(r.Entry)
		}
	}
	if t.Partition == "" {
		t.Partition = r.Part
	}
	return t
}

// fill copies what an envelope tells into t.
func fill(t *TaskInfo, env *codec.Envelope) {
	t.Kind, t.Attempt, t.MaxAttempts = env.Kind, env.Attempt, env.MaxAttempts
	t.Group, t.Parent, t.Partition, t.RateKey = env.Group, env.Parent, env.Partition, env.RateKey
	t.rateTurn, t.parked, t.prev = env.RateTurn, env.Parked, env.Prev
	if env.EnqueuedMs > 0 {
		t.EnqueuedAt = time.UnixMilli(env.EnqueuedMs)
	} else if keys.IsEntryID(env.Key) {
		t.EnqueuedAt = idTime(env.Key)
	}
	if len(env.Meta) > 0 {
		t.Meta = make(map[string]string, len(env.Meta)/2)
		for j := 0; j+1 < len(env.Meta); j += 2 {
			t.Meta[env.Meta[j]] = env.Meta[j+1]
		}
	}
	for _, a := range env.History {
		t.History = append(t.History, AttemptInfo{Attempt: a.Attempt, StartedAt: msTime(a.StartedMs), FinishedAt: msTime(a.FinishedMs),
			Error: a.Error, Worker: a.Worker})
	}
	if n := len(t.History); n > 0 {
		last := t.History[n-1]
		if t.LastError == "" {
			t.LastError = last.Error
		}
		if last.Attempt == env.Attempt {
			// The attempt that ended it (a dead task's last).
			t.StartedAt = last.StartedAt
		}
	}
	if len(env.Payload) > 0 {
		t.Args = toJSON(env.Payload)
	}
}

// lastAttemptTimes gives a retrying task the start and end of its last
// attempt, the one that failed (its History's last, when kept): the task
// record keeps no times of its own between attempts.
func (t *TaskInfo) lastAttemptTimes() {
	if t.State != StateRetrying || len(t.History) == 0 {
		return
	}
	if last := t.History[len(t.History)-1]; last.Attempt == t.Attempt-1 {
		t.StartedAt, t.FinishedAt = last.StartedAt, last.FinishedAt
	}
}

// toJSON turns msgpack bytes into JSON by the JSON rule (codec.ToJSON,
// which passes them through the codec gate first): the JSON a client of the
// HTTP API would send for the same value. Bytes that do not decode come out
// as a JSON string saying so.
func toJSON(b []byte) json.RawMessage {
	out, err := codec.ToJSON(nil, b)
	if err != nil {
		if errors.Is(err, codec.ErrMalformed) {
			out, _ = json.Marshal("undecodable: " + err.Error())
		} else {
			out, _ = json.Marshal("not representable as JSON: " + err.Error())
		}
	}
	return out
}

// idTime is the time in an entry id ("<ms>-<seq>"), zero if none.
func idTime(id string) time.Time {
	ms, _, ok := strings.Cut(id, "-")
	if !ok || !keys.IsEntryID(id) {
		return time.Time{}
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return msTime(n)
}

// cmpID compares two entry ids.
func cmpID(a, b string) int {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	an, _ := strconv.ParseUint(am, 10, 64)
	bn, _ := strconv.ParseUint(bm, 10, 64)
	if an != bn {
		if an < bn {
			return -1
		}
		return 1
	}
	asq, _ := strconv.ParseUint(as, 10, 64)
	bsq, _ := strconv.ParseUint(bs, 10, 64)
	switch {
	case asq < bsq:
		return -1
	case asq > bsq:
		return 1
	}
	return 0
}
