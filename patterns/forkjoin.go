package patterns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/ratelimit"
)

// GroupOpts configures a group: ForkJoin, InvokeAll, Throttle, Spread, Sub,
// Partition and Partitioner.Flush take one. A nil *GroupOpts means every
// default.
type GroupOpts struct {
	// ID names the group (the name rule [A-Za-z0-9._-], at most 100
	// bytes): starting a group with the same ID again adds nothing and
	// returns a handle with Duplicate true, and a call that failed halfway
	// may be made again to complete it. Members in other queues than the
	// group's, and InvokeAll's, get task ids derived from it
	// ("<queue>/<id>.<index>"); members in the group's own queue get
	// generated ids (Group.Members lists them all), unless that queue is
	// sharded: its members are members of other queues then, on its
	// shards ("<shard>/<id>.<index>"). Defaults to a random
	// id. Not for Sub: a nested group's id derives from its parent's.
	ID string

	// Queue is the group's home queue, whose Redis slot holds the group's
	// state. Defaults to the queue of the first member. A shard's name
	// stands for its sharded queue, whose group state lives in the slot
	// of its plain queue (which its workers serve) and whose members go on
	// its shards.
	Queue string

	// FailFast ends the group at the first member that does not succeed:
	// the group ends GroupFailed at once, its continuations (the join)
	// start, and the members not yet ended are cancelled.
	FailFast bool

	// Retention is how long the group's state is kept once it ended.
	// Defaults to the client's Config.Retention. Members keep their own
	// retention (EnqueueOpts.Retention).
	Retention time.Duration
}

// options is a group's settings: its GroupOpts and what the pattern adds.
type options struct {
	id        string
	nonce     string // the group's incarnation, in its members' derived keys (top-level groups)
	queue     string
	failFast  bool
	retention time.Duration
	rate      *ratelimit.Limit // Throttle's
	spread    time.Duration    // Spread's window
	start     time.Time        // Spread's start
}

func optionsOf(g *GroupOpts) options {
	if g == nil {
		return options{}
	}
	return options{id: g.ID, queue: g.Queue, failFast: g.FailFast, retention: g.Retention}
}

// ForkJoin enqueues every spec as a member of a new group (pipelined) and
// returns the group's handle. join, when not nil, is a task that runs once
// every member has ended, exactly once, however the members ended (with
// GroupOpts.FailFast: at the first failure); its handler reads the members'
// outcomes with JoinOutcomes or JoinResults. A spec made by Sub is a nested
// group. opts may be nil.
//
// Every spec is checked before anything is written; EnqueueOpts.ID must be
// empty (members' ids derive from the group's, see GroupOpts.ID). A member
// in any queue may end the group: its end is handed to the group's slot in a
// second, idempotent step. Called from a handler, the members become the
// handler task's children (cancelling that task cancels them).
func ForkJoin(ctx context.Context, c *client.Client, specs []client.Spec, join *client.Spec, opts *GroupOpts) (*Group, error) {
	return begin(ctx, c, specs, join, 0, optionsOf(opts))
}

// InvokeAll is ForkJoin without a join, where at most concurrency members
// are admitted at a time across every worker and process: the others wait in
// Redis, outside the queues' streams (so they never hold a worker), and each
// member that ends releases the next, in submission order. An admitted
// member holds its slot until it ends, including its retries; one whose
// worker dies keeps it while its lease runs out and another worker takes it
// over, so slots never leak. concurrency 0 means ForkJoin; nested groups are
// not allowed. The group's handle supports ContinueWith.
func InvokeAll(ctx context.Context, c *client.Client, specs []client.Spec, concurrency int, opts *GroupOpts) (*Group, error) {
	if concurrency < 0 {
		return nil, fmt.Errorf("patterns.InvokeAll: concurrency is %d, must be 0 (no limit) or more", concurrency)
	}
	return begin(ctx, c, specs, nil, concurrency, optionsOf(opts))
}

