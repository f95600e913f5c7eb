package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// TaskInfo is the part of a running task that its children inherit, carried
// by its handler's ctx: a task enqueued with that ctx becomes the task's
// child (it inherits metadata, trace context and the remaining deadline).
type TaskInfo struct {
	ID          string
	Meta        []string // key, value pairs
	TraceParent string
	TraceState  string
	DeadlineMs  int64  // the task's own deadline, Unix ms in Redis time; 0 = none
	Prev        string // the task or group this task continues, if any

	// Engine is the worker's, for package patterns' readers of a join's
	// group and for package worker's readers of a parent's outcome.
	Engine *Engine

	// Given, set only in a handler run by package asynctest (asynctest.Run),
	// answers in place of Redis what worker.Parent and patterns.JoinOutcomes
	// read: the end of the task Prev names, or of the group's members.
	Given *Given
}

// Given is what a test gives a handler run alone (asynctest.Run) in place
// of Redis: how the task or group it continues ended.
type Given struct {
	// Parent is the end of the task a continuation continues (Prev).
	Parent *store.TaskState
	// Members are the ends of the members of the group a join continues
	// (Prev), in submission order.
	Members []GivenMember
}

// GivenMember is one member's end in Given: a task's (ID a task id), or a
// nested group's (ID a group id; Group set).
type GivenMember struct {
	ID    string
	Task  store.TaskState
	Group *GivenGroup
}

// GivenGroup is how a nested group ended, as patterns.GroupError tells it.
type GivenGroup struct {
	State  string // "failed" or "cancelled" ("succeeded": no error)
	Failed int
	Total  int
	First  string
}

// HandlerTask is what package worker's Task holds, for HandlerContext, and
// the limits a worker puts on an attempt's ctx.
type HandlerTask struct {
	ID           string
	Queue        string
	Kind         string
	Attempt      int
	MaxAttempts  int
	Deliveries   int
	PartitionKey string

	// Deadline is the task's deadline in local time (in.DeadlineMs is
	// the same instant in Redis time); zero for none.
	Deadline time.Time
	// Timeout is the attempt's timeout; 0 for none.
	Timeout time.Duration
}

// HandlerContext, set by package worker at init, returns ctx as a
// handler's ctx for the task t, whose inherited part is in (worker's
// TaskFromContext, Meta, TraceContext, Parent and patterns' JoinOutcomes
// answer from them), ending at t.Deadline and after t.Timeout as a
// worker's does, and the function that releases it (call it once the
// handler returned): for package asynctest, which runs handlers alone.
var HandlerContext func(ctx context.Context, t HandlerTask, in *TaskInfo) (context.Context, context.CancelFunc)

// PrevEnded returns how the task in continues (Prev) ended: from Given in
// a handler run alone, else from Redis through in.Engine. Either way it is
// an error when that task is unknown or has not ended.
func (in *TaskInfo) PrevEnded(ctx context.Context) (store.TaskState, error) {
	if in.Given == nil {
		if in.Engine == nil {
			return store.TaskState{}, fmt.Errorf("task %s: the handler's ctx carries no engine to read it", in.Prev)
		}
		return in.Engine.Ended(ctx, in.Prev)
	}
	ts := in.Given.Parent
	switch {
	case ts == nil || ts.State == "":
		return store.TaskState{}, fmt.Errorf("task %s: %w", in.Prev, ErrNotFound)
	case !Final(ts.State):
		return store.TaskState{}, fmt.Errorf("task %s has not ended (%s)", in.Prev, ts.State)
	}
	return *ts, nil
}

// DefaultMaxAttempts is the MaxAttempts of a task enqueued without one.
func (e *Engine) DefaultMaxAttempts() int { return e.cfg.DefaultMaxAttempts }

// RedisMs returns the local time t in Redis time, Unix ms, as an enqueue
// converts a task's deadline (the clock refreshed if it is old).
func (e *Engine) RedisMs(ctx context.Context, t time.Time) int64 {
	e.clock.Refresh(ctx, e.rdb, clockRefresh)
	return e.clock.FromCaller(t).UnixMilli()
}

// CheckInherited checks the metadata and trace context of a task as an
// enqueue does (EnqueueOpts.Meta, TraceParent, TraceState); the errors
// name the field.
func CheckInherited(meta map[string]string, traceParent, traceState string) error {
	if len(meta) > maxMetaEntries {
		return fmt.Errorf("Meta has %d entries, limit %d", len(meta), maxMetaEntries)
	}
	for k, v := range meta {
		if k == "" || len(k) > maxMetaKey || len(v) > maxMetaValue {
			return fmt.Errorf("Meta entry %.40q: keys must be 1 to %d bytes, values at most %d", k, maxMetaKey, maxMetaValue)
		}
	}
	if traceParent != "" && !validTraceParent(traceParent) {
		return fmt.Errorf("TraceParent %.64q is not a W3C traceparent (version-traceid-parentid-flags in lower-case hex, 55 bytes)", traceParent)
	}
	if len(traceState) > maxTraceState {
		return fmt.Errorf("TraceState is %d bytes, limit %d", len(traceState), maxTraceState)
	}
	return nil
}

// Running is what a handler's ctx carries: the worker's view of the task,
// which knows its TaskInfo.
type Running interface {
	TaskInfo() *TaskInfo
}

type taskKey struct{}

// WithTask returns ctx carrying r.
func WithTask(ctx context.Context, r Running) context.Context {
	return context.WithValue(ctx, taskKey{}, r)
}

// RunningOf returns what ctx carries about its task, if it is a handler's.
func RunningOf(ctx context.Context) (Running, bool) {
	r, ok := ctx.Value(taskKey{}).(Running)
	return r, ok
}

// TaskOf returns the task whose handler ctx belongs to, if any.
func TaskOf(ctx context.Context) (*TaskInfo, bool) {
	r, ok := RunningOf(ctx)
	if !ok {
		return nil, false
	}
	return r.TaskInfo(), true
}

// infoOnly is a Running that is nothing but its TaskInfo.
type infoOnly struct{ in *TaskInfo }

func (i infoOnly) TaskInfo() *TaskInfo { return i.in }

// WithInfo returns ctx carrying in alone, as a handler's ctx carries its
// task (for tests and tools that stand in for a worker).
func WithInfo(ctx context.Context, in *TaskInfo) context.Context {
	return WithTask(ctx, infoOnly{in})
}
