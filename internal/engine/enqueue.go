package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/combine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/ratelimit"
)

// Opts are a task's options. client.EnqueueOpts documents each field; it
// has the same fields in the same order, so that a *client.EnqueueOpts
// converts to an *Opts.
type Opts struct {
	Queue        string
	ID           string
	MaxAttempts  int
	Timeout      time.Duration
	Retention    time.Duration
	Deadline     time.Time
	Meta         map[string]string
	TraceParent  string
	TraceState   string
	ProcessAt    time.Time
	Delay        time.Duration
	RateKey      string
	PartitionKey string
}

// Redis answers LOADING while it reads its data back after a restart; an
// enqueue that meets it (after go-redis' own retries) is sent again, with the
// same op marker, for up to loadingPatience, with a backoff growing from
// loadingBackoff to loadingMaxBackoff. Engine.markerTTL covers that time.
const (
	loadingPatience   = 5 * time.Second
	loadingBackoff    = 50 * time.Millisecond
	loadingMaxBackoff = time.Second
)

// chunk is the most tasks one enqueue script call carries.
const chunk = 500

type prepared struct {
	queue  string
	task   store.NewTask
	parent string // id of the task whose handler enqueues this one

	// told is what Config.Enqueued is told of the task once it is in
	// Redis (its Ref set then); nil when no one listens.
	told *EnqueuedTask

	retain time.Duration // how long the task's record outlives its end

	// earlier are the queues where an earlier task of the key the task was
	// placed by may be, after a change of its sharded queue's layout
	// (findEarlier; shard21.go); userID is the id the caller gave ("" for
	// none, or one generated: no earlier task has it).
	earlier []string
	userID  string
	target  string // where the task goes should its key's tasks in earlier be gone
}

// clockRefresh is how old the client's measure of Redis time may get before
// a deadline re-measures it.
const clockRefresh = time.Minute

// Bounds of metadata and trace context.
const (
	maxMetaEntries  = 64
	maxMetaKey      = 128
	maxMetaValue    = 4096
	maxTraceState   = 512
	traceParentSize = 55
)

// extra is what the patterns put in a task's envelope beyond its options.
type extra struct {
	prev      string // the task or group a continuation continues
	group     string // the group the task is a member of
	spread    bool   // a member whose due time the pattern chose (Spread)
	rateN     int    // a carried rate limit (patterns.Throttle)
	ratePerUs int64
	template  bool // a template scripts copy later (Template): not stamped

	send sendSpan // the producer span of the call
}

