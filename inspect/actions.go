package inspect

import (
	"context"

	"github.com/taskfleet/async/internal/engine"
)

// ErrTaskNotFound is returned by CancelTask, RetryDeadTask and
// PurgeDeadTask for a task they do not find (in the state they act on). It
// is the same error as client.ErrNotFound.
var ErrTaskNotFound = engine.ErrNotFound

// CancelTask cancels the task id, and then its unfinished descendants, as
// client.Handle.Cancel does: a task not started yet never starts; a running
// one has its handler's context cancelled on whichever worker runs it; an
// ended one is left as it is. It returns the state the task is in after
// the call: StateCancelled, StateRunning (its worker was told; it ends
// cancelled unless its handler returns a result anyway), or the end state
// it was already in.
func (i *Inspector) CancelTask(ctx context.Context, id string) (State, error) {
	r, err := engine.RefOf(id)
	if err != nil {
		return "", err
	}
	e, err := i.engineFor(ctx)
	if err != nil {
		return "", err
	}
	defer e.Close()
	st, err := e.Cancel(ctx, r)
	switch {
	case st == "cancelling":
		return StateRunning, err
	case st == engine.StateCancelled:
		return StateCancelled, err // an error here: its continuations did not start yet
	case err != nil:
		return "", err
	}
	return State(st), nil
}

// RetryDeadTask puts the dead task id back into its queue with a fresh
// count of attempts, under the same id, as client.Client.RetryDead does. It
// returns ErrTaskNotFound when no dead task has that id, and refuses one
// whose entry cannot be decoded (purge it instead).
func (i *Inspector) RetryDeadTask(ctx context.Context, id string) error {
	r, err := engine.RefOf(id)
	if err != nil {
		return err
	}
	e, err := i.engineFor(ctx)
	if err != nil {
		return err
	}
	defer e.Close()
	return e.RetryDead(ctx, r)
}

// PurgeDeadTask deletes the dead task id for good, as
// client.Client.PurgeDead does; ErrTaskNotFound when no dead task has that
// id.
func (i *Inspector) PurgeDeadTask(ctx context.Context, id string) error {
	r, err := engine.RefOf(id)
	if err != nil {
		return err
	}
	e, err := i.engineFor(ctx)
	if err != nil {
		return err
	}
	defer e.Close()
	return e.PurgeDead(ctx, r)
}
