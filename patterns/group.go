package patterns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Group is a handle on a group of tasks started by ForkJoin, InvokeAll,
// Throttle, Spread or Partition. Its
// state lives in Redis, so any process may hold a handle (see Open).
type Group struct {
	c   *client.Client
	ref store.GroupRef
	dup bool
}

// Open returns a handle on the group with public id id ("group:<queue>/<id>",
// as Group.ID returns it). It does not check that the group exists.
func Open(c *client.Client, id string) (*Group, error) {
	if c == nil {
		return nil, errors.New("patterns.Open: client is nil")
	}
	ref, err := store.ParseGroupRef(id)
	if err != nil {
		return nil, fmt.Errorf("patterns.Open: %w", err)
	}
	return &Group{c: c, ref: ref}, nil
}

// ID returns the group's public id, "group:<home queue>/<id>".
func (g *Group) ID() string { return g.ref.String() }

// Duplicate reports that a group with this id had been started before (see
// GroupOpts.ID): nothing was added.
func (g *Group) Duplicate() bool { return g.dup }

// GroupState is the state of a group.
type GroupState string

// The states of a group. Succeeded, failed and cancelled are final.
const (
	GroupRunning   GroupState = "running"
	GroupSucceeded GroupState = "succeeded" // every member succeeded
	GroupFailed    GroupState = "failed"    // some member did not succeed
	GroupCancelled GroupState = "cancelled" // Cancel was called
)

// Final reports whether s is a final state: the group ended.
func (s GroupState) Final() bool {
	return s == GroupSucceeded || s == GroupFailed || s == GroupCancelled
}

// Progress is a group's counters, read in one round trip.
type Progress struct {
	State     GroupState // GroupRunning, GroupSucceeded, GroupFailed or GroupCancelled
	Total     int        // members
	Succeeded int        // members that succeeded
	Failed    int        // members that ended without success (dead, cancelled, a failed nested group)

	// WorkDone and WorkTotal sum what the members reported with
	// worker.ReportProgress (bytes, for uploads); a member that succeeded
	// counts as done in full. Both are 0 when no member reported.
	WorkDone  int64
	WorkTotal int64
}

// Done is how many members ended, however they ended.
func (p Progress) Done() int { return p.Succeeded + p.Failed }

// Ended reports whether the group ended.
func (p Progress) Ended() bool { return p.State != GroupRunning }

// ErrUnknownGroup is returned for a group that does not exist (never started,
// or ended longer ago than its retention).
var ErrUnknownGroup = errors.New("unknown group")

// Progress returns the group's counters without waiting, with the sums of
// its members' reports (WorkDone, WorkTotal), in one round trip. The sums
// count the members that reported, each by its last report as written
// (see worker.ReportProgress: coalesced, so a running member's may be a
// fraction of a second old); a member that succeeded counts as done in
// full. A nested group's members are not counted in its parent's sums.
func (g *Group) Progress(ctx context.Context) (Progress, error) {
	st, work, err := store.ReadGroupWithWork(ctx, engineOf(g.c).Redis(), g.ref)
	if err != nil {
		return Progress{}, err
	}
	if st.State == "" {
		return Progress{}, fmt.Errorf("group %s: %w", g.ID(), ErrUnknownGroup)
	}
	return Progress{State: GroupState(st.State), Total: st.Members, Succeeded: st.Succeeded, Failed: st.Failed,
		WorkDone: work.Done, WorkTotal: work.Total}, nil
}

// recheck bounds how long Wait trusts the notification channel alone.
const recheck = 5 * time.Second

// Wait waits until the group ended, or ctx is done, and returns its final
// counters. It does not read the members' outcomes (see Outcome).
func (g *Group) Wait(ctx context.Context) (Progress, error) {
	// Subscribe first, then read: an end after the read is announced.
	w, stop, err := engineOf(g.c).Watch(ctx, g.ref.Home.Done(), keys.GroupPrefix+g.ref.ID)
	if err != nil {
		return Progress{}, fmt.Errorf("wait for group %s: %w", g.ID(), err)
	}
	defer stop()
	t := time.NewTimer(recheck)
	defer t.Stop()
	for {
		p, err := g.Progress(ctx)
		if err != nil || p.Ended() {
			return p, err
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-w:
		case <-t.C:
			t.Reset(recheck)
		}
	}
}