// prepare checks and encodes one task. A ctx of a running handler makes the
// task its child.
func (e *Engine) prepare(ctx context.Context, args Args, o *Opts, x extra) (prepared, error) {
	if args == nil {
		return prepared{}, errors.New("enqueue: args is nil")
	}
	var opts Opts
	if o != nil {
		opts = *o
	}
	kind := args.Kind()
	if err := keys.ValidateName("kind", kind); err != nil {
		return prepared{}, fmt.Errorf("enqueue %T: %w", args, err)
	}
	if e.cfg.Hook != nil {
		if opts.Queue == "" {
			opts.Queue = e.cfg.DefaultQueue
		}
		opts.Meta = maps.Clone(opts.Meta)
		hctx := ctx
		if d, ok := ctx.(detached); ok {
			hctx = d.Context // the hook sees the caller's values
		}
		if err := e.cfg.Hook(hctx, args, &opts); err != nil {
			return prepared{}, fmt.Errorf("enqueue %s: refused by the enqueue hook: %w", kind, err)
		}
	}
	if opts.Queue == "" {
		opts.Queue = e.cfg.DefaultQueue
	} else if q, _, ok := keys.ParseShard(opts.Queue); ok {
		// A shard's name (a handler's own queue, a handle's) stands for
		// its queue: placement chooses the shard, so that a task id and a
		// partition key keep to one shard and no task lands on a shard
		// the queue does not have.
		opts.Queue = q
	} else if err := keys.ValidateName("queue", opts.Queue); err != nil {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Queue: %w", kind, err)
	}
	userID := opts.ID // the caller's, not one generated below
	if opts.ID != "" {
		if err := keys.ValidateName("task id", opts.ID); err != nil {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.ID: %w", kind, err)
		}
		if keys.IsEntryID(opts.ID) {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.ID %q has the shape of a generated id (digits-digits): %w", kind, opts.ID, ErrInvalidName)
		}
		if strings.HasPrefix(opts.ID, keys.BatchKeyPrefix) {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.ID %q starts with %q, which names batches (patterns.Batch): %w", kind, opts.ID, keys.BatchKeyPrefix, ErrInvalidName)
		}
	}
	switch {
	case opts.MaxAttempts == 0:
		opts.MaxAttempts = e.cfg.DefaultMaxAttempts
	case opts.MaxAttempts < 0:
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.MaxAttempts is %d, must be positive", kind, opts.MaxAttempts)
	}
	if opts.Timeout < 0 || opts.Timeout > 0 && opts.Timeout < time.Millisecond {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Timeout is %v, must be 0 (none) or at least 1ms", kind, opts.Timeout)
	}
	if opts.Retention == 0 {
		opts.Retention = e.cfg.Retention
	} else if opts.Retention < time.Millisecond {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Retention is %v, must be at least 1ms", kind, opts.Retention)
	}
	if len(opts.Meta) > maxMetaEntries {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Meta has %d entries, limit %d", kind, len(opts.Meta), maxMetaEntries)
	}
	for k, v := range opts.Meta {
		if k == "" || len(k) > maxMetaKey || len(v) > maxMetaValue {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Meta entry %.40q: keys must be 1 to %d bytes, values at most %d", kind, k, maxMetaKey, maxMetaValue)
		}
	}
	explicitTrace := opts.TraceParent != ""
	if opts.TraceParent != "" && !validTraceParent(opts.TraceParent) {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.TraceParent %.64q is not a W3C traceparent (version-traceid-parentid-flags in lower-case hex, 55 bytes)", kind, opts.TraceParent)
	}
	if !opts.ProcessAt.IsZero() && opts.Delay != 0 {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.ProcessAt and EnqueueOpts.Delay are both set; set one", kind)
	}
	if opts.Delay < 0 {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Delay is %v, must not be negative", kind, opts.Delay)
	}
	if opts.PartitionKey != "" {
		if err := keys.ValidatePartitionKey(opts.PartitionKey); err != nil {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.PartitionKey: %w", kind, err)
		}
		switch {
		case !opts.ProcessAt.IsZero() || opts.Delay > 0:
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.PartitionKey and ProcessAt/Delay are both set; a partitioned task starts when the tasks of its key before it ended", kind)
		case x.group != "" || x.prev != "":
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.PartitionKey is for tasks enqueued on their own, not a group's members, joins or continuations", kind)
		}
		if opts.ID == "" {
			// A task waiting behind others of its key needs a record, so
			// a key, before it has a stream entry.
			opts.ID = "p-" + newOpID()
		}
	}
	var dueMs int64
	if !opts.ProcessAt.IsZero() || opts.Delay > 0 {
		if (x.group != "" && !x.spread) || x.prev != "" {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.ProcessAt and Delay are for tasks enqueued on their own, not a group's members, joins or continuations", kind)
		}
		e.clock.Refresh(ctx, e.rdb, clockRefresh)
		if opts.ProcessAt.IsZero() {
			dueMs = e.clock.Now().Add(opts.Delay).UnixMilli()
		} else {
			dueMs = e.clock.FromCaller(opts.ProcessAt).UnixMilli()
		}
		if opts.ID == "" {
			// A delayed task waits in a record of its own: it needs a key
			// before it has a stream entry.
			opts.ID = "d-" + newOpID()
		}
	}
	if opts.RateKey != "" {
		if err := ratelimit.ValidateKey(opts.RateKey); err != nil {
			return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.RateKey: %w", kind, err)
		}
	}
	if len(opts.TraceState) > maxTraceState {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.TraceState is %d bytes, limit %d", kind, len(opts.TraceState), maxTraceState)
	}
	var parent string
	meta := opts.Meta
	var metaPairs []string
	var parentDeadlineMs int64
	if in, ok := TaskOf(ctx); ok {
		// Enqueued from a handler: a child of its task.
		if err := ctx.Err(); err != nil {
			// The handler was cancelled (its task too, perhaps): a child
			// enqueued now could escape that cancellation.
			return prepared{}, fmt.Errorf("enqueue %s from the handler of %s: %w", kind, in.ID, err)
		}
		parent = in.ID
		parentDeadlineMs = in.DeadlineMs
		if opts.TraceParent == "" {
			opts.TraceParent, opts.TraceState = in.TraceParent, in.TraceState
		}
		for i := 0; i+1 < len(in.Meta); i += 2 {
			if _, own := meta[in.Meta[i]]; !own {
				metaPairs = append(metaPairs, in.Meta[i], in.Meta[i+1])
			}
		}
	}
	// In key order, so that the same options encode the same everywhere (a
	// repeat schedule declared by many processes compares encodings).
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		metaPairs = append(metaPairs, k, meta[k])
	}
	if len(metaPairs) > 2*maxMetaEntries {
		return prepared{}, fmt.Errorf("enqueue %s: metadata with the inherited entries has %d entries, limit %d", kind, len(metaPairs)/2, maxMetaEntries)
	}
	var deadlineMs int64
	if !opts.Deadline.IsZero() {
		e.clock.Refresh(ctx, e.rdb, clockRefresh)
		deadlineMs = e.clock.FromCaller(opts.Deadline).UnixMilli()
	}
	// A child inherits its parent task's deadline (not the attempt's
	// timeout, nor a deadline the caller put on ctx for this call).
	if parentDeadlineMs > 0 && (deadlineMs == 0 || parentDeadlineMs < deadlineMs) {
		deadlineMs = parentDeadlineMs
	}
	opts.TraceParent, opts.TraceState = taskTrace(ctx, &opts, explicitTrace, x.send)
	payload, err := codec.Marshal(args)
	if err != nil {
		return prepared{}, fmt.Errorf("enqueue %s: encode args: %w", kind, err)
	}
	if len(payload) > e.cfg.MaxPayloadBytes {
		return prepared{}, fmt.Errorf("enqueue %s: args encode to %d bytes, limit %d: %w", kind, len(payload), e.cfg.MaxPayloadBytes, ErrPayloadTooLarge)
	}
	var enqueuedMs int64
	if opts.ID != "" && !x.template {
		// A keyed task's entry id does not tell when it was enqueued.
		e.clock.Refresh(ctx, e.rdb, clockRefresh)
		enqueuedMs = e.clock.Now().UnixMilli()
	}
	env := codec.AppendEnvelope(make([]byte, 0, len(payload)+len(kind)+len(opts.ID)+48), &codec.Envelope{
		Key:         opts.ID,
		Kind:        kind,
		Payload:     payload,
		Attempt:     1,
		MaxAttempts: opts.MaxAttempts,
		TimeoutMs:   opts.Timeout.Milliseconds(),
		RetainMs:    opts.Retention.Milliseconds(),
		DeadlineMs:  deadlineMs,
		Meta:        metaPairs,
		TraceParent: opts.TraceParent,
		TraceState:  opts.TraceState,
		Parent:      parent,
		Prev:        x.prev,
		Group:       x.group,
		RateKey:     opts.RateKey,
		RateN:       x.rateN,
		RatePerUs:   x.ratePerUs,
		Partition:   opts.PartitionKey,
		EnqueuedMs:  enqueuedMs,
	})
	queue := opts.Queue
	var pl placement
	if !x.template {
		// A sharded queue's task goes to one of its shards (shard21.go).
		if pl, err = e.place(ctx, queue, userID, opts.PartitionKey); err != nil {
			return prepared{}, fmt.Errorf("enqueue %s: %w", kind, err)
		}
		queue = pl.queue
	}
	p := prepared{queue: queue, task: store.NewTask{UserKey: opts.ID, Envelope: env, DueMs: dueMs, Part: opts.PartitionKey}, parent: parent, retain: opts.Retention, earlier: pl.earlier, userID: userID, target: pl.next}
	p.task.IfThereFromMs = pl.fromMs
	if e.cfg.Enqueued != nil && !x.template {
		// The options as sent: the metadata the task carries (inherited
		// entries too), the trace context it carries.
		sent := opts
		sent.Meta = nil
		if len(metaPairs) > 0 {
			sent.Meta = make(map[string]string, len(metaPairs)/2)
			for i := 0; i+1 < len(metaPairs); i += 2 {
				sent.Meta[metaPairs[i]] = metaPairs[i+1]
			}
		}
		p.told = &EnqueuedTask{Kind: kind, Args: args, Opts: &sent, Parent: parent, Continues: x.prev, Group: x.group}
	}
	return p, nil
}

