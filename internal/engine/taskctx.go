package engine

import (
	"context"

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

// HandlerTask is what package worker's Task holds, for HandlerContext.
type HandlerTask struct {
	ID           string
	Queue        string
	Kind         string
	Attempt      int
	MaxAttempts  int
	Deliveries   int
	PartitionKey string
}

// HandlerContext, set by package worker at init, returns ctx as a
// handler's ctx for the task t, whose inherited part is in (worker's
// TaskFromContext, Meta, TraceContext, Parent and patterns' JoinOutcomes
// answer from them): for package asynctest, which runs handlers alone.
var HandlerContext func(ctx context.Context, t HandlerTask, in *TaskInfo) context.Context

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
