package inspect

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// task reads one task in whatever state it is (Task): its state as the
// client's Task handle reads it (state.lua, read only), then what its
// state needs besides: the lease of a running task, the due time and the
// reason of a scheduled one.
//
// An id of a sharded queue with a key of the caller's ("uploads/K", as
// EnqueueOpts.ID made it) names the task where an enqueue with that id
// placed it, as client.Client.Task resolves it: on the shard of K, or, while
// an earlier layout of the queue settles (a declaration of a queue in use,
// a growth), where it was placed then (store.ShardSet.Place); when no task
// is in any of those, the plain queue's. The answer's ID and Queue name the
// queue where it was found.
func (i *Inspector) task(ctx context.Context, id string) (TaskInfo, error) {
	qn, key, err := keys.SplitTaskID(id)
	if err != nil {
		return TaskInfo{}, err
	}
	if !keys.IsShard(qn) && !keys.IsEntryID(key) {
		s, ok, nowMs, err := store.ShardsAt(ctx, i.rdb, qn)
		if err != nil {
			return TaskInfo{}, err
		}
		if ok {
			// The key a task id is placed by (engine.Engine.Resolve): a
			// batch item goes with its batch.
			by := key
			if b, _, isItem := keys.BatchOfItem(key); isItem {
				by = b
			}
			target, earlier := s.Place(by, nowMs)
			for _, q := range append([]string{target}, earlier...) {
				if q == qn {
					continue // read last, below
				}
				t, err := i.physicalTask(ctx, keys.TaskID(q, key))
				if err != nil || t.State != StateUnknown {
					return t, err
				}
			}
		}
	}
	return i.physicalTask(ctx, id)
}

// physicalTask reads the task id names, on the physical queue it names.
func (i *Inspector) physicalTask(ctx context.Context, id string) (TaskInfo, error) {
	qn, key, err := keys.SplitTaskID(id)
	if err != nil {
		return TaskInfo{}, err
	}
	q := keys.ForQueue(qn)
	v := &view{i: i, q: q}
	ts, err := store.State(ctx, i.rdb, q, key, "")
	if err != nil {
		return TaskInfo{}, err
	}
	t := TaskInfo{ID: id, Queue: qn, Attempt: ts.Attempt, LastError: ts.Error}
	if ts.Envelope != nil {
		if env, err := codec.DecodeEnvelope(ts.Envelope); err == nil {
			a := t.Attempt
			fill(&t, env)
			if a > 0 && ts.State != "retrying" {
				t.Attempt = a
			}
		} else {
			t.Why = "malformed envelope: " + err.Error()
		}
	}
	if ts.FinishedMs > 0 {
		t.FinishedAt = time.UnixMilli(ts.FinishedMs)
	}
	if t.EnqueuedAt.IsZero() {
		if keys.IsEntryID(key) {
			t.EnqueuedAt = idTime(key)
		} else if ts.EntryID != "" {
			t.EnqueuedAt = idTime(ts.EntryID)
		}
	}
	switch ts.State {
	case "":
		t.State = StateUnknown
	case "succeeded":
		t.State = StateSucceeded
		if len(ts.Result) > 0 {
			t.Result = toJSON(ts.Result)
		}
	case "cancelled":
		t.State = StateCancelled
	case "dead":
		t.State = StateDead
	case "running":
		t.State = StateRunning
		t.Deliveries = int(ts.Deliveries)
		p, ok, err := store.PendingEntry(ctx, i.rdb, q, ts.EntryID)
		if err != nil {
			return TaskInfo{}, err
		}
		if ok {
			now, err := store.Time(ctx, i.rdb)
			if err != nil {
				return TaskInfo{}, err
			}
			t.Worker = p.Consumer
			t.LeasedAt = now.Add(-time.Duration(p.IdleMs) * time.Millisecond)
		}
	case "pending":
		t.State = StateWaiting
		t.Why = v.whyWaits(ctx, t.Kind)
	case "scheduled", "retrying":
		due, ok, err := store.ScheduledAt(ctx, i.rdb, q, key)
		if err != nil {
			return TaskInfo{}, err
		}
		if ok {
			t.NextRunAt = time.UnixMilli(due)
		}
		if err := v.classify(ctx, &t, key); err != nil {
			return TaskInfo{}, err
		}
	case "waiting":
		rs, err := store.TaskRecords(ctx, i.rdb, q, []string{key})
		if err != nil {
			return TaskInfo{}, err
		}
		switch {
		case rs[0].Part != "":
			t.State, t.Partition = StateHeld, rs[0].Part
			t.Why = "waiting for the tasks before it of partition key " + rs[0].Part
		case t.prev != "":
			t.State, t.Why = StateWaiting, "starts once "+t.prev+" ended"
		case t.Group != "":
			t.State, t.Why = StateHeld, "held by "+t.Group+" until it has a free slot"
		default:
			t.State = StateWaiting
		}
	default:
		t.State = State(ts.State)
	}
	t.lastAttemptTimes()
	if t.State != StateUnknown {
		one := []TaskInfo{t}
		if err := i.fillProgress(ctx, one); err != nil {
			return TaskInfo{}, err
		}
		t = one[0]
	}
	return t, nil
}