// tell tells Config.Enqueued of the tasks of ps that refs places (a zero
// Ref: not added), in order. With no Config.Enqueued it costs one check.
func (e *Engine) tell(ctx context.Context, ps []prepared, refs []Ref) {
	if e.cfg.Enqueued == nil {
		return
	}
	if d, ok := ctx.(detached); ok {
		ctx = d.Context // the caller's values
	}
	for i, p := range ps {
		if i >= len(refs) || refs[i].Key == "" || p.told == nil {
			continue
		}
		t := *p.told
		t.Ref = refs[i]
		o := *t.Opts // each report its own copy
		o.Meta = maps.Clone(o.Meta)
		t.Opts = &o
		e.cfg.Enqueued(ctx, t)
	}
}

// validTraceParent checks the W3C form version-traceid-parentid-flags.
func validTraceParent(s string) bool {
	if len(s) != traceParentSize || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Enqueue adds one task and returns where it went; client.Client.Enqueue
// documents what its errors mean. Concurrent calls share round trips.
func (e *Engine) Enqueue(ctx context.Context, args Args, opts *Opts) (ref Ref, err error) {
	ctx, span := e.startSend(ctx, opts)
	var queues []string
	defer func() { span.end(queues, ref, err) }()
	p, err := e.prepare(ctx, args, opts, extra{send: span})
	if err != nil {
		return Ref{}, err
	}
	if len(p.earlier) > 0 {
		one := []prepared{p}
		if err := e.findEarlier(ctx, one); err != nil {
			return Ref{}, fmt.Errorf("enqueue %s: %w", args.Kind(), err)
		}
		p = one[0]
	}
	if span.records() {
		queues = []string{p.queue}
	}
	var h Ref
	if e.oneCall(p) && e.comb.Idle() && e.oneBusy.CompareAndSwap(false, true) {
		// One call at a time, and only while no batch is in flight:
		// concurrent calls share the combiner's round trips, which carry
		// more tasks per command than calls of their own would, and ids
		// sent side by side reach Redis out of order and send the later
		// ones to the fallback path.
		h, err = e.enqueueOne(ctx, p)
		e.oneBusy.Store(false)
	} else {
		h, err = e.comb.Do(ctx, p)
	}
	if err != nil && !(isShort(err) && h.Key != "") {
		return Ref{}, err
	}
	e.tell(ctx, []prepared{p}, []Ref{h})
	if p.parent != "" {
		if err := e.addKids(ctx, []prepared{p}, []Ref{h}); err != nil {
			return h, err
		}
	}
	return h, err // nil, or added but not confirmed on enough replicas
}

// Spec is one task for EnqueueMany.
type Spec struct {
	Args Args
	Opts *Opts
}

// EnqueueMany adds every task of specs in pipelined round trips and returns
// where each went, in the order of specs (client.Client.EnqueueMany
// documents its errors). All specs are checked before anything is sent; the
// first bad one fails the call and nothing is added.
func (e *Engine) EnqueueMany(ctx context.Context, specs []Spec) (refs []Ref, err error) {
	var first *Opts
	if len(specs) > 0 {
		first = specs[0].Opts
	}
	ctx, span := e.startSend(ctx, first)
	var queues []string
	defer func() {
		var one Ref
		if len(refs) == 1 {
			one = refs[0]
		}
		span.end(queues, one, err)
	}()
	ps := make([]prepared, len(specs))
	for i, s := range specs {
		p, err := e.prepare(ctx, s.Args, s.Opts, extra{send: span})
		if err != nil {
			return nil, fmt.Errorf("spec %d: %w", i, err)
		}
		ps[i] = p
	}
	if err := e.findEarlier(ctx, ps); err != nil {
		return nil, err
	}
	if span.records() {
		queues = make([]string, len(ps))
		for i, p := range ps {
			queues[i] = p.queue
		}
	}
	hs, err := e.send(ctx, ps)
	// The tasks of the script calls that succeeded are in Redis, whether
	// or not others failed.
	e.tell(ctx, ps, hs)
	if err != nil && !isShort(err) {
		return nil, err
	}
	if len(ps) > 0 && ps[0].parent != "" {
		if err := e.addKids(ctx, ps, hs); err != nil {
			return hs, err
		}
	}
	return hs, err // nil, or added but not confirmed on enough replicas
}

// addKids records children under their parent (a separate step: the parent
// may live in another hash slot). If it fails, the children run all the same
// but cancelling the parent will not reach them; the error says so.
func (e *Engine) addKids(ctx context.Context, ps []prepared, hs []Ref) error {
	parent := ps[0].parent
	ids := make([]string, 0, len(hs))
	for i, h := range hs {
		if ps[i].parent == parent && !h.Dup {
			ids = append(ids, h.ID())
		}
	}
	pq, pkey, err := keys.SplitTaskID(parent)
	if err != nil {
		return err
	}
	if err := store.AddKids(ctx, e.rdb, keys.ForQueue(pq), pkey, ids); err != nil {
		return fmt.Errorf("tasks enqueued, but cancelling %s will not reach them: %w", parent, err)
	}
	return nil
}

// batchCall is one script call: up to chunk tasks of one queue
// (enqueue.lua), or of a group's members (groupenq.lua).
type batchCall struct {
	q    keys.Queue
	idx  []int // positions in the caller's slice
	call *store.Call
	n    int // groupenq.lua: the chunk's number

	ordered bool // carries partitioned tasks: must run after the calls before it

	op   string   // enqueue.lua: the call's op id
	done []string // enqueue.lua: op ids of earlier calls whose markers it shortens

	short error // added, but not confirmed on enough replicas (durable21.go)
}

// maxReadOps is how many op ids of calls whose replies were read the client
// keeps per queue; the markers of older ones just live out their TTL.
const maxReadOps = 64

// readOps holds, per queue, the op ids of the enqueue calls whose replies
// the client read, oldest first. Such a call is not sent again, so its
// marker is only needed for a try already on its way: the next call to the
// queue sets it to expire after store.MarkerGrace. The markers that live
// their whole TTL (markerTTL, minutes) are then those of calls in flight,
// failed, or last to a queue, whatever the rate of enqueues.
type readOps struct {
	mu sync.Mutex
	q  map[string][]string
}

// take removes and returns the op ids kept for queue.
func (r *readOps) take(queue string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := r.q[queue]
	delete(r.q, queue)
	return ids
}

// add keeps the op id of a call to queue whose reply was read.
func (r *readOps) add(queue, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.q == nil {
		r.q = map[string][]string{}
	}
	r.q[queue] = keepNewest(append(r.q[queue], id))
}

// putBack returns ids taken by a call that failed, ahead of those kept since.
func (r *readOps) putBack(queue string, ids []string) {
	if len(ids) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.q == nil {
		r.q = map[string][]string{}
	}
	r.q[queue] = keepNewest(append(slices.Clip(ids), r.q[queue]...))
}

// keepNewest drops the oldest ids beyond maxReadOps.
func keepNewest(ids []string) []string {
	if len(ids) > maxReadOps {
		return slices.Clone(ids[len(ids)-maxReadOps:])
	}
	return ids
}

// send enqueues ps, grouped per queue into script calls, pipelined in groups.
// On error, the handles of the tasks whose calls succeeded are set.
func (e *Engine) send(ctx context.Context, ps []prepared) ([]Ref, error) {
	out, errs := e.sendEach(ctx, ps)
	return out, firstErr(errs)
}

// sendEach is send with each task's own outcome: its handle, or the error of
// its call (a failure before anything was sent is every task's error).
func (e *Engine) sendEach(ctx context.Context, ps []prepared) ([]Ref, []error) {
	errs := make([]error, len(ps))
	fail := func(err error) ([]Ref, []error) {
		for i := range errs {
			errs[i] = err
		}
		return make([]Ref, len(ps)), errs
	}
	byQueue := map[string][]int{}
	var order []string
	for i, p := range ps {
		if _, ok := byQueue[p.queue]; !ok {
			order = append(order, p.queue)
		}
		byQueue[p.queue] = append(byQueue[p.queue], i)
	}
	var calls []*batchCall
	for _, qn := range order {
		q := keys.ForQueue(qn)
		if err := e.ensureGroup(ctx, q); err != nil {
			return fail(err)
		}
		idx := byQueue[qn]
		for len(idx) > 0 {
			n := min(len(idx), chunk)
			tasks := make([]store.NewTask, n)
			for j := 0; j < n; j++ {
				tasks[j] = ps[idx[j]].task
			}
			op, done := newOpID(), e.read.take(qn)
			bc := &batchCall{q: q, idx: idx[:n], call: store.EnqueueCall(q, op, e.markerTTL.Milliseconds(), tasks, done...), op: op, done: done}
			for _, t := range tasks {
				bc.ordered = bc.ordered || t.Part != ""
			}
			calls = append(calls, bc)
			idx = idx[n:]
		}
	}
	_ = e.runCalls(ctx, calls) // each call's error is in its batchCall
	out := make([]Ref, len(ps))
	var moved []int // IfThere tasks not added (store.Enqueued.Moved)
	for _, bc := range calls {
		if bc.call.Err() == nil {
			// Its reply was read and the go-redis call that sent it is
			// over (a pipeline's resend may repeat a call whose reply was
			// read, but only within that call): it is not sent again, and
			// it shortened the markers it carried.
			e.read.add(bc.q.Name, bc.op)
		} else {
			// Perhaps it never ran: a later call carries them.
			e.read.putBack(bc.q.Name, bc.done)
		}
		err := bc.call.Err()
		if err != nil {
			err = enqueueError(bc.q, err)
		} else {
			var res []store.Enqueued
			if res, err = bc.call.Enqueued(len(bc.idx)); err == nil {
				for j, r := range res {
					out[bc.idx[j]] = Ref{Queue: bc.q.Name, Key: r.Key, Dup: r.Existed}
					if r.Moved {
						moved = append(moved, bc.idx[j])
					}
				}
				if bc.short == nil {
					continue
				}
				// Added, but not confirmed on enough replicas.
				err = fmt.Errorf("enqueue to queue %q: %w", bc.q.Name, bc.short)
			}
		}
		for _, i := range bc.idx {
			errs[i] = err
		}
	}
	// Tasks sent to their key's old shard whose key had no task there
	// any more: to their new shard (shard21.go).
	if len(moved) > 0 {
		again := make([]prepared, len(moved))
		for j, i := range moved {
			again[j] = ps[i]
			again[j].queue, again[j].task.IfThere, again[j].task.IfThereFromMs = ps[i].target, false, 0
		}
		refs, aerrs := e.sendEach(ctx, again)
		for j, i := range moved {
			out[i], errs[i] = refs[j], aerrs[j]
		}
	}
	// Delayed tasks: tell the coordinators (a separate step; should it
	// fail, the workers still move the tasks within a second).
	due := map[string]int64{}
	for i, p := range ps {
		if d := p.task.DueMs; d > 0 && out[i].Key != "" && (due[p.queue] == 0 || d < due[p.queue]) {
			due[p.queue] = d
		}
	}
	for qn, d := range due {
		if err := store.MarkDue(ctx, e.rdb, qn, d); err != nil {
			e.cfg.Logger.Warn("delayed tasks enqueued, but the coordinators were not told; workers move them within a second", slog.Any("err", err))
		}
	}
	return out, errs
}

// enqueueError is the error of an enqueue call to q that failed: an OOM
// answer becomes ErrRedisFull.
func enqueueError(q keys.Queue, err error) error {
	if store.IsOOM(err) {
		return fmt.Errorf("enqueue to queue %q: %w: %w", q.Name, ErrRedisFull, err)
	}
	return fmt.Errorf("enqueue to queue %q: %w", q.Name, err)
}

// pipeDepth is how many script calls share one pipeline round trip; two
// pipelines run at once so that Redis works while the next one is encoded.
const (
	pipeDepth   = 8
	pipeWorkers = 2
)

// runCalls sends calls in pipelines of pipeDepth, pipeWorkers at once (one
// after the other when the order matters); each call's error is in its
// batchCall, and the first is returned.
func (e *Engine) runCalls(ctx context.Context, calls []*batchCall) error {
	switch {
	case len(calls) == 0:
		return nil
	case len(calls) <= pipeDepth:
		return e.runGroup(ctx, calls)
	}
	var g errgroup.Group
	g.SetLimit(pipeWorkers)
	for _, bc := range calls {
		if bc.ordered {
			// Partitioned tasks join their partitions in the order they
			// reach Redis: one pipeline after the other keeps call order.
			g.SetLimit(1)
			break
		}
	}
	for len(calls) > 0 {
		n := min(len(calls), pipeDepth)
		group := calls[:n]
		g.Go(func() error { return e.runGroup(ctx, group) })
		calls = calls[n:]
	}
	return g.Wait()
}

// runGroup sends calls in one pipeline and sets each call's result and
// error; it returns the first error. The scripts are loaded at New; if Redis
// lost them (a restart), they are loaded again and the calls resent, and
// while Redis answers LOADING (reading its data back after a restart) the
// calls are sent again for up to loadingPatience: their op markers make
// both safe.
func (e *Engine) runGroup(ctx context.Context, calls []*batchCall) error {
	return retryLoading(ctx, func() error { return e.sendGroup(ctx, calls) })
}

// retryLoading runs f, and again while it fails with LOADING, for up to
// loadingPatience and while ctx lasts; it returns f's last error.
func retryLoading(ctx context.Context, f func() error) error {
	start := time.Now()
	wait := loadingBackoff
	for {
		err := f()
		if err == nil || !store.IsLoading(err) || time.Since(start)+wait > loadingPatience {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, loadingMaxBackoff)
	}
}

// sendGroup is one attempt of runGroup.
func (e *Engine) sendGroup(ctx context.Context, calls []*batchCall) error {
	if e.durable() {
		return e.sendGroupDurable(ctx, calls)
	}
	cs := make([]*store.Call, len(calls))
	for i, bc := range calls {
		cs[i] = bc.call
	}
	return store.RunCalls(ctx, e.rdb, cs)
}

// newOpID returns 128 random bits. math/rand/v2's global source is ChaCha8
// seeded from the OS, so ids do not repeat across processes, and no syscall
// is made per call.
func newOpID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + "." + strconv.FormatUint(rand.Uint64(), 36)
}

