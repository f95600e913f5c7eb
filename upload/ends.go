package upload

import (
	"context"
	"errors"

	"github.com/taskfleet/async/worker"
)

// ends reports whether the attempt that returned err ends the task for
// good, so that its multipart upload must go now: a cancelled task, or,
// when the handler's own error ends the attempt, a permanent error, a
// source that changed (the next attempt starts over) or the last attempt.
// Without a record there is nothing to resume from, and nothing for the
// sweeper to find: the upload goes whatever the end.
//
// When the handler's ctx ended for any other reason, the worker decides by
// the ctx's cause, not by err: a shutdown (worker.ErrShutdown) or a lease
// that lapsed or was taken over (worker.ErrLeaseLost) hands the task back
// with the same attempt number, so even the last attempt goes on, perhaps
// on another worker that is resuming the upload already. An attempt that
// timed out or a task past its deadline may end the task; the sweeper sees
// that in the task's state. The upload and its record stay in all these
// cases.
func (j *job) ends(ctx context.Context, err error) bool {
	if !j.record {
		return true
	}
	if ctx.Err() != nil {
		return errors.Is(context.Cause(ctx), worker.ErrCancelled)
	}
	var perm *worker.PermanentError
	switch {
	case errors.As(err, &perm), errors.Is(err, errSourceChanged):
		return true
	case j.task.MaxAttempts > 0 && j.task.Attempt >= j.task.MaxAttempts:
		return true
	}
	return false
}
