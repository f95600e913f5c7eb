package worker

import (
	"context"
	"fmt"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
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
}

type taskCtxKey struct{}

// TaskFromContext returns the task a handler's ctx belongs to.
func TaskFromContext(ctx context.Context) (Task, bool) {
	t, ok := ctx.Value(taskCtxKey{}).(Task)
	return t, ok
}
