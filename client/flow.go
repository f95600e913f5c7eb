package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Cancel cancels the task, and then its unfinished descendants (the tasks its
// handler enqueued, theirs, and so on), from any process:
//   - not started yet (pending, scheduled, retrying, or a continuation still
//     waiting for its parent): it never starts; Cancel returns StateCancelled;
//   - running: the handler's ctx on whichever worker runs it is cancelled
//     (cause ErrCancelled) at once through a control channel; the task then
//     ends cancelled, not retried. Cancel returns StateRunning: Outcome tells
//     when it ended (a handler that returns a result anyway succeeds);
//   - ended: nothing changes; Cancel returns its final state.
//
// Outcome of a cancelled task returns a *TaskError matching ErrCancelled and
// context.Canceled. Cancelling an unknown task returns ErrNotFound.
func (h *Handle) Cancel(ctx context.Context) (State, error) {
	return h.cancel(ctx, 0)
}

// maxCancelDepth bounds how deep Cancel follows children.
const maxCancelDepth = 64

func (h *Handle) cancel(ctx context.Context, depth int) (State, error) {
	q := keys.ForQueue(h.queue)
	st, err := store.Cancel(ctx, h.c.rdb, q, h.key, h.c.cfg.Retention.Milliseconds(), codec.ReasonCancelled)
	if err != nil {
		return "", err
	}
	if st == "" {
		return "", fmt.Errorf("cancel task %s: %w", h.ID(), ErrNotFound)
	}
	if depth < maxCancelDepth {
		kids, err := store.Kids(ctx, h.c.rdb, q, h.key)
		if err != nil {
			return "", fmt.Errorf("cancel children of %s: %w", h.ID(), err)
		}
		for _, id := range kids {
			kh, err := h.c.Task(id)
			if err != nil {
				continue
			}
			if _, err := kh.cancel(ctx, depth+1); err != nil && !errors.Is(err, ErrNotFound) {
				return "", err
			}
		}
	}
	if st == "cancelling" {
		return StateRunning, nil
	}
	if st == string(StateCancelled) {
		// Its continuations went to the outbox: start them now, since no
		// worker may serve this queue.
		if err := store.DrainOutbox(ctx, h.c.rdb, q, h.c.cfg.Retention.Milliseconds()); err != nil {
			return StateCancelled, err
		}
	}
	return State(st), nil
}

// CancelAll cancels every task (see Handle.Cancel); it returns the errors of
// the calls that failed, joined.
func CancelAll(ctx context.Context, hs ...*Handle) error {
	var errs []error
	for _, h := range hs {
		if _, err := h.Cancel(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WaitAll waits until every task ended, or ctx is done. It returns nil when
// all succeeded, else the errors of those that did not (as Outcome returns
// them), joined; ctx.Err() if ctx ended first.
func WaitAll(ctx context.Context, hs ...*Handle) error {
	var errs []error
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ContinueOpts are the options of a continuation.
type ContinueOpts struct {
	// EnqueueOpts of the continuation itself: its queue (defaults to the
	// queue of the task it continues), id, attempts...
	EnqueueOpts

	// OnlyOnSuccess runs the continuation only if the task it continues
	// succeeds; otherwise it ends cancelled (and so do its own
	// continuations that want success). Defaults to false: it runs however
	// the task ended.
	OnlyOnSuccess bool
}

// ContinueWith registers args as a task that runs once h's task has ended
// (succeeded, dead, or cancelled), exactly once, in its own queue. Its
// handler reads how h's task ended with worker.Parent or worker.ParentResult.
// It may be called from any process, before or after h's task ends, and on a
// continuation that itself waits (chains). The returned handle's state is
// "waiting" until then. With ContinueOpts.ID set, a call that failed may be
// made again: it completes the registration, and never adds a second task.
func (h *Handle) ContinueWith(ctx context.Context, args Args, opts *ContinueOpts) (*Handle, error) {
	var o ContinueOpts
	if opts != nil {
		o = *opts
	}
	if o.Queue == "" {
		o.Queue = h.queue
	}
	if o.ID == "" {
		o.ID = "c-" + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
	}
	p, err := h.c.prepare(ctx, args, &o.EnqueueOpts, extra{prev: h.ID()})
	if err != nil {
		return nil, err
	}
	// The task continued must exist (a typo'd id would wait forever).
	if _, err := h.Info(ctx); err != nil {
		return nil, fmt.Errorf("continue %s: %w", h.ID(), err)
	}
	tq := keys.ForQueue(p.queue)
	if err := h.c.ensureGroup(ctx, tq); err != nil {
		return nil, err
	}
	next := &Handle{c: h.c, queue: p.queue, key: o.ID}
	created, err := store.CreateWaiting(ctx, h.c.rdb, tq, o.ID, p.task.Envelope, newOpID())
	if err != nil {
		return nil, err
	}
	if !created {
		next.dup = true
		// Registered before, or a call that failed halfway: register again
		// while it waits (a second registration activates it once all the
		// same); leave a task that is past waiting alone.
		if st, err := next.State(ctx); err != nil || st != StateWaiting {
			return next, err
		}
	}
	q := keys.ForQueue(h.queue)
	fired, err := store.AddContinuation(ctx, h.c.rdb, q, h.key, store.ContSpec(p.queue, o.ID, o.OnlyOnSuccess))
	if errors.Is(err, store.ErrUnknownTask) {
		// The task vanished (its record expired) since it was looked up:
		// the waiting continuation would wait forever; cancel it.
		_, _ = store.Cancel(ctx, h.c.rdb, tq, o.ID, h.c.cfg.Retention.Milliseconds(), codec.ReasonCancelled)
		return nil, fmt.Errorf("continue %s: %w", h.ID(), ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if p.parent != "" && !next.dup {
		// Registered from a handler: the continuation is also that task's
		// child, so cancelling the task reaches it.
		if err := h.c.addKids(ctx, []prepared{p}, []*Handle{next}); err != nil {
			return next, err
		}
	}
	if fired {
		// The task had ended: start the continuation now rather than at
		// the next sweep of a worker or coordinator (every second). The
		// registration stands either way, so a failure here is only
		// logged: it may name another entry of the outbox.
		if err := store.DrainOutbox(ctx, h.c.rdb, q, h.c.cfg.Retention.Milliseconds()); err != nil {
			h.c.cfg.Logger.Warn("continuation registered; starting it now failed, the sweeps of workers and coordinators start it",
				slog.String("task", next.ID()), slog.Any("err", err))
		}
	}
	return next, nil
}

// ParentOutcome is how a task ended, as its continuation sees it.
type ParentOutcome struct {
	ID     string
	State  State
	Result []byte // msgpack of its result, when it succeeded
	Err    error  // a *TaskError when it did not succeed
}

// EndedOutcome reads how the task with id ended, without waiting: an error
// when it is unknown or has not ended.
func (c *Client) EndedOutcome(ctx context.Context, id string) (*ParentOutcome, error) {
	h, err := c.Task(id)
	if err != nil {
		return nil, err
	}
	ts, err := store.State(ctx, c.rdb, keys.ForQueue(h.queue), h.key, "")
	if err != nil {
		return nil, err
	}
	if ts.State == "" {
		return nil, fmt.Errorf("task %s: %w", id, ErrNotFound)
	}
	st := State(ts.State)
	if !st.Final() {
		return nil, fmt.Errorf("task %s has not ended (%s)", id, st)
	}
	out := &ParentOutcome{ID: id, State: st, Result: ts.Result}
	if st != StateSucceeded {
		out.Err = &TaskError{ID: id, State: st, Attempt: ts.Attempt, Message: ts.Error}
	}
	return out, nil
}
