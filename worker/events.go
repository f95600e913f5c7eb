package worker

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/taskfleet/async/internal/keys"
)

// A worker tells what happens to each task twice: as an Event to its
// Config.Observers and as a line in its Config.Logger. Both are built only
// when someone takes them (an observer, a level the logger enables), so a
// worker with neither pays a level check per task.

// The messages of the per-task log lines.
const (
	msgStarted   = "task started"
	msgSucceeded = "task succeeded"
	msgRetried   = "task failed; it runs again after the delay"
	msgDead      = "task dead"
	msgCancelled = "task cancelled"
	msgLeaseLost = "task lease lost; its outcome is not recorded here"
)

// task returns the Task j names; before its envelope is decoded (a
// malformed entry) only its id and queue are known.
func (j *job) task() Task {
	t := Task{ID: keys.TaskID(j.q.keys.Name, j.key), Queue: j.q.keys.Name, Deliveries: int(j.dlv)}
	if j.env != nil {
		t.Kind, t.Attempt, t.MaxAttempts, t.PartitionKey = j.env.Kind, j.env.Attempt, j.env.MaxAttempts, j.env.Partition
	}
	return t
}

// observe hands e to every observer, in order.
func (w *Worker) observe(e Event) {
	for _, o := range w.cfg.Observers {
		o.Observe(e)
	}
}

// entryTime returns when the stream entry id was added (its milliseconds
// part, Redis time).
func entryTime(id string) (time.Time, bool) {
	ms, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

// taskAttrs are the attributes of every per-task line.
func taskAttrs(t *Task, extra ...slog.Attr) []slog.Attr {
	return append([]slog.Attr{
		slog.String("task", t.ID), slog.String("kind", t.Kind), slog.String("queue", t.Queue), slog.Int("attempt", t.Attempt),
	}, extra...)
}

// reportStart reports that j's handler starts now.
func (w *Worker) reportStart(j *job) {
	logs := w.log.Enabled(context.Background(), slog.LevelDebug)
	if !logs && len(w.cfg.Observers) == 0 {
		return
	}
	t := j.task()
	var queued time.Duration
	if at, ok := entryTime(j.entry); ok {
		queued = max(w.clock.Now().Sub(at), 0)
	}
	if len(w.cfg.Observers) > 0 {
		w.observe(Event{Type: EventStarted, Task: t, Queued: queued})
	}
	if logs {
		w.log.LogAttrs(context.Background(), slog.LevelDebug, msgStarted, taskAttrs(&t, slog.String("queued", queued.String()))...)
	}
}

// report reports how j's attempt ended: typ is one of the ends (succeeded,
// retried, dead, cancelled) or EventLeaseLost; took is how long its handler
// ran (0 when none ran), delay the retry's backoff, err the handler's error
// or the reason.
func (w *Worker) report(j *job, typ EventType, took, delay time.Duration, err error) {
	var level slog.Level
	var msg string
	switch typ {
	case EventSucceeded:
		level, msg = slog.LevelDebug, msgSucceeded
	case EventRetried:
		level, msg = slog.LevelWarn, msgRetried
	case EventDead:
		level, msg = slog.LevelError, msgDead
	case EventCancelled:
		level, msg = slog.LevelInfo, msgCancelled
	default:
		level, msg = slog.LevelInfo, msgLeaseLost
	}
	logs := w.log.Enabled(context.Background(), level)
	if !logs && len(w.cfg.Observers) == 0 {
		return
	}
	t := j.task()
	if len(w.cfg.Observers) > 0 {
		w.observe(Event{Type: typ, Task: t, Duration: took, Delay: delay, Err: err})
	}
	if !logs {
		return
	}
	attrs := taskAttrs(&t, slog.String("duration", took.String()))
	switch typ {
	case EventRetried:
		attrs = append(attrs, slog.String("delay", delay.String()), slog.Any("err", err))
	case EventDead, EventCancelled:
		attrs = append(attrs, slog.String("reason", errText(err)))
	case EventLeaseLost:
		attrs = append(attrs, slog.Any("err", err))
	}
	w.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// fire hands an event about j to the observers, without a log line: a park
// (EventThrottled, EventLimitParked: delay is how long at most, err the
// failure that forced it, nil when a limit refused the task).
func (w *Worker) fire(j *job, typ EventType, delay time.Duration, err error) {
	if len(w.cfg.Observers) > 0 {
		w.observe(Event{Type: typ, Task: j.task(), Delay: delay, Err: err})
	}
}

// deadLettered reports a task dead-lettered before any handler ran (a
// malformed entry, poison, a payload too large).
func (w *Worker) deadLettered(j *job, reason string) {
	w.report(j, EventDead, 0, 0, errors.New(reason))
}

// deadlineEnded is the Err of a task cancelled by its deadline: it
// matches context.DeadlineExceeded, as the task's Outcome does.
type deadlineEnded struct{}

func (deadlineEnded) Error() string        { return "task deadline exceeded" }
func (deadlineEnded) Is(target error) bool { return target == context.DeadlineExceeded }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