// Throttle is ForkJoin without a join whose members start at most rate per
// every across the whole fleet (grab/async's Throttle), evenly spaced: one
// every every/rate. A member waits for its turn in Redis, holding no worker,
// and takes its token when it starts (see ratelimit.Limiter.Take), so the
// rate holds however many workers and processes run the group. The group's
// bucket is "g:<home>/<id>" (package ratelimit). Nested groups are not
// allowed. The group's handle supports ContinueWith.
func Throttle(ctx context.Context, c *client.Client, specs []client.Spec, rate int, every time.Duration, opts *GroupOpts) (*Group, error) {
	lim := ratelimit.Limit{Rate: rate, Per: every}
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("patterns.Throttle: rate %d per %v: %w", rate, every, err)
	}
	o := optionsOf(opts)
	o.rate = &lim
	return begin(ctx, c, specs, nil, 0, o)
}

// Spread is ForkJoin without a join whose members start evenly over within
// (grab/async's Spread): member i is due at start + i·within/n, timed by
// Redis' clock. Each member waits in Redis with its own due time, so a
// coordinator (package coordinator) or worker that restarts midway leaves
// the remaining ones on schedule, and nothing bunches up. Run at least one
// coordinator for starts within milliseconds of their times (workers alone
// move due tasks within a second). Nested groups are not allowed; the
// group's handle supports ContinueWith.
func Spread(ctx context.Context, c *client.Client, specs []client.Spec, within time.Duration, opts *GroupOpts) (*Group, error) {
	if within <= 0 {
		return nil, fmt.Errorf("patterns.Spread: within is %v, must be positive", within)
	}
	o := optionsOf(opts)
	o.spread, o.start = within, time.Now()
	return begin(ctx, c, specs, nil, 0, o)
}

// Sub describes a nested group: used as a spec of ForkJoin, it runs specs as
// a group of their own (with join, when not nil) and counts as one member
// of the outer group, ending when its join ends (or, without a join, when
// the nested group ends). Its members' ids derive from the outer group's id,
// so opts.ID must be empty; opts may be nil. A Sub spec is only for
// ForkJoin: enqueueing it otherwise fails.
func Sub(specs []client.Spec, join *client.Spec, opts *GroupOpts) client.Spec {
	return client.Spec{Args: &subGroup{specs: specs, join: join, opts: optionsOf(opts)}}
}

type subGroup struct {
	specs []client.Spec
	join  *client.Spec
	opts  options
}

func (*subGroup) Kind() string { return "patterns.Sub" }

// EncodeMsgpack refuses: a nested group is not a task.
func (*subGroup) EncodeMsgpack(*msgpack.Encoder) error {
	return errors.New("a patterns.Sub spec is a nested group, only for patterns.ForkJoin")
}

// plan is a group checked and encoded, not yet written.
type plan struct {
	ref      store.GroupRef
	settings store.GroupSettings
	members  []store.GroupMember
	children engine.Prepared  // members in other queues, or held
	fast     engine.Prepared  // members of the home queue, for SendMembers
	fastIdx  []int            // their submission indices
	join     *engine.Prepared // prepared join, or nil
	joinSpec string           // its continuation spec
	joinID   string           // its task id
	subs     []*plan
	nestIdx  int // as a nested group whose join is the member: its index in the parent
}

