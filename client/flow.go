package client

import (
	"context"
	"errors"

	"github.com/taskfleet/async/internal/engine"
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
	st, err := h.c.eng.Cancel(ctx, h.ref)
	if err != nil {
		if st == engine.StateCancelled {
			// Cancelled; starting its continuations failed.
			return StateCancelled, err
		}
		return "", err
	}
	if st == "cancelling" {
		return StateRunning, nil
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
	var eo *engine.Opts
	only := false
	if opts != nil {
		eo, only = engineOpts(&opts.EnqueueOpts), opts.OnlyOnSuccess
	}
	r, err := h.c.eng.ContinueWith(ctx, h.ref, args, eo, only)
	return h.c.handleOrNil(r), err
}

// ParentOutcome is how a task ended, as its continuation sees it.
type ParentOutcome struct {
	ID     string
	State  State
	Result []byte // msgpack of its result, when it succeeded
	Err    error  // a *TaskError when it did not succeed
}
