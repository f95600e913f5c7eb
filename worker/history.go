package worker

import (
	"time"

	"github.com/taskfleet/async/internal/codec"
)

// keepAttempt adds j's failed attempt, begun at started (Redis time, the
// worker's estimate), to its envelope's history, so that the retry or the
// dead letter encoded from it carries the attempt (inspect.Task shows it).
func (w *Worker) keepAttempt(j *job, started time.Time, msg string) {
	j.env.AppendAttempt(codec.Attempt{
		Attempt:    j.env.Attempt,
		StartedMs:  started.UnixMilli(),
		FinishedMs: w.clock.Now().UnixMilli(),
		Error:      msg,
		Worker:     w.cfg.Name,
	})
}
