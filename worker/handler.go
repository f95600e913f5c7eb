package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
)

// handlerFunc runs one attempt on a msgpack payload and returns the msgpack
// result.
type handlerFunc func(ctx context.Context, payload []byte) ([]byte, error)

// Handle registers fn as the handler of the kind named by A's Kind method.
// A must be a value type whose zero value answers Kind. fn's result is encoded
// with msgpack and kept as the task's result; use struct{} for none.
//
// Handle panics, like http.Handle, on a programming error: a kind that breaks
// the naming rule, a kind registered twice, or a worker already started.
func Handle[A client.Args, R any](w *Worker, fn func(ctx context.Context, args A) (R, error)) {
	var zero A
	kind := zero.Kind()
	if err := keys.ValidateName("kind", kind); err != nil {
		panic(fmt.Sprintf("worker.Handle %T: %v", zero, err))
	}
	w.register(kind, func(ctx context.Context, payload []byte) ([]byte, error) {
		var a A
		if err := codec.Unmarshal(payload, &a); err != nil {
			return nil, Permanent(fmt.Errorf("decode %s args into %T: %w", kind, a, err))
		}
		r, err := fn(ctx, a)
		if err != nil {
			return nil, err
		}
		out, err := codec.Marshal(r)
		if err != nil {
			return nil, Permanent(fmt.Errorf("encode %s result %T: %w", kind, r, err))
		}
		return out, nil
	})
}

func (w *Worker) register(kind string, h handlerFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateNew {
		panic(fmt.Sprintf("worker.Handle %s: the worker is already started", kind))
	}
	if _, dup := w.handlers[kind]; dup {
		panic(fmt.Sprintf("worker.Handle: kind %q is registered twice", kind))
	}
	w.handlers[kind] = h
}

// Task describes the attempt a handler runs. Get it with TaskFromContext.
type Task struct {
	ID          string
	Queue       string
	Kind        string
	Attempt     int // 1 for the first attempt
	MaxAttempts int
	Deliveries  int // times this attempt's entry was delivered (over 1 after a worker crash)
	// PartitionKey is the task's client.EnqueueOpts.PartitionKey, or "".
	PartitionKey string
}

// taskValue is what a handler's ctx carries (engine.WithTask): the part
// that children inherit, and the worker's own view.
type taskValue struct {
	info engine.TaskInfo
	Task
	w    *Worker
	prev string    // id of the task this one continues
	j    *job      // the attempt (batch handlers record their items' ends with its token)
	pg   *progress // the attempt's ReportProgress state
}

// TaskFromContext returns the task a handler's ctx belongs to.
func TaskFromContext(ctx context.Context) (Task, bool) {
	t, ok := taskValueOf(ctx)
	if !ok {
		return Task{}, false
	}
	return t.Task, true
}

// Meta returns a copy of the metadata the task was enqueued with (merged
// over its parent's, for a child task), or nil.
func Meta(ctx context.Context) map[string]string {
	in, ok := engine.TaskOf(ctx)
	if !ok || len(in.Meta) == 0 {
		return nil
	}
	m := make(map[string]string, len(in.Meta)/2)
	for i := 0; i+1 < len(in.Meta); i += 2 {
		m[in.Meta[i]] = in.Meta[i+1]
	}
	return m
}

// TraceContext returns the W3C trace context (traceparent, tracestate) the
// task was enqueued with, or inherited from its parent; empty when none.
func TraceContext(ctx context.Context) (traceparent, tracestate string) {
	in, ok := engine.TaskOf(ctx)
	if !ok {
		return "", ""
	}
	return in.TraceParent, in.TraceState
}

// Parent returns the outcome of the task a continuation continues (see
// client.Handle.ContinueWith). ok is false when the handler's task is not a
// continuation. The outcome is read from Redis at the call; it is there for
// the parent's retention (24 hours by default). In a handler run alone
// (asynctest.Run with RunOpts.Parent) it is the end the test gave.
func Parent(ctx context.Context) (p *client.ParentOutcome, ok bool, err error) {
	t, found := taskValueOf(ctx)
	if !found || t.prev == "" {
		return nil, false, nil
	}
	if keys.IsGroupID(t.prev) {
		return nil, true, fmt.Errorf("worker.Parent: the task continues group %s; read how its members ended with patterns.JoinOutcomes", t.prev)
	}
	ts, err := t.info.PrevEnded(ctx)
	if err != nil {
		return nil, true, err
	}
	st := client.State(ts.State)
	out := &client.ParentOutcome{ID: t.prev, State: st, Result: ts.Result}
	if st != client.StateSucceeded {
		out.Err = &client.TaskError{ID: t.prev, State: st, Attempt: ts.Attempt, Message: ts.Error}
	}
	return out, true, nil
}

// ParentResult decodes the result of the task a continuation continues into
// an R. If that task did not succeed it returns its error: a *client.TaskError
// (errors.Is with client.ErrDead, client.ErrCancelled...).
func ParentResult[R any](ctx context.Context) (R, error) {
	var out R
	p, ok, err := Parent(ctx)
	if err != nil {
		return out, err
	}
	if !ok {
		return out, errors.New("worker.ParentResult: the task is not a continuation")
	}
	if p.Err != nil {
		return out, p.Err
	}
	if len(p.Result) == 0 {
		return out, nil
	}
	if err := codec.Unmarshal(p.Result, &out); err != nil {
		return out, fmt.Errorf("decode result of %s into %T: %w", p.ID, out, err)
	}
	return out, nil
}

// TaskInfo is what the task's children inherit.
func (t *taskValue) TaskInfo() *engine.TaskInfo { return &t.info }

func taskValueOf(ctx context.Context) (*taskValue, bool) {
	r, ok := engine.RunningOf(ctx)
	if !ok {
		return nil, false
	}
	t, ok := r.(*taskValue)
	return t, ok
}