// combiner coalesces concurrent Enqueue calls (see internal/combine): a
// caller leads a batch of the calls queued meanwhile and sends them in
// shared round trips, up to maxLeaders batches at once. A caller whose ctx
// ends while its task is being sent returns at once, its task maybe added,
// as Enqueue documents; the op marker keeps the resends of the batch safe.
type combiner = combine.Combiner[prepared, Ref]

// maxLeaders is how many coalesced batches may be in flight at once, so that
// Redis works on one while the next is encoded and sent.
const maxLeaders = 4

func (e *Engine) newCombiner() *combiner {
	return combine.New(combine.Config{MaxLeaders: maxLeaders, Timeout: 30 * time.Second, DropInFlight: true}, e.sendCombined)
}

// sendCombined sends a batch of Enqueue calls. Each gets its own call's
// answer: a batch spanning queues may fail for one queue and not for
// another.
func (e *Engine) sendCombined(ctx context.Context, batch []*combine.Call[prepared, Ref]) error {
	ps := make([]prepared, len(batch))
	for i, r := range batch {
		ps[i] = r.Req
	}
	hs, errs := e.sendEach(ctx, ps)
	for i, r := range batch {
		r.Res, r.Err = hs[i], errs[i]
	}
	return nil
}

// ensureGroup creates the queue's stream and consumer group the first time
// this client enqueues to it, so that the enqueue script need not check.
func (e *Engine) ensureGroup(ctx context.Context, q keys.Queue) error {
	if _, ok := e.groups.Load(q.Name); ok {
		return nil
	}
	if err := retryLoading(ctx, func() error { return store.EnsureGroup(ctx, e.rdb, q) }); err != nil {
		return enqueueError(q, err)
	}
	e.groups.Store(q.Name, struct{}{})
	return nil
}

