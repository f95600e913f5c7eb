package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/store"
)

// Issue 21: durable enqueue (client.Config.WaitReplicas). With
// Config.Durable.Replicas set, every script call that adds tasks (Enqueue,
// EnqueueMany, the items and group members the patterns send) goes through
// store.RunCallsDurable: the call, a replication mark and WAIT on one
// connection of the master of its queue. A call whose tasks were added but
// not confirmed on enough replicas answers with its Refs and a
// *store.NotReplicatedError. Enqueue's one-command way (enqueueOne) is not
// taken: its tasks go through the combiner, whose batches share a WAIT.

// Durability is client.Config's WaitReplicas and WaitTimeout.
type Durability = store.Durability

// ErrNotReplicated is matched by the error of an enqueue whose tasks were
// added but not confirmed on enough replicas (client.ErrNotReplicated).
var ErrNotReplicated = store.ErrNotReplicated

// NotReplicatedError is that error, with the counts.
type NotReplicatedError = store.NotReplicatedError

// checkDurable refuses a durability the engine cannot give on rdb.
func checkDurable(rdb redis.UniversalClient, d Durability) error {
	switch {
	case d.Replicas == 0:
		return nil
	case d.Replicas < 0:
		return fmt.Errorf("durable enqueue: %d replicas, must not be negative", d.Replicas)
	case d.Timeout < time.Millisecond:
		return fmt.Errorf("durable enqueue: a timeout of %v, must be at least 1ms", d.Timeout)
	}
	return store.CheckDurable(rdb)
}

// durable reports whether enqueues wait for replicas.
func (e *Engine) durable() bool { return e.cfg.Durable.Replicas > 0 }

// sendGroupDurable is sendGroup with durability: each call's reply and
// error as there, and bc.short for a call whose tasks were added but not
// confirmed. It returns the first call's error, else the first shortfall.
func (e *Engine) sendGroupDurable(ctx context.Context, calls []*batchCall) error {
	dcs := make([]*store.DurableCall, len(calls))
	for i, bc := range calls {
		dcs[i] = &store.DurableCall{Call: bc.call, Queue: bc.q}
	}
	err := store.RunCallsDurable(ctx, e.rdb, dcs, e.cfg.Durable)
	var short error
	for i, bc := range calls {
		bc.short = dcs[i].Short
		if short == nil && bc.short != nil {
			short = fmt.Errorf("enqueue to queue %q: %w", bc.q.Name, bc.short)
		}
	}
	if err != nil {
		return err
	}
	return short
}

// isShort reports whether err says only that tasks were added but not
// confirmed on enough replicas.
func isShort(err error) bool { return errors.Is(err, ErrNotReplicated) }

// firstErr is the first error of errs that is not a shortfall, else the
// first shortfall, else nil: a failed call (tasks maybe added) says more
// than one whose tasks are there.
func firstErr(errs []error) error {
	var short error
	for _, err := range errs {
		switch {
		case err == nil:
		case isShort(err):
			if short == nil {
				short = err
			}
		default:
			return err
		}
	}
	return short
}
