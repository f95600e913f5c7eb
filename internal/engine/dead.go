package engine

import (
	"context"
	"fmt"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// DeadEntries lists up to limit dead tasks of queue, newest first, skipping
// the first offset.
func (e *Engine) DeadEntries(ctx context.Context, queue string, offset, limit int) ([]store.DeadEntry, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return nil, err
	}
	if offset < 0 || limit < 1 {
		return nil, fmt.Errorf("dead tasks: offset %d must be ≥ 0 and limit %d ≥ 1", offset, limit)
	}
	ds, err := store.DeadEntries(ctx, e.rdb, keys.ForQueue(queue), offset, limit)
	if err != nil {
		return nil, fmt.Errorf("dead tasks of queue %q: %w", queue, err)
	}
	return ds, nil
}

// RetryDead puts the dead task r names back into its queue with a fresh
// count of attempts, under the same key (client.Client.RetryDead documents
// it).
func (e *Engine) RetryDead(ctx context.Context, r Ref) error {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return err
	}
	id := r.ID()
	q := keys.ForQueue(r.Queue)
	raw, found, err := store.TaskEnvelope(ctx, e.rdb, q, r.Key)
	if err != nil {
		return fmt.Errorf("retry dead task %s: %w", id, err)
	}
	if !found {
		return fmt.Errorf("retry dead task %s: %w", id, ErrNotFound)
	}
	env, err := codec.DecodeEnvelope(raw)
	if err != nil {
		return fmt.Errorf("retry dead task %s: its entry cannot be decoded, purge it instead: %w", id, err)
	}
	if env.Group != "" {
		// A member of an InvokeAll group gave its slot back when it died;
		// run again while the group runs, it would exceed the limit.
		if g, err := store.ParseGroupRef(env.Group); err == nil {
			gs, err := store.ReadGroup(ctx, e.rdb, g)
			if err != nil {
				return fmt.Errorf("retry dead task %s: %w", id, err)
			}
			if gs.State == "running" && gs.Limit > 0 {
				return fmt.Errorf("retry dead task %s: it is a member of group %s, which still runs at most %d members at once; retrying it now would exceed that (retry it once the group ended)", id, env.Group, gs.Limit)
			}
		}
	}
	env.Key, env.Attempt, env.Parked, env.Lost = r.Key, 1, 0, 0
	ok, err := store.RetryDead(ctx, e.rdb, q, r.Key, codec.AppendEnvelope(nil, env), newOpID(), env.Partition)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("retry dead task %s: it is not dead: %w", id, ErrNotFound)
	}
	return nil
}

// PurgeDead deletes the dead task r names for good, or returns ErrNotFound.
func (e *Engine) PurgeDead(ctx context.Context, r Ref) error {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return err
	}
	n, err := store.PurgeDead(ctx, e.rdb, keys.ForQueue(r.Queue), []string{r.Key})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("purge dead task %s: %w", r.ID(), ErrNotFound)
	}
	return nil
}
