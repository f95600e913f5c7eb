package worker

import (
	"errors"
	"fmt"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

var (
	// ErrLeaseLost is the cause (context.Cause) of a handler ctx cancelled
	// because the worker no longer holds the task's lease: heartbeats failed
	// for too long, or another worker took the task over after the lease ended.
	// Nothing the handler returns afterwards is recorded.
	ErrLeaseLost = errors.New("lease lost")

	// ErrShutdown is the cause of a handler ctx cancelled by StopAndCancel, or
	// by Stop when its ctx ended first. The task is handed back to its queue,
	// not failed.
	ErrShutdown = errors.New("worker shutting down")

	// ErrCancelled is the cause (context.Cause) of a handler ctx cancelled
	// because the task was cancelled (client.Handle.Cancel). The task ends
	// cancelled and is not retried. It is client.ErrCancelled.
	ErrCancelled = client.ErrCancelled

	// ErrPayloadTooLarge is the reason recorded for a task whose payload
	// exceeds Config.MaxPayloadBytes when it is read; such a task is
	// dead-lettered, and the error its Outcome returns matches
	// ErrPayloadTooLarge (errors.Is). It is client.ErrPayloadTooLarge, which
	// an enqueue over the client's limit matches too.
	ErrPayloadTooLarge = client.ErrPayloadTooLarge

	// ErrRedisTooOld is returned by New for a Redis server older than 6.2.
	ErrRedisTooOld = store.ErrRedisTooOld

	// ErrInvalidName is wrapped by the error for a queue or kind that breaks the
	// naming rule [A-Za-z0-9._-]{1,128}.
	ErrInvalidName = keys.ErrInvalidName
)

// PermanentError marks a handler error that must not be retried: the task goes
// straight to the dead-letter store. Make one with Permanent.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so that the attempt that returns it is the task's last.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &PermanentError{Err: err}
}

// RetryAfterError is a failed attempt that asks for its retry after Delay
// instead of the backoff. It still counts as an attempt. Make one with
// RetryAfter.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("retry after %v: %v", e.Delay, e.Err)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter fails the attempt with err and schedules the next one after d
// (if attempts remain).
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// PanicError is the error of an attempt whose handler panicked.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("handler panicked: %v\n%s", e.Value, e.Stack)
}
