package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/taskfleet/async/internal/codec"
)

// Handler runs one attempt of a task, as the functions registered with
// Handle and HandleBatch do once their args are decoded: it returns the
// task's result, msgpack-encoded (EncodeResult), or an error, which fails
// the attempt as a handler's error does (Permanent, RetryAfter, a ctx's
// error...). Middleware wraps Handlers.
type Handler interface {
	Handle(ctx context.Context, a *Attempt) ([]byte, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, a *Attempt) ([]byte, error)

// Handle calls f(ctx, a).
func (f HandlerFunc) Handle(ctx context.Context, a *Attempt) ([]byte, error) { return f(ctx, a) }

// Middleware wraps a Handler in another, as net/http's middleware does: it
// may act before and after the attempt, change the ctx the next handler
// gets, change its result or error, or not call it at all.
type Middleware func(next Handler) Handler

// Attempt is the attempt a Handler runs.
type Attempt struct {
	// Task names the task and the attempt (as TaskFromContext does).
	Task
	// Meta is the task's metadata (merged over its parent's, for a child
	// task), or nil: a copy, as Meta(ctx) returns.
	Meta map[string]string
	// Args are the task's args, msgpack-encoded, as enqueued. A middleware
	// may replace them for the handlers it calls. A batch's (HandleBatch)
	// are empty: its handler reads its items itself.
	Args []byte

	recorded bool // a batch handler recorded the outcome itself
}

// DecodeArgs decodes the attempt's args into v, a pointer to the kind's
// args type (or to a map, for a look at any kind's fields).
func (a *Attempt) DecodeArgs(v any) error {
	if err := codec.Unmarshal(a.Args, v); err != nil {
		return fmt.Errorf("decode %s args into %T: %w", a.Kind, v, err)
	}
	return nil
}

// EncodeResult encodes v as a handler's result (msgpack), for a middleware
// that answers in place of the handler.
func EncodeResult(v any) ([]byte, error) { return codec.Marshal(v) }

// Use adds middleware around every handler of w, after those of
// Config.Middleware (so inside them): the first given is the outermost of
// those. It panics, as Handle does, once the worker is started.
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateNew {
		panic("worker.Use: the worker is already started")
	}
	for _, m := range mw {
		if m == nil {
			panic("worker.Use: a nil Middleware")
		}
	}
	w.mws = append(w.mws, mw...)
}

// wrapHandlers returns the registered handlers, each inside the
// middleware, the first outermost (Start installs them, with w.mu held).
// The worker's own panic recovery stays outside them all: a panic a
// middleware lets through fails the attempt as a handler's does.
func (w *Worker) wrapHandlers() (map[string]handlerFunc, error) {
	mws := append(append([]Middleware(nil), w.cfg.Middleware...), w.mws...)
	if len(mws) == 0 {
		return w.handlers, nil
	}
	out := make(map[string]handlerFunc, len(w.handlers))
	for kind, h := range w.handlers {
		var chain Handler = HandlerFunc(func(ctx context.Context, a *Attempt) ([]byte, error) {
			res, err := h(ctx, a.Args)
			if errors.Is(err, errRecorded) {
				a.recorded = true
			}
			return res, err
		})
		for i := len(mws) - 1; i >= 0; i-- {
			chain = mws[i](chain)
			if chain == nil {
				return nil, fmt.Errorf("worker: middleware %d returned a nil Handler for kind %s", i, kind)
			}
		}
		out[kind] = func(ctx context.Context, payload []byte) ([]byte, error) {
			a := &Attempt{Meta: Meta(ctx), Args: payload}
			if t, ok := taskValueOf(ctx); ok {
				a.Task = t.Task
			}
			res, err := chain.Handle(ctx, a)
			if a.recorded {
				// Whatever the middleware made of it, the batch's outcome
				// is in Redis: nothing more to record.
				return nil, errRecorded
			}
			return res, err
		}
	}
	return out, nil
}
