package asynctest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/worker"
)

// RunOpts describe the task a handler run alone (Run, RunBatch) belongs to.
// A field out of the range an enqueue or a worker accepts fails the test
// (t.Fatalf) with a message naming the field.
type RunOpts struct {
	// ID is the task's id, "<queue>/<key>". Defaults to a fresh id in
	// Queue. An id that names a task in Redis makes what the handler
	// enqueues that task's children (cancelling it reaches them).
	ID           string
	Queue        string // defaults to ID's queue, or the fleet client's default queue
	Attempt      int    // defaults to 1; at most MaxAttempts
	MaxAttempts  int    // defaults to the client's default (25)
	Deliveries   int    // defaults to 1
	PartitionKey string
	// Meta is the task's metadata (worker.Meta), checked as
	// client.EnqueueOpts.Meta is.
	Meta map[string]string
	// TraceParent and TraceState are the task's W3C trace context
	// (worker.TraceContext), checked as client.EnqueueOpts' are.
	TraceParent string
	TraceState  string
	// Deadline is the task's deadline: the ctx ends then, with the cause a
	// worker gives it, and the handler's children inherit it. A deadline
	// already past gives a ctx that has ended (a worker would not start
	// the task: it would end cancelled without running).
	Deadline time.Time
	// Timeout is the attempt's timeout: the ctx ends after it, as a
	// worker's does (a worker then records the handler's error as
	// "attempt timed out after ..."). Not inherited by children.
	Timeout time.Duration
	// Parent makes the task a continuation of a task that ended so
	// (worker.Parent, worker.ParentResult).
	Parent *End
	// Join makes the task the join of a group whose members ended so, in
	// submission order (patterns.JoinOutcomes, patterns.JoinResults). A
	// non-nil empty Join is the join of an empty group.
	Join []End
	// JoinID is the id of the group a join continues
	// (patterns.JoinGroup). Defaults to a fresh group id in Queue.
	JoinID string
	// Context is the ctx the handler's derives from. Defaults to
	// context.Background().
	Context context.Context
}

// End is how a task (or a nested group) ended, given to a handler run
// alone as its parent's or its group's members' end.
type End struct {
	// ID defaults to a fresh id: a task id, or a group id when Group is
	// set (a join's member i gets "<queue>/<group's own id>.<i>", as a
	// group names its members).
	ID     string
	State  client.State // StateSucceeded, StateDead or StateCancelled
	Result any          // a succeeded task's result, encoded as a handler's is
	Err    string       // a task's error, when it did not succeed
	// Attempt is the attempt the task ended in (client.TaskError.Attempt).
	// Defaults to 1, except for a cancelled task: 0, as Redis records a
	// task cancelled before it ran (set it for one cancelled while it ran).
	Attempt int
	// Group, set, makes this the end of a nested group (a member of a
	// join's group that is a group itself): State StateSucceeded is a
	// group that succeeded, StateDead one that failed, StateCancelled one
	// that was cancelled; the join sees a *patterns.GroupError for the
	// last two. Result and Err are then left empty.
	Group *GroupEnd
}

// GroupEnd is a nested group's count of members, as a
// *patterns.GroupError tells it.
type GroupEnd struct {
	Failed int    // members that did not succeed
	Total  int    // members
	First  string // the first member that did not succeed
}

// Succeeded is the end of a task that succeeded with result.
func Succeeded(result any) End { return End{State: client.StateSucceeded, Result: result} }

// Dead is the end of a task that failed for good with message msg.
func Dead(msg string) End { return End{State: client.StateDead, Err: msg} }

// Cancelled is the end of a task that was cancelled before it ran
// (attempt 0); set Attempt for one cancelled while it ran.
func Cancelled() End { return End{State: client.StateCancelled, Err: "cancelled"} }

// GroupEnded is the end of a nested group, in state (StateSucceeded,
// StateDead for a failed group, StateCancelled) with g's counts.
func GroupEnded(state client.State, g GroupEnd) End { return End{State: state, Group: &g} }