// oneCall reports whether p goes to Redis on its own, under an entry id the
// engine chooses (enqueueOne): an auto-keyed task whose record, once it
// ended, outlives the resend window of the call (see enqueueOne).
// The server must keep a stream's last id across deletions (New probes it).
func (e *Engine) oneCall(p prepared) bool {
	return !e.durable() && e.keepsLastID && p.task.UserKey == "" && p.retain >= e.markerTTL
}

// enqueueOne adds the auto-keyed task p in one script call of one XADD
// (enqueue20.lua), from the caller's goroutine: no combiner, no op marker.
// The entry id is chosen here (store.EntryIDs), so that a resend of the
// call finds the stream past it and adds nothing, and recognises its entry
// (still there, or, once the task ended and its entry was deleted, the
// task's record under that id, which lives the task's retention: oneCall
// takes only tasks whose retention covers the call's resend window). Should
// the stream be past the id at the first run (another producer ahead), the
// call takes enqueue.lua's way, an op marker and XADD *, in the same script.
// docs/design-20-enq.md has the argument.
func (e *Engine) enqueueOne(ctx context.Context, p prepared) (Ref, error) {
	q := keys.ForQueue(p.queue)
	if err := e.ensureGroup(ctx, q); err != nil {
		return Ref{}, err
	}
	e.clock.Refresh(ctx, e.rdb, clockRefresh)
	id, ok := e.ids.Next(q.Name, e.clock.Now().UnixMilli())
	if !ok {
		// The stream is far ahead of Redis' clock: the marker's way.
		return e.comb.Do(ctx, p)
	}
	op, done := newOpID(), e.read.take(q.Name)
	var key string
	err := retryLoading(ctx, func() error {
		var err error
		key, err = store.EnqueueOne(ctx, e.rdb, q, id, op, e.markerTTL.Milliseconds(), p.task.Envelope, done...)
		return err
	})
	if err != nil {
		e.read.putBack(q.Name, done)
		return Ref{}, enqueueError(q, err)
	}
	if key != id {
		// The fallback: an op marker, to be cut short by a later call.
		e.ids.Saw(q.Name, key)
		e.read.add(q.Name, op)
	}
	return Ref{Queue: p.queue, Key: key}, nil
}
