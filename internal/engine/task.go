package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// The end states of a task, as Redis records them.
const (
	StateSucceeded = "succeeded"
	StateCancelled = "cancelled"
	StateDead      = "dead"
	StateWaiting   = "waiting"
)

// Final reports whether state is an end state.
func Final(state string) bool {
	return state == StateSucceeded || state == StateCancelled || state == StateDead
}

// Read returns a snapshot of the task r names; its State is "" for an
// unknown task.
func (e *Engine) Read(ctx context.Context, r Ref) (store.TaskState, error) {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return store.TaskState{}, err
	}
	return store.State(ctx, e.rdb, keys.ForQueue(r.Queue), r.Key, "")
}

// Outcome blocks until the task r names ended, or ctx is done, and returns
// its final state. It waits on the notification of the worker that ends the
// task (Redis pub/sub), not by polling: it reads the state again only after
// its subscription reconnected, and when it renews its registration as a
// watcher (every store.WatchTTL/2). An unknown task is ErrNotFound; a
// closed engine ErrClosed.
func (e *Engine) Outcome(ctx context.Context, r Ref) (store.TaskState, error) {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return store.TaskState{}, err
	}
	q := keys.ForQueue(r.Queue)
	w, err := e.hub.watch(ctx, q.Done(), r.Key)
	if err != nil {
		return store.TaskState{}, err
	}
	defer e.hub.unwatch(q.Done(), r.Key, w)
	watcher := newOpID()
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = store.Unwatch(uctx, e.rdb, q, watcher)
	}()
	renew := time.NewTicker(store.WatchTTL / 2)
	defer renew.Stop()
	for {
		ts, err := store.State(ctx, e.rdb, q, r.Key, watcher)
		if err != nil {
			return store.TaskState{}, err
		}
		if ts.State == "" {
			return store.TaskState{}, fmt.Errorf("task %s: %w", r.ID(), ErrNotFound)
		}
		if Final(ts.State) {
			return ts, nil
		}
		select {
		case <-w:
		case <-renew.C:
			// Read again, which renews the registration before it lapses.
		case <-ctx.Done():
			return store.TaskState{}, ctx.Err()
		case <-e.hub.done:
			return store.TaskState{}, ErrClosed
		}
	}
}

// Ended reads how the task with id ended, without waiting: an error when it
// is unknown or has not ended.
func (e *Engine) Ended(ctx context.Context, id string) (store.TaskState, error) {
	r, err := RefOf(id)
	if err != nil {
		return store.TaskState{}, err
	}
	ts, err := e.Read(ctx, r)
	if err != nil {
		return store.TaskState{}, err
	}
	if ts.State == "" {
		return store.TaskState{}, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	if !Final(ts.State) {
		return store.TaskState{}, fmt.Errorf("task %s has not ended (%s)", id, ts.State)
	}
	return ts, nil
}