// RunResult is what a handler run alone returned.
type RunResult[R any] struct {
	// Value is the handler's result, after the msgpack round trip a
	// caller's client.Result makes.
	Value R
	// Err is the handler's error, as the function a worker registers for
	// it (worker.Handle) returns it: a panic becomes a *worker.PanicError,
	// args that do not decode or a result that does not encode a
	// worker.Permanent error. How the worker goes on from it (a retry,
	// the dead-letter store, a timeout's or a past deadline's end) is not
	// applied.
	Err error
	// Task is the task the handler's ctx carried.
	Task worker.Task
	// Children are the tasks the handler enqueued with its ctx, in order,
	// as the fleet's clients recorded them (see Fleet.Enqueued; a client
	// the fleet did not make records nothing).
	Children []client.Enqueued
	// Progress is the handler's last worker.ReportProgress, as it was
	// made (clamped; a worker writes done as total for a handler that
	// succeeded, this is the report itself), with the run's attempt and,
	// as Updated, when the handler returned (the local clock). Nothing is
	// written to Redis. Zero (Reported false) when it reported nothing.
	Progress client.Progress
}

// Run runs fn once, synchronously, as a worker runs one attempt of args'
// task: args go through the msgpack round trip a task's args make, and the
// ctx carries the task opts describe (opts may be nil). It needs no worker
// nor coordinator: the fleet's client gives the defaults and records the
// children, which are real tasks in Redis (the fleet's workers run them,
// if any serve their kinds).
//
// In fn's ctx, worker.TaskFromContext, Meta, TraceContext, Parent and
// ParentResult, and patterns.JoinOutcomes, JoinResults and JoinGroup answer
// as in a worker (the parent's and the members' ends are opts.Parent's and
// opts.Join's, not read from Redis); a task enqueued with the ctx (by
// client.Enqueue, EnqueueMany, patterns' groups...) is its child,
// inheriting its metadata, trace context and deadline. There is no worker
// behind the ctx: no lease nor heartbeats, no cancellation from
// client.Handle.Cancel, no worker events, logs, middleware or spans; a
// handler registered with worker.HandleBatch is run with RunBatch.
//
// Opts a client or a worker would refuse fail the test (t.Fatalf, naming
// the field): call Run from the test's goroutine.
func Run[A client.Args, R any](f *Fleet, fn func(ctx context.Context, args A) (R, error), args A, opts *RunOpts) *RunResult[R] {
	f.t.Helper()
	var zero A
	kind := zero.Kind()
	payload, err := codec.Marshal(args)
	if err != nil {
		f.t.Fatalf("asynctest.Run %s: args: %v (a client refuses to enqueue them)", kind, err)
	}
	rc := f.runContext("asynctest.Run", kind, opts, "run-")
	defer rc.release()
	res := &RunResult[R]{Task: rc.task}
	out, err := callAlone(func() ([]byte, error) {
		// As worker.Handle's registered function.
		var a A
		if err := codec.Unmarshal(payload, &a); err != nil {
			return nil, worker.Permanent(fmt.Errorf("decode %s args into %T: %w", kind, a, err))
		}
		r, err := fn(rc.ctx, a)
		if err != nil {
			return nil, err
		}
		out, err := codec.Marshal(r)
		if err != nil {
			return nil, worker.Permanent(fmt.Errorf("encode %s result %T: %w", kind, r, err))
		}
		return out, nil
	})
	res.Err = err
	if err == nil && len(out) > 0 {
		if derr := codec.Unmarshal(out, &res.Value); derr != nil {
			res.Err = fmt.Errorf("decode %s result into %T: %w", kind, res.Value, derr)
		}
	}
	res.Children = f.children(rc.task.ID)
	if done, total, ok := worker.ReportedProgress(rc.ctx); ok {
		res.Progress = client.Progress{Done: done, Total: total, Attempt: rc.task.Attempt, Updated: time.Now()}
	}
	return res
}

// BatchResult is what a batch handler run alone returned.
type BatchResult[Out any] struct {
	// Results has one result per item (after the msgpack round trip)
	// when the batch succeeded, in whole or in part; a failed item's is
	// Out's zero value. Nil when the batch failed as a whole (Err).
	Results []Out
	// Failed are the items that failed, by index in items: those a
	// worker.BatchErrors named (with its error), those whose args did not
	// decode or whose result did not encode (a worker dead-letters them
	// with that message). Nil when none did.
	Failed map[int]error
	// Err is the batch's error as a whole: an error other than
	// BatchErrors (a panic's a *worker.PanicError; a worker runs the batch
	// again, up to its MaxAttempts, unless it is worker.Permanent), or a
	// count of results that does not match the items (a worker
	// dead-letters every item with it).
	Err      error
	Task     worker.Task
	Children []client.Enqueued
}

