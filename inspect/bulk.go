package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// bulkChunk is how many tasks a bulk operation reads or purges per round.
const bulkChunk = 500

// engineFor returns an engine on i's Redis for the operations that go the
// client's way (retry a dead task, cancel a task). The caller closes it.
func (i *Inspector) engineFor(ctx context.Context) (*engine.Engine, error) {
	return engine.New(ctx, i.rdb, engine.Config{Logger: slog.New(slog.DiscardHandler)})
}

// deadOfKind returns the keys of queue's dead tasks (of kind, all when
// kind is ""), oldest first, read at one moment.
func (i *Inspector) deadOfKind(ctx context.Context, q keys.Queue, kind string) ([]string, error) {
	all, err := store.ZMembers(ctx, i.rdb, q.Dead())
	if err != nil {
		return nil, err
	}
	if kind == "" {
		return all, nil
	}
	var out []string
	for start := 0; start < len(all); start += bulkChunk {
		ks := all[start:min(start+bulkChunk, len(all))]
		rs, err := store.TaskRecords(ctx, i.rdb, q, ks)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if env, err := codec.DecodeEnvelope(r.Envelope); err == nil && env.Kind == kind {
				out = append(out, r.Key)
			}
		}
	}
	return out, nil
}

// retryDead retries queue's dead tasks of kind (RetryDead), one by one as
// client.Client.RetryDead does. A dead task that cannot be retried (its
// entry does not decode; a member of an InvokeAll group still running) is
// left dead: the error counts them and names the first.
//
// A sharded queue's name retries the dead tasks of its plain queue and of
// every shard; a shard's name those of that shard.
func (i *Inspector) retryDead(ctx context.Context, queue, kind string) (int, error) {
	if err := validQueueKind(queue, kind); err != nil {
		return 0, err
	}
	parts, err := i.physical(ctx, queue)
	if err != nil {
		return 0, err
	}
	type ref struct{ queue, key string }
	var refs []ref
	for _, p := range parts {
		ks, err := i.deadOfKind(ctx, keys.ForQueue(p), kind)
		if err != nil {
			return 0, err
		}
		for _, k := range ks {
			refs = append(refs, ref{p, k})
		}
	}
	if len(refs) == 0 {
		return 0, nil
	}
	e, err := i.engineFor(ctx)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	n, refused := 0, 0
	var first error
	for _, r := range refs {
		err := e.RetryDead(ctx, engine.Ref{Queue: r.queue, Key: r.key})
		switch {
		case err == nil:
			n++
		case errors.Is(err, engine.ErrNotFound):
			// Retried or purged meanwhile, unless it is still dead: a
			// task of a sharded queue's plain queue whose id is of the
			// caller's, which the engine looks for on the id's shard.
			in, ierr := store.InSets(ctx, i.rdb, []string{keys.ForQueue(r.queue).Dead()}, []string{r.key})
			if ierr != nil || !in[0][0] {
				continue
			}
			refused++
			if first == nil {
				first = fmt.Errorf("dead task %s is still dead: %w", keys.TaskID(r.queue, r.key), err)
			}
		case ctx.Err() != nil:
			return n, err
		default:
			refused++
			if first == nil {
				first = err
			}
		}
	}
	if refused > 0 {
		return n, fmt.Errorf("retry dead tasks of queue %q: %d left dead; the first: %w", queue, refused, first)
	}
	return n, nil
}

// purgeDead deletes queue's dead tasks of kind (PurgeDead), bulkChunk per
// purgedead.lua call.
// A sharded queue's name purges its plain queue's and every shard's.
func (i *Inspector) purgeDead(ctx context.Context, queue, kind string) (int, error) {
	if err := validQueueKind(queue, kind); err != nil {
		return 0, err
	}
	parts, err := i.physical(ctx, queue)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range parts {
		q := keys.ForQueue(p)
		ks, err := i.deadOfKind(ctx, q, kind)
		if err != nil {
			return n, err
		}
		for start := 0; start < len(ks); start += bulkChunk {
			m, err := store.PurgeDead(ctx, i.rdb, q, ks[start:min(start+bulkChunk, len(ks))])
			n += m
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// cancelAll cancels queue's tasks in state (CancelAll): it lists them all
// first (Tasks, page by page), then cancels each through the client's
// path (cancel.lua, then its children). A running task counts once its
// worker was told. Held tasks are those Tasks lists (parked by a limit or
// a rate).
func (i *Inspector) cancelAll(ctx context.Context, queue string, state State) (int, error) {
	switch state {
	case StateWaiting, StateRunning, StateScheduled, StateRetrying, StateHeld:
	default:
		return 0, fmt.Errorf("inspect: CancelAll of state %q; want waiting, running, scheduled, retrying or held", state)
	}
	var ids []string
	cursor := ""
	for {
		page, err := i.tasks(ctx, queue, ListOpts{State: state, Cursor: cursor, Limit: maxLimit})
		if err != nil {
			return 0, err
		}
		for _, t := range page.Tasks {
			ids = append(ids, t.ID)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(ids) == 0 {
		return 0, nil
	}
	e, err := i.engineFor(ctx)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	n := 0
	for _, id := range ids {
		r, err := engine.RefOf(id)
		if err != nil {
			continue
		}
		st, err := e.Cancel(ctx, r)
		switch {
		case errors.Is(err, engine.ErrNotFound):
			continue
		case err != nil:
			return n, err
		}
		if st == engine.StateCancelled || st == "cancelling" {
			n++
		}
	}
	return n, nil
}

func validQueueKind(queue, kind string) error {
	if err := keys.ValidatePhysicalQueue(queue); err != nil {
		return err
	}
	if kind != "" {
		return keys.ValidateName("kind", kind)
	}
	return nil
}
