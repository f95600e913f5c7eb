package worker

import "time"

// EventType names what happened to a task on a worker.
type EventType string

// The events a worker reports to its Config.Observers.
const (
	// EventStarted: the handler is about to run an attempt. Event.Queued
	// is how long the task waited since its entry entered the stream.
	EventStarted EventType = "started"
	// EventSucceeded: the handler returned no error. Event.Duration is
	// its run time.
	EventSucceeded EventType = "succeeded"
	// EventRetried: the attempt failed and the task will run again after
	// Event.Delay. Event.Err is the handler's error.
	EventRetried EventType = "retried"
	// EventDead: the attempt failed and the task is dead-lettered
	// (attempts used up, a PermanentError, a malformed entry, poison).
	EventDead EventType = "dead"
	// EventCancelled: the task was cancelled (Cancel, a deadline) while
	// this worker held it.
	EventCancelled EventType = "cancelled"
	// EventLeaseLost: the worker lost the attempt's lease; its outcome is
	// not recorded here (another worker, or a later delivery, ends it).
	EventLeaseLost EventType = "lease_lost"
	// EventThrottled: a rate limit refused the task a token; it is parked
	// for Event.Delay without running.
	EventThrottled EventType = "throttled"
	// EventLimitParked: a concurrency limit was full; the task is parked
	// (at most Config.LimitWait) without running.
	EventLimitParked EventType = "limit_parked"
)

// Event is one thing that happened to a task on this worker.
type Event struct {
	Type EventType
	// Task names the task and the attempt (ID, Queue, Kind, Attempt, ...).
	Task Task
	// Queued is set on EventStarted: from the entry entering its stream
	// (enqueue, due time, retry) to the start, in Redis time.
	Queued time.Duration
	// Duration is set on the ends (succeeded, retried, dead, cancelled) and
	// on EventLeaseLost: how long the handler ran (0 when none ran).
	Duration time.Duration
	// Delay is set on EventRetried (the backoff), EventThrottled and
	// EventLimitParked (how long the task is parked at most).
	Delay time.Duration
	// Err is the handler's error (retried, dead) or the reason (cancelled,
	// lease lost).
	Err error
}

// Observer receives a worker's events, synchronously, on the goroutine
// that decided them: it must be quick and safe for concurrent use.
// package metrics offers one for Prometheus.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }
