package asynctest

import (
	"context"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// RunOpts describe the task a handler run alone (Run, RunBatch) belongs to.
type RunOpts struct {
	ID           string // defaults to a fresh id in Queue
	Queue        string // defaults to the fleet client's default queue
	Attempt      int    // defaults to 1
	MaxAttempts  int    // defaults to the client's default (25)
	Deliveries   int    // defaults to 1
	PartitionKey string
	Meta         map[string]string
	TraceParent  string
	TraceState   string
	Deadline     time.Time     // the task's deadline; the ctx ends then
	Timeout      time.Duration // the attempt's timeout; the ctx ends then
	// Parent makes the task a continuation of a task that ended so
	// (worker.Parent, worker.ParentResult).
	Parent *End
	// Join makes the task the join of a group whose members ended so, in
	// submission order (patterns.JoinOutcomes, patterns.JoinResults).
	Join []End
	// Context is the ctx the handler's derives from. Defaults to
	// context.Background().
	Context context.Context
}

// End is how a task (or a nested group) ended, given to a handler run
// alone as its parent's or its group's members' end.
type End struct {
	ID      string       // defaults to a fresh id
	State   client.State // StateSucceeded, StateDead or StateCancelled
	Result  any          // a succeeded task's result, encoded as a handler's is
	Err     string       // a task's error, when it did not succeed
	Attempt int          // defaults to 1
}

// Succeeded is the end of a task that succeeded with result.
func Succeeded(result any) End { return End{State: client.StateSucceeded, Result: result} }

// Dead is the end of a task that failed for good with message msg.
func Dead(msg string) End { return End{State: client.StateDead, Err: msg} }

// Cancelled is the end of a task that was cancelled.
func Cancelled() End { return End{State: client.StateCancelled, Err: "cancelled"} }

// RunResult is what a handler run alone returned.
type RunResult[R any] struct {
	// Value is the handler's result, after the msgpack round trip a
	// caller's client.Result makes.
	Value R
	// Err is the handler's error (a panic becomes a *worker.PanicError).
	Err error
	// Task is the task the handler's ctx carried.
	Task worker.Task
	// Children are the tasks the handler enqueued with its ctx, in order.
	Children []client.Enqueued
}

// Run runs fn once, synchronously, as a worker runs one attempt of args'
// task: args go through the msgpack round trip a task's args make, and the
// ctx carries the task opts describe.
func Run[A client.Args, R any](f *Fleet, fn func(ctx context.Context, args A) (R, error), args A, opts *RunOpts) *RunResult[R] {
	panic("asynctest: not yet")
}

// BatchResult is what a batch handler run alone returned.
type BatchResult[Out any] struct {
	Results  []Out         // one per item when the batch succeeded (in part)
	Failed   map[int]error // the items a worker.BatchErrors named
	Err      error         // the batch's error as a whole, if any
	Task     worker.Task
	Children []client.Enqueued
}

// RunBatch runs a batch handler (worker.HandleBatch) once on items, as a
// worker runs a batch, and checks its answer as a worker does.
func RunBatch[In client.Args, Out any](f *Fleet, fn func(ctx context.Context, items []In) ([]Out, error), items []In, opts *RunOpts) *BatchResult[Out] {
	panic("asynctest: not yet")
}
