package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// exec runs one job on its own goroutine; the slot j holds bounds how many
// run at once, and Stop waits for them (execs).
func (w *Worker) exec(j *job) {
	defer w.execs.Done()
	ok, tokens := w.throttle(j)
	if !ok {
		return
	}
	ls := w.limitsFor(j)
	if len(ls) == 0 {
		w.send(w.run(j))
		return
	}
	full, err := w.takeSlots(j, ls)
	if err != nil || full != nil {
		w.refund(tokens) // it does not run now
		if err != nil {
			w.log.Error("take a limit's slot; the task retries after Config.LimitWait", slog.String("task", keys.TaskID(j.q.keys.Name, j.key)), slog.Any("err", err))
			full = nil
		}
		w.fire(j, EventLimitParked, w.cfg.LimitWait, err)
		w.send(w.limitPark(j, full))
		return
	}
	j.mu.Lock()
	j.limits = ls
	j.mu.Unlock()
	o := w.run(j)
	w.giveSlots(j)
	w.send(o)
}

var (
	errAttemptTimeout = errors.New("attempt timed out")
	errTaskDeadline   = errors.New("task deadline exceeded")
)

func (w *Worker) run(j *job) *outcome {
	ctx := j.ctx
	if j.env.DeadlineMs > 0 {
		var cancel context.CancelFunc
		local := w.clock.ToLocal(time.UnixMilli(j.env.DeadlineMs))
		ctx, cancel = context.WithDeadlineCause(ctx, local, errTaskDeadline)
		defer cancel()
	}
	if j.env.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, time.Duration(j.env.TimeoutMs)*time.Millisecond, errAttemptTimeout)
		defer cancel()
	}
	w.reportStart(j)
	ctx, span := w.startProcess(ctx, j)
	start := time.Now()
	pg := progressOf(j)
	if pg != nil {
		pg.begin(start) // the first progress write is due a while after this
	}
	res, err := call(ctx, j.handler, j.env.Payload)
	took := time.Since(start)
	j.took = took
	endProcess(span, err)
	if pg != nil {
		// The attempt's last progress report is written now,
		// before its end is sent to be recorded (a no-op for a handler
		// that wrote nothing and returned before its first write was due).
		pg.finish(time.Now(), err == nil || errors.Is(err, errRecorded), j.isLost())
	}
	cause := context.Cause(j.ctx)
	switch {
	case errors.Is(err, errRecorded):
		// A batch handler recorded it all.
		w.report(j, EventSucceeded, took, 0, nil)
		return &outcome{j: j, drop: true}
	case err == nil:
		w.report(j, EventSucceeded, took, 0, nil)
		o := j.ends(store.Succeed(res, j.env.RetainMs))
		o.c.Fresh = j.env.Key == ""
		return o
	case j.isLost():
		w.report(j, EventLeaseLost, took, 0, err)
		return &outcome{j: j, drop: true}
	case errors.Is(cause, ErrLeaseLost):
		// No heartbeat got through in time (Redis stalled, or our calls
		// did): the lease may still be ours in Redis, and a heartbeat sent
		// before the stall may yet renew it. Hand the task back now,
		// fenced by this attempt's token, rather than leave it to wait out
		// that lease.
		w.log.Warn("lease lapsed without a heartbeat getting through; handing the task back", slog.String("task", keys.TaskID(j.q.keys.Name, j.key)), slog.Any("err", err))
		w.report(j, EventLeaseLost, took, 0, err)
		return j.lapsed()
	case errors.Is(cause, ErrShutdown):
		return j.park(0)
	case errors.Is(cause, ErrCancelled):
		w.report(j, EventCancelled, took, 0, ErrCancelled)
		return j.cancelled(codec.ReasonCancelled)
	case errors.Is(context.Cause(ctx), errTaskDeadline):
		w.report(j, EventCancelled, took, 0, deadlineEnded{})
		return j.cancelled(codec.ReasonDeadline)
	}
	if errors.Is(context.Cause(ctx), errAttemptTimeout) && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("attempt timed out after %v: %w", time.Duration(j.env.TimeoutMs)*time.Millisecond, err)
	}
	msg := err.Error()
	w.keepAttempt(j, w.clock.ToRedis(start), msg)
	var perm *PermanentError
	if errors.As(err, &perm) || j.env.Attempt >= j.env.MaxAttempts {
		w.report(j, EventDead, took, 0, err)
		return j.ends(store.Dead(codec.AppendEnvelope(nil, j.env), msg))
	}
	delay := w.cfg.Backoff(j.env.Attempt)
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		delay = ra.Delay
	}
	if j.env.DeadlineMs > 0 && !w.clock.Now().Add(delay).Before(time.UnixMilli(j.env.DeadlineMs)) {
		// The next attempt would start past the deadline: end it now.
		w.report(j, EventCancelled, took, 0, deadlineEnded{})
		return j.cancelled(codec.ReasonDeadline)
	}
	next := j.next(func(e *codec.Envelope) {
		e.Attempt++
		e.RateTurn = 0 // a new attempt queues for its tokens anew
	})
	w.report(j, EventRetried, took, delay, err)
	return j.ends(store.Retry(next, delay, msg))
}

// call runs h, turning a panic into a *PanicError with the stack.
func call(ctx context.Context, h handlerFunc, payload []byte) (res []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return h(ctx, payload)
}
