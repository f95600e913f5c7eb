package client

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/store"
)

var (
	// ErrNotFound means no task with that id is known: it never existed, or it
	// finished longer ago than its retention.
	ErrNotFound = engine.ErrNotFound

	// ErrPayloadTooLarge is matched (errors.Is) by the error of an enqueue
	// whose task's encoded args exceed Config.MaxPayloadBytes (nothing was
	// enqueued), and by the error Outcome returns for a task a worker
	// dead-lettered because its payload exceeded the worker's
	// Config.MaxPayloadBytes. worker.ErrPayloadTooLarge is this same value.
	ErrPayloadTooLarge = engine.ErrPayloadTooLarge

	// ErrInvalidName is wrapped by the error for a queue, kind or task id that
	// breaks the naming rule [A-Za-z0-9._-]{1,128}.
	ErrInvalidName = engine.ErrInvalidName

	// ErrDead is matched (errors.Is) by the error Outcome returns for a task
	// that failed for good and sits in the dead-letter store.
	ErrDead = errors.New("task is dead")

	// ErrCancelled is matched (errors.Is) by the error Outcome returns for a
	// cancelled task, and is the cause of a handler ctx cancelled by a cancel
	// request. Such an error also matches context.Canceled (or
	// context.DeadlineExceeded, for a task whose deadline passed).
	ErrCancelled = errors.New("task cancelled")

	// ErrRedisTooOld is returned by New for a Redis server older than 6.2.
	ErrRedisTooOld = store.ErrRedisTooOld

	// ErrRedisFull is matched (errors.Is) by the error of an enqueue that
	// Redis refused because its memory is over maxmemory (with the
	// noeviction policy, Redis refuses writes instead of deleting keys).
	// The tasks of the refused call were not added; the queue is named in
	// the error. Workers keep draining the queues, which frees memory;
	// enqueue again later, or raise maxmemory.
	ErrRedisFull = engine.ErrRedisFull

	// ErrClosed is returned by calls made after Close.
	ErrClosed = engine.ErrClosed
)

// TaskError is the error Outcome returns for a task that ended without a
// result. errors.Is(err, ErrDead) holds for a dead task.
type TaskError struct {
	ID      string
	State   State
	Attempt int
	Message string // the last attempt's error
}

func (e *TaskError) Error() string {
	return fmt.Sprintf("task %s %s after attempt %d: %s", e.ID, e.State, e.Attempt, e.Message)
}

// Is reports whether target is the sentinel of e's state: ErrDead for a dead
// task, and ErrPayloadTooLarge too when its last error ends with that
// sentinel's text (a worker refused its payload); ErrCancelled and
// context.Canceled for a cancelled one, or context.DeadlineExceeded instead
// of context.Canceled when its deadline passed.
func (e *TaskError) Is(target error) bool {
	switch e.State {
	case StateDead:
		return target == ErrDead || target == ErrPayloadTooLarge && strings.HasSuffix(e.Message, ": "+ErrPayloadTooLarge.Error())
	case StateCancelled:
		if target == ErrCancelled {
			return true
		}
		if e.Message == codec.ReasonDeadline {
			return target == context.DeadlineExceeded
		}
		return target == context.Canceled
	}
	return false
}