// RunBatch runs a batch handler (worker.HandleBatch) once on items, as a
// worker runs a batch of them, and checks its answer as a worker does.
// items go through the msgpack round trip of a batch's items; an item
// that does not decode is left out of the slice fn gets (as a worker
// leaves it) and is Failed. The ctx is Run's (see Run for what it
// supports), of a batch task of In's kind; opts.Parent and opts.Join do
// not apply to a batch.
func RunBatch[In client.Args, Out any](f *Fleet, fn func(ctx context.Context, items []In) ([]Out, error), items []In, opts *RunOpts) *BatchResult[Out] {
	f.t.Helper()
	var zero In
	kind := zero.Kind()
	if len(items) == 0 {
		f.t.Fatalf("asynctest.RunBatch %s: no items (a worker never runs an empty batch)", kind)
	}
	if opts != nil && (opts.Parent != nil || opts.Join != nil) {
		f.t.Fatalf("asynctest.RunBatch %s: RunOpts.Parent and RunOpts.Join are for tasks, not batches", kind)
	}
	raw := make([][]byte, len(items))
	for i, it := range items {
		b, err := codec.Marshal(it)
		if err != nil {
			f.t.Fatalf("asynctest.RunBatch %s: items[%d]: %v (a batch refuses to append it)", kind, i, err)
		}
		raw[i] = b
	}
	rc := f.runContext("asynctest.RunBatch", kind, opts, keys.BatchKeyPrefix+"run-")
	defer rc.release()
	res := &BatchResult[Out]{Task: rc.task}
	fail := func(i int, err error) {
		if res.Failed == nil {
			res.Failed = make(map[int]error)
		}
		res.Failed[i] = err
	}
	// As the worker's runBatch (worker/batch.go).
	var (
		idx  []int // indexes of the items handed to fn
		vals []In
	)
	for i, r := range raw {
		var v In
		if err := codec.Unmarshal(r, &v); err != nil {
			fail(i, fmt.Errorf("decode %s item into %T: %w", kind, v, err))
			continue
		}
		idx, vals = append(idx, i), append(vals, v)
	}
	if len(vals) > 0 {
		var results []Out
		_, err := callAlone(func() ([]byte, error) {
			var err error
			results, err = fn(rc.ctx, vals)
			return nil, err
		})
		var be worker.BatchErrors
		switch {
		case err != nil && !errors.As(err, &be):
			res.Err = err
		case len(results) != len(vals) && be == nil:
			res.Err = fmt.Errorf("%s batch handler returned %d results for %d items", kind, len(results), len(vals))
		default:
			res.Results = make([]Out, len(items))
			for n, i := range idx {
				if e := be[n]; e != nil {
					fail(i, e)
					continue
				}
				if n >= len(results) {
					fail(i, fmt.Errorf("%s batch handler returned no result for item %d", kind, n))
					continue
				}
				b, err := codec.Marshal(results[n])
				if err != nil {
					fail(i, fmt.Errorf("encode %s result %T: %w", kind, results[n], err))
					continue
				}
				if err := codec.Unmarshal(b, &res.Results[i]); err != nil {
					fail(i, fmt.Errorf("decode %s result of item %d into %T: %w", kind, i, res.Results[i], err))
				}
			}
		}
	}
	res.Children = f.children(rc.task.ID)
	return res
}

// children are the tasks recorded as enqueued with the ctx of task id.
func (f *Fleet) children(id string) []client.Enqueued {
	if f.rec == nil {
		return nil
	}
	return f.rec.childrenOf(id)
}

// callAlone runs h, turning a panic into a *worker.PanicError with the
// stack, as a worker's attempt does.
func callAlone(h func() ([]byte, error)) (res []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &worker.PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return h()
}

// runCtx is the ctx of a handler run alone and the task it carries.
type runCtx struct {
	ctx     context.Context
	release context.CancelFunc
	task    worker.Task
}

// runContext checks opts and builds the handler's ctx of a task of kind
// from them; what names the caller in failure messages, keyPrefix starts
// a fresh task key.
func (f *Fleet) runContext(what, kind string, opts *RunOpts, keyPrefix string) runCtx {
	f.t.Helper()
	var o RunOpts
	if opts != nil {
		o = *opts
	}
	fatal := func(format string, a ...any) {
		f.t.Helper()
		f.t.Fatalf(what+" "+kind+": "+format, a...)
	}
	if f.client == nil {
		fatal("the fleet has no client")
	}
	e, _ := engine.Of[*client.Handle](f.client)
	if e == nil {
		fatal("the fleet's client is not built (client.New)")
	}
	key := keyPrefix + freshKey()
	if o.ID != "" {
		q, k, err := keys.SplitTaskID(o.ID)
		if err != nil {
			fatal("RunOpts.ID: %v", err)
		}
		if o.Queue != "" && o.Queue != q {
			fatal("RunOpts.ID %q is not in RunOpts.Queue %q", o.ID, o.Queue)
		}
		o.Queue, key = q, k
	}
	if o.Queue == "" {
		o.Queue = e.QueueOf(nil)
	} else if err := keys.ValidateName("queue", o.Queue); err != nil {
		fatal("RunOpts.Queue: %v", err)
	}
	id := keys.TaskID(o.Queue, key)
	if o.MaxAttempts == 0 {
		o.MaxAttempts = e.DefaultMaxAttempts()
	}
	if o.Attempt == 0 {
		o.Attempt = 1
	}
	if o.Deliveries == 0 {
		o.Deliveries = 1
	}
	switch {
	case o.MaxAttempts < 0:
		fatal("RunOpts.MaxAttempts is %d, must be positive", o.MaxAttempts)
	case o.Attempt < 0 || o.Attempt > o.MaxAttempts:
		fatal("RunOpts.Attempt is %d, must be 1 to MaxAttempts (%d)", o.Attempt, o.MaxAttempts)
	case o.Deliveries < 0:
		fatal("RunOpts.Deliveries is %d, must be positive", o.Deliveries)
	case o.Timeout < 0 || o.Timeout > 0 && o.Timeout < time.Millisecond:
		fatal("RunOpts.Timeout is %v, must be 0 (none) or at least 1ms", o.Timeout)
	case o.Parent != nil && o.Join != nil:
		fatal("RunOpts.Parent and RunOpts.Join are both set: a task continues a task or a group, not both")
	case o.JoinID != "" && o.Join == nil:
		fatal("RunOpts.JoinID is set without RunOpts.Join")
	}
	if o.PartitionKey != "" {
		if err := keys.ValidatePartitionKey(o.PartitionKey); err != nil {
			fatal("RunOpts.PartitionKey: %v", err)
		}
	}
	if err := engine.CheckInherited(o.Meta, o.TraceParent, o.TraceState); err != nil {
		fatal("RunOpts.%v", err)
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	in := &engine.TaskInfo{
		ID:          id,
		TraceParent: o.TraceParent,
		TraceState:  o.TraceState,
		Given:       &engine.Given{},
	}
	// In key order, as an enqueue encodes them.
	for _, k := range slices.Sorted(maps.Keys(o.Meta)) {
		in.Meta = append(in.Meta, k, o.Meta[k])
	}
	if !o.Deadline.IsZero() {
		in.DeadlineMs = e.RedisMs(o.Context, o.Deadline)
	}
	switch {
	case o.Parent != nil:
		p := *o.Parent
		if p.Group != nil {
			fatal("RunOpts.Parent.Group is set: a continuation continues a task; a group's continuation is a join (RunOpts.Join)")
		}
		if p.ID == "" {
			p.ID = keys.TaskID(o.Queue, "run-"+freshKey())
		}
		ts := f.endState(fatal, "RunOpts.Parent", p)
		in.Prev, in.Given.Parent = p.ID, &ts
	case o.Join != nil:
		gid := o.JoinID
		if gid == "" {
			gid = keys.GroupID(o.Queue, "g"+freshKey())
		}
		home, own, err := keys.SplitGroupID(gid)
		if err != nil {
			fatal("RunOpts.JoinID: %v", err)
		}
		in.Prev = gid
		in.Given.Members = make([]engine.GivenMember, len(o.Join))
		for i, m := range o.Join {
			field := "RunOpts.Join[" + strconv.Itoa(i) + "]"
			if m.ID == "" {
				// As a group names its members.
				if m.Group != nil {
					m.ID = keys.GroupID(home, own+"."+strconv.Itoa(i))
				} else {
					m.ID = keys.TaskID(home, own+"."+strconv.Itoa(i))
				}
			}
			if m.Group != nil {
				in.Given.Members[i] = engine.GivenMember{ID: m.ID, Group: f.groupEnd(fatal, field, m)}
				continue
			}
			in.Given.Members[i] = engine.GivenMember{ID: m.ID, Task: f.endState(fatal, field, m)}
		}
	}
	ctx, release := engine.HandlerContext(o.Context, engine.HandlerTask{
		ID: id, Queue: o.Queue, Kind: kind,
		Attempt: o.Attempt, MaxAttempts: o.MaxAttempts, Deliveries: o.Deliveries,
		PartitionKey: o.PartitionKey,
		Deadline:     o.Deadline, Timeout: o.Timeout,
	}, in)
	t, _ := worker.TaskFromContext(ctx)
	return runCtx{ctx: ctx, release: release, task: t}
}

// endState is a task's end as Redis keeps it (store.TaskState), checked.
func (f *Fleet) endState(fatal func(string, ...any), field string, e End) store.TaskState {
	f.t.Helper()
	if e.Group != nil {
		fatal("%s.Group is set: not a task's end", field)
	}
	if _, _, err := keys.SplitTaskID(e.ID); err != nil {
		fatal("%s.ID: %v", field, err)
	}
	switch e.State {
	case client.StateSucceeded:
		if e.Err != "" {
			fatal("%s.Err is set on a succeeded end: only a task that did not succeed has an error", field)
		}
	case client.StateDead, client.StateCancelled:
		if e.Result != nil {
			fatal("%s.Result is set on a %s end: only a succeeded task has a result", field, e.State)
		}
	default:
		fatal("%s.State is %q: an End is %s, %s or %s", field, e.State, client.StateSucceeded, client.StateDead, client.StateCancelled)
	}
	switch {
	case e.Attempt == 0 && e.State != client.StateCancelled:
		e.Attempt = 1
	case e.Attempt < 0:
		fatal("%s.Attempt is %d, must be positive", field, e.Attempt)
	}
	ts := store.TaskState{State: string(e.State), Attempt: e.Attempt, Error: e.Err}
	if e.Result != nil {
		b, err := codec.Marshal(e.Result)
		if err != nil {
			fatal("%s.Result: %v (a handler's result that does not encode is no task's result)", field, err)
		}
		ts.Result = b
	}
	return ts
}

// groupEnd is a nested group's end as package patterns reads it, checked.
func (f *Fleet) groupEnd(fatal func(string, ...any), field string, e End) *engine.GivenGroup {
	f.t.Helper()
	if !keys.IsGroupID(e.ID) {
		fatal("%s.ID %q is not a group id (group:<queue>/<id>)", field, e.ID)
	}
	if _, _, err := keys.SplitGroupID(e.ID); err != nil {
		fatal("%s.ID: %v", field, err)
	}
	if e.Result != nil || e.Err != "" {
		fatal("%s: a nested group's end has no Result nor Err (its error is a *patterns.GroupError)", field)
	}
	g := *e.Group
	if g.Failed < 0 || g.Total < 0 || g.Failed > g.Total {
		fatal("%s.Group: Failed %d of Total %d; need 0 <= Failed <= Total", field, g.Failed, g.Total)
	}
	gg := &engine.GivenGroup{Failed: g.Failed, Total: g.Total, First: g.First}
	switch e.State {
	case client.StateSucceeded:
		if g.Failed != 0 {
			fatal("%s.Group.Failed is %d on a group that succeeded", field, g.Failed)
		}
		gg.State = "succeeded"
	case client.StateDead:
		gg.State = "failed"
	case client.StateCancelled:
		gg.State = "cancelled"
	default:
		fatal("%s.State is %q: a nested group's End is %s, %s (failed) or %s", field, e.State, client.StateSucceeded, client.StateDead, client.StateCancelled)
	}
	return gg
}

// freshKey is a new random part of a key.
func freshKey() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}
