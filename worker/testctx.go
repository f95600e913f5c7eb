package worker

import (
	"context"

	"github.com/taskfleet/async/internal/engine"
)

// A handler run alone (package asynctest's Run and RunBatch) gets its ctx
// from handlerContext: the same taskValue a worker's attempt carries, with
// no worker nor attempt behind it (w and j nil). What reads the task
// (TaskFromContext, Meta, TraceContext), its parent's or its group's ends
// (Parent, ParentResult, patterns.JoinOutcomes: from TaskInfo.Given) and
// what a child inherits behave as in a worker; what needs the worker (a
// lease, heartbeats, recording a batch's items) is not there.
func init() {
	engine.HandlerContext = handlerContext
}

// handlerContext builds a handler's ctx as the worker's fetch and run do:
// the task's deadline, then the attempt's timeout, with the causes the
// worker's run tells apart.
func handlerContext(ctx context.Context, t engine.HandlerTask, in *engine.TaskInfo) (context.Context, context.CancelFunc) {
	tv := &taskValue{
		info: *in,
		Task: Task{
			ID: t.ID, Queue: t.Queue, Kind: t.Kind,
			Attempt: t.Attempt, MaxAttempts: t.MaxAttempts, Deliveries: t.Deliveries,
			PartitionKey: t.PartitionKey,
		},
		prev: in.Prev,
		pg:   newProgress(nil), // reports are kept, not written (ReportedProgress)
	}
	ctx = engine.WithTask(ctx, tv)
	var stops []context.CancelFunc
	if !t.Deadline.IsZero() {
		var stop context.CancelFunc
		ctx, stop = context.WithDeadlineCause(ctx, t.Deadline, errTaskDeadline)
		stops = append(stops, stop)
	}
	if t.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, t.Timeout, errAttemptTimeout)
		stops = append(stops, stop)
	}
	cancel := func() {
		for _, stop := range stops {
			stop()
		}
	}
	return ctx, cancel
}