func begin(ctx context.Context, c *client.Client, specs []client.Spec, join *client.Spec, limit int, o options) (*Group, error) {
	what := "patterns.ForkJoin"
	if limit > 0 {
		what = "patterns.InvokeAll"
	}
	if o.rate != nil {
		what = "patterns.Throttle"
	}
	if o.spread > 0 {
		what = "patterns.Spread"
	}
	if c == nil {
		return nil, fmt.Errorf("%s: client is nil", what)
	}
	if o.id == "" {
		o.id = "g" + randomID()
	}
	o.nonce = strconv.FormatUint(rand.Uint64()|1<<62, 36)[:6] // 1<<62: at least 12 digits
	p, err := makePlan(ctx, c, specs, join, limit, o, link{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	st, nonce, err := store.NewGroup(ctx, engineOf(c).Redis(), p.ref, p.settings, o.nonce)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if st == "sealed" {
		// A call that failed after sealing may not have kept the join.
		if err := keepJoin(ctx, c, p.ref); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		return &Group{c: c, ref: p.ref, dup: true}, nil
	}
	if nonce != o.nonce {
		// A call that failed halfway made the group: complete it under
		// its keys.
		o.nonce = nonce
		if p, err = makePlan(ctx, c, specs, join, limit, o, link{}); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := run(ctx, c, p, true); err != nil {
		return nil, &IncompleteError{ID: o.id, Group: p.ref.String(), Err: fmt.Errorf("%s: %w", what, err)}
	}
	return &Group{c: c, ref: p.ref}, nil
}

// IncompleteError is returned when a group was created but not every
// member could be added: call again with GroupOpts.ID set to ID (and the
// same specs) to
// complete it, or cancel it (Open(c, Group), then Cancel). A group never
// completed nor cancelled is deleted after a week.
type IncompleteError struct {
	ID    string // the group's own id, for GroupOpts.ID
	Group string // its public id
	Err   error
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%v (group %s is incomplete: call again with GroupOpts.ID %q to complete it)", e.Err, e.Group, e.ID)
}

func (e *IncompleteError) Unwrap() error { return e.Err }

// link ties a nested group to its parent: either the group itself is a
// member (parent, entry), or its join is (joinGroup).
type link struct {
	parent, entry string
	joinGroup     string
}

// makePlan checks and encodes a group, recursively; nothing is written.
func makePlan(ctx context.Context, c *client.Client, specs []client.Spec, join *client.Spec, limit int, o options, l link) (*plan, error) {
	if err := keys.ValidateName("group id", o.id); err != nil {
		return nil, err
	}
	if len(o.id) > keys.MaxGroupIDLen {
		return nil, fmt.Errorf("group id %.40q... is %d bytes, the limit is %d (a nested group's id is its parent's plus .<nonce>.<index>, 8 or more bytes per level): %w", o.id, len(o.id), keys.MaxGroupIDLen, keys.ErrInvalidName)
	}
	home := o.queue
	if home == "" && len(specs) > 0 {
		home = queueOf(c, specs[0])
	}
	if home == "" {
		home = engineOf(c).QueueOf(nil)
	}
	home = logicalQueue(home)
	if err := keys.ValidateName("queue", home); err != nil {
		return nil, fmt.Errorf("home queue: %w", err)
	}
	if o.retention < 0 || o.retention > 0 && o.retention < time.Millisecond {
		return nil, fmt.Errorf("retention is %v, must be 0 (the client's) or at least 1ms", o.retention)
	}
	ret := o.retention
	if ret == 0 {
		ret = engineOf(c).Retention()
	}
	p := &plan{
		ref: store.GroupRef{Home: keys.ForQueue(home), ID: o.id},
		settings: store.GroupSettings{
			Members: len(specs), FailFast: o.failFast, Limit: limit, RetainMs: ret.Milliseconds(),
			Parent: l.parent, ParentEntry: l.entry,
		},
	}
	gid := p.ref.String()
	// Derived keys carry the group's incarnation, so that an id used again
	// once the group expired never meets its predecessor's members.
	base := o.id
	if o.nonce != "" {
		base += "." + o.nonce
	}
	// Throttle's members carry their limit and bucket.
	var rateKey string
	var rateN int
	var ratePer time.Duration
	if o.rate != nil {
		rateKey, rateN, ratePer = "g:"+home+"/"+base, o.rate.Rate, o.rate.Per
	}
	var items, fast []engine.Item
	var members []store.GroupMember
	var itemMember []int // the index in members of each of items
	for i, s := range specs {
		key := base + "." + strconv.Itoa(i)
		if o.rate != nil && s.Opts != nil && s.Opts.RateKey != "" {
			return nil, fmt.Errorf("spec %d: EnqueueOpts.RateKey %q is set, but Throttle's members take their tokens from the group's bucket (a task takes from one key)", i, s.Opts.RateKey)
		}
		if s.Opts != nil && s.Opts.ID != "" {
			return nil, fmt.Errorf("spec %d: EnqueueOpts.ID %q is set, but a group names its members itself (GroupOpts.ID on the group makes the call idempotent)", i, s.Opts.ID)
		}
		sg, nested := s.Args.(*subGroup)
		if !nested {
			q := queueOf(c, s)
			var due time.Time
			if o.spread > 0 {
				due = o.start.Add(o.spread * time.Duration(i) / time.Duration(len(specs)))
			}
			if limit == 0 && logicalQueue(q) == home && due.IsZero() {
				// Lives where the group does: enqueued and added in one
				// step, as an auto-keyed task.
				fast = append(fast, engine.Item{Args: s.Args, Opts: optsOf(s.Opts), Group: gid, Index: i, RateKey: rateKey, RateN: rateN, RatePer: ratePer})
				p.fastIdx = append(p.fastIdx, i)
				continue
			}
			itemMember = append(itemMember, len(members))
			members = append(members, store.GroupMember{Index: i, Name: keys.TaskID(q, key), Held: limit > 0})
			items = append(items, engine.Item{Args: s.Args, Opts: optsOf(s.Opts), Key: key, Group: gid, Hold: limit > 0, Index: i, RateKey: rateKey, RateN: rateN, RatePer: ratePer, ProcessAt: due})
			continue
		}
		if limit > 0 || o.rate != nil || o.spread > 0 {
			return nil, fmt.Errorf("spec %d is a nested group (patterns.Sub); only ForkJoin takes those", i)
		}
		so := sg.opts
		if so.id != "" {
			return nil, fmt.Errorf("spec %d: a nested group's id derives from its parent's; GroupOpts.ID is not for Sub", i)
		}
		so.id = key
		so.nonce = "" // its id carries its parent's incarnation
		var sub *plan
		var err error
		if sg.join != nil {
			// The nested group's join stands for it in this group.
			sub, err = makePlan(ctx, c, sg.specs, sg.join, 0, so, link{joinGroup: gid})
			if err == nil {
				sub.nestIdx = i
				members = append(members, store.GroupMember{Index: i, Name: sub.joinID}) // its join's id, on its shard if sharded
			}
		} else {
			sub, err = makePlan(ctx, c, sg.specs, nil, 0, so, link{parent: gid})
			if err == nil {
				sub.settings.ParentEntry = sub.ref.String()
				members = append(members, store.GroupMember{Index: i, Name: sub.ref.String()})
			}
		}
		if err != nil {
			return nil, fmt.Errorf("spec %d (nested group): %w", i, err)
		}
		p.subs = append(p.subs, sub)
	}
	var err error
	if p.fast, err = engineOf(c).PrepareItems(ctx, fast); err != nil {
		return nil, err
	}
	if onShards(p.fast, home) {
		// The home queue is sharded: its members go on its shards, as
		// any task of it does (by partition key, else by the key the
		// group gives them), each in a slot other than the group's. They
		// join as members of other queues do: named first, then
		// enqueued, their ends reaching the group through their
		// queues' outboxes.
		for k, it := range fast {
			i := p.fastIdx[k]
			it.Key = base + "." + strconv.Itoa(i)
			itemMember = append(itemMember, len(members))
			members = append(members, store.GroupMember{Index: i})
			items = append(items, it)
		}
		p.fast, p.fastIdx = engine.Prepared{}, nil
	}
	p.members = members
	if p.children, err = engineOf(c).PrepareItems(ctx, items); err != nil {
		return nil, err
	}
	for j, it := range items {
		// A member of a sharded queue is named by its shard.
		members[itemMember[j]].Name = keys.TaskID(p.children.Queue(j), it.Key)
	}
	if join != nil {
		if join.Opts != nil && join.Opts.ID != "" {
			return nil, fmt.Errorf("join: EnqueueOpts.ID %q is set, but the join's id derives from the group's (%s.join)", join.Opts.ID, base)
		}
		ji := engine.Item{Args: join.Args, Opts: optsOf(join.Opts), Key: base + ".join", Hold: true, Prev: gid, Group: l.joinGroup}
		jp, err := engineOf(c).PrepareItems(ctx, []engine.Item{ji})
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		p.join = &jp
		p.joinSpec = store.ContSpec(jp.Queue(0), ji.Key, false)
		p.joinID = keys.TaskID(jp.Queue(0), ji.Key)
	}
	return p, nil
}

func queueOf(c *client.Client, s client.Spec) string { return engineOf(c).QueueOf(optsOf(s.Opts)) }

// logicalQueue is the queue that name stands for: the sharded queue of a
// shard's physical name (a handler's own queue, Task.Queue), else name.
func logicalQueue(name string) string {
	if q, _, ok := keys.ParseShard(name); ok {
		return q
	}
	return name
}

// onShards reports whether PrepareItems placed the members prepared in p,
// all sent to the group's home queue home, somewhere else: on the shards
// of a sharded home queue.
func onShards(p engine.Prepared, home string) bool {
	for i := range p.Len() {
		if p.Queue(i) != home {
			return true
		}
	}
	return false
}

// run writes a plan: the group (unless created is set: the caller made it)
// and its members first, then the join and the nested groups, then the
// members' tasks, and last the seal that lets the group end.
func run(ctx context.Context, c *client.Client, p *plan, created bool) error {
	rdb := engineOf(c).Redis()
	retain := engineOf(c).Retention().Milliseconds()
	if !created {
		st, _, err := store.NewGroup(ctx, rdb, p.ref, p.settings, "")
		if err != nil {
			return err
		}
		if st == "sealed" {
			return nil
		}
	}
	gst, err := store.AddGroupMembers(ctx, rdb, p.ref, p.members)
	if err != nil {
		return err
	}
	// The join is a task once its group is sealed and it is kept (not
	// before: it goes with the group should this call never get that far):
	// the enqueued hooks are told of it then.
	var joinPrep engine.Prepared
	var joinRefs []engine.Ref
	if GroupState(gst) == GroupRunning { // not ended, nor being cancelled
		if p.join != nil {
			joinPrep = p.join.Quiet()
			if joinRefs, err = engineOf(c).Send(ctx, joinPrep); err != nil {
				return fmt.Errorf("join: %w", err)
			}
			// Until the group is sealed, the join goes with it should
			// this call never get that far.
			jq, jkey, err := keys.SplitTaskID(p.joinID)
			if err != nil {
				return err
			}
			if err := store.ExpireUnsealedJoin(ctx, rdb, keys.ForQueue(jq), jkey); err != nil {
				return err
			}
			if err := store.SetGroupJoin(ctx, rdb, p.ref, p.joinID); err != nil {
				return err
			}
			if _, err := store.AddGroupContinuation(ctx, rdb, p.ref, p.joinSpec); err != nil {
				return err
			}
		}
		for _, sub := range p.subs {
			if sub.join != nil && sub.settings.Parent == "" {
				// Its join is the member: record the group itself so that
				// cancelling this one reaches it.
				if err := store.NestGroup(ctx, rdb, p.ref, sub.nestIdx, sub.ref); err != nil {
					return err
				}
			}
			if err := run(ctx, c, sub, false); err != nil {
				return fmt.Errorf("nested group %s: %w", sub.ref, err)
			}
		}
		if _, err := engineOf(c).Send(ctx, p.children); err != nil {
			return err
		}
		if _, err := engineOf(c).SendMembers(ctx, p.fast, p.ref.String(), p.fastIdx); err != nil && !errors.Is(err, engine.ErrGroupEnded) {
			return err
		}
	}
	if _, _, err = store.SealGroup(ctx, rdb, p.ref); err != nil {
		return err
	}
	if err := keepJoin(ctx, c, p.ref); err != nil {
		return err
	}
	if joinRefs != nil {
		engineOf(c).Tell(ctx, joinPrep, joinRefs)
	}
	gs, err := store.ReadGroup(ctx, rdb, p.ref)
	if err != nil {
		return err
	}
	if st := GroupState(gs.State); st == GroupFailed || st == GroupCancelled || gs.Cancel {
		// It ended (fail fast) or was cancelled while it was being made:
		// members created after the sweep that followed are cancelled here.
		names, err := store.GroupMemberNames(ctx, rdb, p.ref, gs.Members)
		if err != nil {
			return err
		}
		why := "group " + p.ref.String() + " ended or was cancelled while it was made"
		touched, err := store.CancelMembers(ctx, rdb, p.ref, names, why, retain)
		if err != nil {
			return err
		}
		// And the nested groups whose join stands for them.
		more, err := store.CancelOpenMembers(ctx, rdb, p.ref, why, retain)
		if err != nil {
			return err
		}
		touched = append(touched, more...)
		for _, q := range touched {
			_ = store.DrainOutbox(ctx, rdb, q, retain)
		}
	}
	// Work the group's outbox (a released InvokeAll member, an empty group's
	// join, cancelled members' notices) now rather than at a worker's next
	// sweep; the group is complete, so a failure here is left to that sweep.
	_ = store.DrainOutbox(ctx, rdb, p.ref.Home, retain)
	return nil
}

// keepJoin makes the join of the sealed group ref, if it has one, live until
// it ends (see store.KeepSealedJoin).
func keepJoin(ctx context.Context, c *client.Client, ref store.GroupRef) error {
	gs, err := store.ReadGroup(ctx, engineOf(c).Redis(), ref)
	if err != nil || gs.Join == "" {
		return err
	}
	jq, jkey, err := keys.SplitTaskID(gs.Join)
	if err != nil {
		return err
	}
	return store.KeepSealedJoin(ctx, engineOf(c).Redis(), keys.ForQueue(jq), jkey)
}

// JoinOutcomes returns how every member of the group that the running task
// continues ended, in submission order: call it from the handler of a join
// (ForkJoin) or of a group's continuation (Group.ContinueWith). The error
// joins the members' errors. In a handler run alone (asynctest.Run with
// RunOpts.Join) the members' ends are the ones the test gave.
func JoinOutcomes(ctx context.Context) ([]Outcome, error) {
	in, ok := engine.TaskOf(ctx)
	if !ok {
		return nil, errors.New("patterns.JoinOutcomes: ctx is not a handler's")
	}
	if !keys.IsGroupID(in.Prev) {
		return nil, fmt.Errorf("patterns.JoinOutcomes: task %s does not continue a group", in.ID)
	}
	if in.Given != nil {
		return givenOutcomes(in.Given.Members)
	}
	if in.Engine == nil {
		return nil, errors.New("patterns.JoinOutcomes: the worker carries no engine")
	}
	ref, err := store.ParseGroupRef(in.Prev)
	if err != nil {
		return nil, err
	}
	return readOutcomes(ctx, in.Engine, ref)
}

// JoinResults is JoinOutcomes with every result decoded into a T.
func JoinResults[T any](ctx context.Context) ([]T, error) {
	outs, err := JoinOutcomes(ctx)
	if outs == nil {
		return nil, err
	}
	return decodeAll[T](outs)
}

// JoinGroup returns the id of the group the running task continues, and
// whether it continues one.
func JoinGroup(ctx context.Context) (string, bool) {
	in, ok := engine.TaskOf(ctx)
	if !ok || !keys.IsGroupID(in.Prev) {
		return "", false
	}
	return in.Prev, true
}
