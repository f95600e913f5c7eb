package worker

import (
	"context"
	"log/slog"
	"time"
)

// The worker's share of the queue duties it has in common with the
// coordinators (internal/maintain): it forwards and keeps house for its own
// queues, so that a fleet without a coordinator still moves retries and
// continuations and trims its streams.

// forwardLoop (intake) moves the queues' due tasks into their streams and
// starts their waiting continuations: at the next due time, within a
// second, or at once when an outcome scheduled a task (wakeForwarder).
func (w *Worker) forwardLoop(ctx context.Context) {
	for {
		wait := time.Second
		for _, q := range w.queueList() {
			due, err := w.keep.ForwardDue(ctx, q.keys)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error("move due tasks", slog.String("queue", q.keys.Name), slog.Any("err", err))
				continue
			}
			if err := w.sweepOutbox(ctx, q); err != nil && ctx.Err() == nil {
				w.log.Error("start continuations", slog.String("queue", q.keys.Name), slog.Any("err", err))
			}
			if due.More {
				wait = 0
			} else if due.NextMs >= 0 {
				wait = min(wait, max(time.Duration(due.NextMs-due.NowMs)*time.Millisecond, time.Millisecond))
			}
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.fwdWake:
			t.Stop()
		case <-t.C:
		}
	}
}

// sweepOutbox drains q's outbox like drainOutbox, unless a drain of it
// runs already (which then drains once more): two drains of one outbox at
// once would read the same entries and apply each twice (the second time
// as a no-op, for nothing).
func (w *Worker) sweepOutbox(ctx context.Context, q *queue) error {
	q.drainAgain.Store(true)
	for q.drainAgain.Load() {
		if !q.drainMu.TryLock() {
			return nil // the holder sees drainAgain
		}
		q.drainAgain.Store(false)
		err := w.keep.DrainOutbox(ctx, q.keys)
		q.drainMu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// wakeForwarder makes forwardLoop look at the queues now.
func (w *Worker) wakeForwarder() {
	select {
	case w.fwdWake <- struct{}{}:
	default:
	}
}

// housekeepLoop (intake) measures Redis' clock again and keeps house for
// the queues every HousekeepInterval.
func (w *Worker) housekeepLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.HousekeepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.clock.Sync(ctx, w.rdb); err != nil && ctx.Err() == nil {
			w.log.Error("read redis time", slog.Any("err", err))
		}
		for _, q := range w.queueList() {
			if err := w.keep.Housekeep(ctx, q.keys); err != nil && ctx.Err() == nil {
				w.log.Error("housekeeping", slog.String("queue", q.keys.Name), slog.Any("err", err))
			}
		}
	}
}
