package client

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/store"
)

// State is where a task is in its life.
type State string

// The states of a task. Succeeded, cancelled and dead are final.
const (
	// StatePending: in its queue's stream, waiting for a worker.
	StatePending State = "pending"
	// StateScheduled: waiting for a due time before it enters the stream (a
	// task handed back because no running worker has its kind's handler).
	StateScheduled State = "scheduled"
	// StateWaiting: a continuation whose parent has not ended yet.
	StateWaiting State = "waiting"
	// StateRunning: a worker holds its lease.
	StateRunning State = "running"
	// StateRetrying: an attempt failed; waiting for its backoff to end.
	StateRetrying State = "retrying"
	// StateSucceeded: its handler returned a result. Kept for its retention.
	StateSucceeded State = "succeeded"
	// StateCancelled: cancelled before it succeeded.
	StateCancelled State = "cancelled"
	// StateDead: failed for good (attempts used up, a permanent error, a task
	// that crashed its workers too often, or an entry that could not be read);
	// it sits in the dead-letter store with its last error until retried or
	// purged.
	StateDead State = "dead"
)

// Final reports whether s is an end state.
func (s State) Final() bool {
	return s == StateSucceeded || s == StateCancelled || s == StateDead
}

// Handle refers to one task. It holds no connection; any process can make one
// from the task's id with Client.Task.
type Handle struct {
	c   *Client
	ref engine.Ref
}

// Task returns the handle of the task with id (as returned by Handle.ID). It
// checks the id's form only; State reports ErrNotFound for an unknown task.
func (c *Client) Task(id string) (*Handle, error) {
	r, err := engine.RefOf(id)
	if err != nil {
		return nil, err
	}
	return c.handle(r), nil
}

// ID returns the task's id, "<queue>/<key>", where key is EnqueueOpts.ID or a
// generated one.
func (h *Handle) ID() string { return h.ref.ID() }

// Queue returns the queue the task's id names: for a handle an enqueue to
// a sharded queue returned (see Client.DeclareShards), the shard's
// physical queue, "<queue>~<i>.<salt>".
func (h *Handle) Queue() string { return h.ref.Queue }

// Duplicate reports whether the Enqueue that returned h found a task with the
// same EnqueueOpts.ID and added nothing.
func (h *Handle) Duplicate() bool { return h.ref.Dup }

// Info is a snapshot of a task.
type Info struct {
	ID          string
	Queue       string
	Kind        string
	State       State
	Attempt     int // attempts started so far (for an ended task, the last one)
	MaxAttempts int
	LastError   string    // the last failed attempt's error, if any
	FinishedAt  time.Time // zero until the task ended
	Result      []byte    // msgpack of the handler's result, once succeeded
	Payload     []byte    // msgpack of the args, while the task is not finished
}

// Info returns a snapshot of the task, or ErrNotFound.
func (h *Handle) Info(ctx context.Context) (*Info, error) {
	ts, err := h.c.eng.Read(ctx, h.ref)
	if err != nil {
		return nil, err
	}
	return h.info(ts)
}

func (h *Handle) info(ts store.TaskState) (*Info, error) {
	if ts.State == "" {
		return nil, fmt.Errorf("task %s: %w", h.ID(), ErrNotFound)
	}
	in := &Info{ID: h.ID(), Queue: h.ref.Queue, State: State(ts.State), Attempt: ts.Attempt, LastError: ts.Error, Result: ts.Result}
	if ts.FinishedMs > 0 {
		in.FinishedAt = time.UnixMilli(ts.FinishedMs)
	}
	if len(ts.Envelope) > 0 {
		if env, err := codec.DecodeEnvelope(ts.Envelope); err == nil {
			in.Kind, in.MaxAttempts, in.Payload = env.Kind, env.MaxAttempts, env.Payload
			if in.Attempt == 0 {
				in.Attempt = env.Attempt
				if in.State == StatePending || in.State == StateRetrying || in.State == StateScheduled {
					in.Attempt--
				}
			}
		}
	}
	return in, nil
}

// State returns the task's current state, or ErrNotFound.
func (h *Handle) State(ctx context.Context) (State, error) {
	in, err := h.Info(ctx)
	if err != nil {
		return "", err
	}
	return in.State, nil
}

// Outcome blocks until the task ended or ctx is done. For a succeeded task it
// returns the msgpack encoding of the handler's result (decode it with
// Result); for a dead or cancelled one a *TaskError; ctx.Err() if ctx ended
// first; ErrNotFound for an unknown task. It waits on a notification from the
// worker that ends the task (Redis pub/sub), not by polling; it reads the
// state again only after its subscription reconnected and when it renews its
// registration (every 5 minutes).
func (h *Handle) Outcome(ctx context.Context) ([]byte, error) {
	ts, err := h.c.eng.Outcome(ctx, h.ref)
	if err != nil {
		return nil, err
	}
	if st := State(ts.State); st != StateSucceeded {
		return nil, &TaskError{ID: h.ID(), State: st, Attempt: ts.Attempt, Message: ts.Error}
	}
	return ts.Result, nil
}

// Result waits for the task's outcome like Outcome and decodes a succeeded
// task's result into a T.
func Result[T any](ctx context.Context, h *Handle) (T, error) {
	var out T
	raw, err := h.Outcome(ctx)
	if err != nil {
		return out, err
	}
	if len(raw) == 0 {
		return out, nil
	}
	if err := codec.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("task %s: decode result into %T: %w", h.ID(), out, err)
	}
	return out, nil
}
