// Package taskctx carries what a handler's ctx knows about its task to the
// client package, so that a task enqueued with that ctx becomes the task's
// child (it inherits metadata, trace context and the remaining deadline).
package taskctx

import "context"

// Info is the part of a running task that its children inherit.
type Info struct {
	ID          string
	Meta        []string // key, value pairs
	TraceParent string
	TraceState  string
	DeadlineMs  int64  // the task's own deadline, Unix ms in Redis time; 0 = none
	Prev        string // the task or group this task continues, if any

	// Client is the worker's *client.Client, for package patterns' readers
	// of a join's group.
	Client any

	// Ext is the worker's own view of the task, so that a handler's ctx
	// carries one value.
	Ext any
}

type key struct{}

// With returns ctx carrying in.
func With(ctx context.Context, in *Info) context.Context {
	return context.WithValue(ctx, key{}, in)
}

// From returns the task ctx belongs to, if any.
func From(ctx context.Context) (*Info, bool) {
	in, ok := ctx.Value(key{}).(*Info)
	return in, ok
}