// ErrNoJoin is returned by Join for a group started without one.
var ErrNoJoin = errors.New("group has no join")

// Join returns a handle on the group's join task (ForkJoin's join).
func (g *Group) Join(ctx context.Context) (*client.Handle, error) {
	st, err := store.ReadGroup(ctx, engineOf(g.c).Redis(), g.ref)
	if err != nil {
		return nil, err
	}
	if st.State == "" {
		return nil, fmt.Errorf("group %s: %w", g.ID(), ErrUnknownGroup)
	}
	if st.Join == "" {
		return nil, fmt.Errorf("group %s: %w", g.ID(), ErrNoJoin)
	}
	return g.c.Task(st.Join)
}

// Members returns handles on the group's members, in submission order. A
// nested group member has no task handle: its entry is nil (see Outcome for
// its id, and Open); so has a member never added (the group failed fast
// while it was being made).
func (g *Group) Members(ctx context.Context) ([]*client.Handle, error) {
	st, err := store.ReadGroup(ctx, engineOf(g.c).Redis(), g.ref)
	if err != nil {
		return nil, err
	}
	if st.State == "" {
		return nil, fmt.Errorf("group %s: %w", g.ID(), ErrUnknownGroup)
	}
	names, err := store.GroupMemberNames(ctx, engineOf(g.c).Redis(), g.ref, st.Members)
	if err != nil {
		return nil, err
	}
	out := make([]*client.Handle, len(names))
	for i, m := range names {
		if m == "" || keys.IsGroupID(m) {
			continue
		}
		if out[i], err = g.c.Task(m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MemberIDs returns the ids of the group's members in submission order (a
// task id "<queue>/<key>", a nested group's "group:<queue>/<id>", or "" for
// a member never added) and its join's task id ("" without one), in two
// reads, without the members' states.
func (g *Group) MemberIDs(ctx context.Context) (members []string, join string, err error) {
	st, err := store.ReadGroup(ctx, engineOf(g.c).Redis(), g.ref)
	if err != nil {
		return nil, "", err
	}
	if st.State == "" {
		return nil, "", fmt.Errorf("group %s: %w", g.ID(), ErrUnknownGroup)
	}
	names, err := store.GroupMemberNames(ctx, engineOf(g.c).Redis(), g.ref, st.Members)
	if err != nil {
		return nil, "", err
	}
	return names, st.Join, nil
}

// Outcome is how one member of a group ended.
type Outcome struct {
	ID     string       // the member's task id, or a nested group's id
	State  client.State // its final state; "" if it had not ended (see ErrUnfinished)
	Result []byte       // msgpack of its result, when it succeeded (see ResultOf)
	Err    error        // why it did not succeed: a *client.TaskError, a *GroupError, or ErrUnfinished
}

// ErrUnfinished is a member's error when it had not ended as its group ended
// (the group failed fast, or was cancelled, while it ran) or its record
// expired.
var ErrUnfinished = errors.New("member had not ended")

// GroupError is the error of a nested group that did not succeed.
type GroupError struct {
	ID     string
	State  GroupState // GroupFailed or GroupCancelled
	Failed int        // members that did not succeed
	Total  int
	First  string // the first member that did not succeed
}

func (e *GroupError) Error() string {
	return fmt.Sprintf("group %s %s: %d of %d members did not succeed, the first %s", e.ID, e.State, e.Failed, e.Total, e.First)
}

// ResultOf decodes a member's result into a T; it returns the member's error
// if it did not succeed.
func ResultOf[T any](o Outcome) (T, error) {
	var out T
	if o.Err != nil {
		return out, o.Err
	}
	if len(o.Result) == 0 {
		return out, nil
	}
	if err := codec.Unmarshal(o.Result, &out); err != nil {
		return out, fmt.Errorf("decode result of %s into %T: %w", o.ID, out, err)
	}
	return out, nil
}

// Outcome waits until the group ended, then returns how each member ended,
// in submission order, and the members' errors joined (nil when every member
// succeeded). With fail fast, a member still running when the group ended
// shows ErrUnfinished.
func (g *Group) Outcome(ctx context.Context) ([]Outcome, error) {
	if _, err := g.Wait(ctx); err != nil {
		return nil, err
	}
	return readOutcomes(ctx, engineOf(g.c), g.ref)
}

// Results waits for g and decodes every member's result into a T, in
// submission order. The error joins the members' errors; members that did
// not succeed have T's zero value.
func Results[T any](ctx context.Context, g *Group) ([]T, error) {
	outs, err := g.Outcome(ctx)
	if outs == nil {
		return nil, err
	}
	return decodeAll[T](outs)
}

func decodeAll[T any](outs []Outcome) ([]T, error) {
	res := make([]T, len(outs))
	var errs []error
	for i, o := range outs {
		v, err := ResultOf[T](o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res[i] = v
	}
	return res, errors.Join(errs...)
}

// readChunk is how many members one pipeline reads.
const readChunk = 1000

// readOutcomes reads how every member of an ended group ended.
func readOutcomes(ctx context.Context, e *engine.Engine, ref store.GroupRef) ([]Outcome, error) {
	rdb := e.Redis()
	gs, err := store.ReadGroup(ctx, rdb, ref)
	if err != nil {
		return nil, err
	}
	if gs.State == "" {
		return nil, fmt.Errorf("group %s: %w", ref, ErrUnknownGroup)
	}
	names, err := store.GroupMemberNames(ctx, rdb, ref, gs.Members)
	if err != nil {
		return nil, err
	}
	out := make([]Outcome, len(names))
	var errs []error
	for from := 0; from < len(names); from += readChunk {
		part := names[from:min(from+readChunk, len(names))]
		var tasks []string
		var at []int
		for j, m := range part {
			switch {
			case m == "":
				out[from+j] = Outcome{Err: fmt.Errorf("member %d was never added: %w", from+j, ErrUnfinished)}
			case keys.IsGroupID(m):
				out[from+j] = nestedOutcome(ctx, e, m)
			default:
				tasks = append(tasks, m)
				at = append(at, from+j)
			}
		}
		sts, err := store.States(ctx, rdb, tasks)
		if err != nil {
			return nil, err
		}
		for i, ts := range sts {
			out[at[i]] = taskOutcome(tasks[i], ts)
		}
	}
	for _, o := range out {
		if o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	return out, errors.Join(errs...)
}

func taskOutcome(id string, ts store.TaskState) Outcome {
	st := client.State(ts.State)
	switch {
	case st == client.StateSucceeded:
		return Outcome{ID: id, State: st, Result: ts.Result}
	case st.Final():
		return Outcome{ID: id, State: st, Err: &client.TaskError{ID: id, State: st, Attempt: ts.Attempt, Message: ts.Error}}
	default:
		return Outcome{ID: id, Err: fmt.Errorf("%s (%s): %w", id, orUnknown(ts.State), ErrUnfinished)}
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func nestedOutcome(ctx context.Context, e *engine.Engine, id string) Outcome {
	ref, err := store.ParseGroupRef(id)
	if err != nil {
		return Outcome{ID: id, Err: err}
	}
	gs, err := store.ReadGroup(ctx, e.Redis(), ref)
	if err != nil {
		return Outcome{ID: id, Err: err}
	}
	return groupOutcome(id, gs.State, gs.Failed, gs.Members, gs.First)
}

// groupOutcome is the outcome of the nested group id, in state with failed
// of its total members not succeeding, the first of them first.
func groupOutcome(id, state string, failed, total int, first string) Outcome {
	switch GroupState(state) {
	case GroupSucceeded:
		return Outcome{ID: id, State: client.StateSucceeded}
	case GroupFailed, GroupCancelled:
		st := client.StateDead
		if GroupState(state) == GroupCancelled {
			st = client.StateCancelled
		}
		return Outcome{ID: id, State: st, Err: &GroupError{ID: id, State: GroupState(state), Failed: failed, Total: total, First: first}}
	default:
		return Outcome{ID: id, Err: fmt.Errorf("%s (%s): %w", id, orUnknown(state), ErrUnfinished)}
	}
}

// givenOutcomes is readOutcomes for the members' ends a test gave a join
// run alone (asynctest.Run): the same outcomes, through the same
// conversions, and their errors joined.
func givenOutcomes(ms []engine.GivenMember) ([]Outcome, error) {
	out := make([]Outcome, len(ms))
	var errs []error
	for i, m := range ms {
		switch {
		case m.ID == "":
			out[i] = Outcome{Err: fmt.Errorf("member %d was never added: %w", i, ErrUnfinished)}
		case m.Group != nil:
			out[i] = groupOutcome(m.ID, m.Group.State, m.Group.Failed, m.Group.Total, m.Group.First)
		default:
			out[i] = taskOutcome(m.ID, m.Task)
		}
		if out[i].Err != nil {
			errs = append(errs, out[i].Err)
		}
	}
	return out, errors.Join(errs...)
}

// Cancel cancels the group: members not started never start, running ones
// are cancelled (see client.Handle.Cancel), nested groups are cancelled, and
// the group ends GroupCancelled once every member ended. Cancelling an ended
// group changes nothing. It returns once the requests are made.
func (g *Group) Cancel(ctx context.Context) error {
	st, err := store.CancelGroup(ctx, engineOf(g.c).Redis(), g.ref, "group "+g.ID()+" cancelled")
	if err != nil {
		return err
	}
	if st == "" {
		return fmt.Errorf("cancel group %s: %w", g.ID(), ErrUnknownGroup)
	}
	if GroupState(st) != GroupRunning {
		return nil
	}
	return store.DrainOutbox(ctx, engineOf(g.c).Redis(), g.ref.Home, engineOf(g.c).Retention().Milliseconds())
}

// ContinueWith registers args as a task that runs once the group has ended,
// exactly once, like client.Handle.ContinueWith; its handler reads the
// members' outcomes with JoinOutcomes or JoinResults. OnlyOnSuccess runs it
// only if every member succeeded (the group ended GroupSucceeded).
func (g *Group) ContinueWith(ctx context.Context, args client.Args, opts *client.ContinueOpts) (*client.Handle, error) {
	var o client.ContinueOpts
	if opts != nil {
		o = *opts
	}
	if o.Queue == "" {
		o.Queue = g.ref.Home.Name
	}
	if o.ID == "" {
		o.ID = "c-" + randomID()
	}
	if _, err := g.Progress(ctx); err != nil {
		return nil, fmt.Errorf("continue %s: %w", g.ID(), err)
	}
	eo := o.EnqueueOpts
	// The continuation is a task once registered: the enqueued hooks are
	// told of it then.
	placed, prep, err := engineOf(g.c).EnqueueItemsQuiet(ctx, []engine.Item{{Args: args, Opts: optsOf(&eo), Hold: true, Prev: g.ID()}})
	if err != nil {
		return nil, fmt.Errorf("continue %s: %w", g.ID(), err)
	}
	p := placed[0]
	h := handleOf(g.c, p)
	if p.Dup {
		st, err := h.State(ctx)
		if err != nil {
			return h, err
		}
		if st != client.StateWaiting {
			engineOf(g.c).Tell(ctx, prep, placed)
			return h, nil
		}
	}
	fired, err := store.AddGroupContinuation(ctx, engineOf(g.c).Redis(), g.ref, store.ContSpec(p.Queue, p.Key, o.OnlyOnSuccess))
	if errors.Is(err, store.ErrUnknownTask) {
		// The group vanished (it expired) since it was looked up: the
		// waiting continuation would wait for ever; cancel it.
		_, _ = h.Cancel(ctx)
		return nil, fmt.Errorf("continue %s: %w", g.ID(), ErrUnknownGroup)
	}
	if err != nil {
		return nil, err
	}
	engineOf(g.c).Tell(ctx, prep, placed)
	if fired {
		// Start it now rather than at the next sweep; the registration
		// stands either way, so a failure is left to that sweep.
		_ = store.DrainOutbox(ctx, engineOf(g.c).Redis(), g.ref.Home, engineOf(g.c).Retention().Milliseconds())
	}
	return h, nil
}

func randomID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}
