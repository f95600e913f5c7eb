package client

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

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/taskctx"
	"github.com/taskfleet/async/ratelimit"
)

// EnqueueOpts are per-task options. A nil *EnqueueOpts means all defaults.
type EnqueueOpts struct {
	// Queue is the queue the task goes to. Defaults to Config.DefaultQueue.
	Queue string

	// ID, when set, makes the enqueue idempotent: while a task with this id
	// exists in the queue (pending, running, dead, or finished within its
	// retention), enqueueing the same id returns that task's handle, with
	// Duplicate() true, and adds nothing. It follows the name rule
	// [A-Za-z0-9._-]{1,128} and must not look like a stream id ("123-4"), the
	// shape of generated ids. Defaults to none: every call adds a task.
	ID string

	// MaxAttempts is how many times the task runs before it goes to the
	// dead-letter store. Defaults to Config.DefaultMaxAttempts.
	MaxAttempts int

	// Timeout bounds each attempt: the handler's ctx is cancelled after it and
	// the attempt fails. Defaults to none.
	Timeout time.Duration

	// Retention is how long the state and result are kept once the task
	// succeeded. Defaults to Config.Retention.
	Retention time.Duration

	// Deadline ends the task if it has not succeeded by then: a task past its
	// deadline before it starts never starts, a running one's handler ctx
	// carries it (ctx.Deadline()), and either way the task ends cancelled, not
	// retried, with Outcome matching context.DeadlineExceeded. It is checked
	// in Redis' time (the client's clock is only used to express it). A task
	// enqueued from a handler inherits the handler's remaining deadline when
	// that is earlier. Defaults to none.
	Deadline time.Time

	// Meta is metadata for the handler (worker.Meta): at most 64 entries,
	// keys of 1 to 128 bytes, values of at most 4096 bytes. A task enqueued
	// from a handler inherits its metadata, its own entries winning.
	Meta map[string]string

	// TraceParent and TraceState carry a W3C trace context to the handler
	// (worker.TraceContext). A task enqueued from a handler inherits the
	// handler's when these are empty.
	TraceParent string
	TraceState  string

	// ProcessAt delays the task: it waits in Redis (state scheduled) and
	// enters its queue when Redis' clock reaches this time (the client's
	// clock only expresses it). A time in the past means now. A running
	// coordinator (package coordinator) moves it within milliseconds of its
	// time; workers also move their queues' due tasks, within a second.
	// Defaults to now.
	ProcessAt time.Time

	// Delay is ProcessAt as a duration from the enqueue (in Redis' time).
	// At most one of ProcessAt and Delay may be set.
	Delay time.Duration

	// RateKey throttles the task: before it runs, a worker takes a token
	// from the bucket of this key (package ratelimit), under the limit its
	// Config.RateLimits registers for the key's prefix. A task that must
	// wait is parked in Redis until its token is due; it holds no worker
	// meanwhile. Tasks with the same key share one rate across the fleet
	// (and with ratelimit calls on the same key). 1 to 256 bytes of A-Z a-z
	// 0-9 . _ - : / (e.g. "s3:bucket-a"). Defaults to none.
	RateKey string

	// PartitionKey makes the task one of a partition: the tasks enqueued
	// with the same key (in the same queue) run one at a time, in enqueue
	// order, across every worker and process; tasks of different keys run
	// in parallel. Only the oldest unfinished task of a key is in the
	// queue's stream (the others wait in Redis, state waiting), so a busy
	// or stuck key never holds up other keys. A task keeps its key's turn
	// through retries, and one whose worker died runs again (after its
	// lease) before the next of its key. The next starts once the task
	// succeeded, was cancelled or went to the dead-letter store; RetryDead
	// puts a dead one at the tail of its partition. 1 to 256 bytes of A-Z
	// a-z 0-9 . _ - : / (e.g. "user:42"). Not for delayed tasks, group
	// members or continuations. Defaults to none.
	PartitionKey string
}

// Spec is one task for EnqueueMany.
type Spec struct {
	Args Args
	Opts *EnqueueOpts
}

// Redis answers LOADING while it reads its data back after a restart; an
// enqueue that meets it (after go-redis' own retries) is sent again, with the
// same op marker, for up to loadingPatience, with a backoff growing from
// loadingBackoff to loadingMaxBackoff. Client.markerTTL covers that time.
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
}

// prepare checks and encodes one task. A ctx of a running handler makes the
// task its child.
func (c *Client) prepare(ctx context.Context, args Args, o *EnqueueOpts, x extra) (prepared, error) {
	if args == nil {
		return prepared{}, errors.New("enqueue: args is nil")
	}
	var opts EnqueueOpts
	if o != nil {
		opts = *o
	}
	kind := args.Kind()
	if err := keys.ValidateName("kind", kind); err != nil {
		return prepared{}, fmt.Errorf("enqueue %T: %w", args, err)
	}
	if opts.Queue == "" {
		opts.Queue = c.cfg.DefaultQueue
	} else if err := keys.ValidateName("queue", opts.Queue); err != nil {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Queue: %w", kind, err)
	}
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
		opts.MaxAttempts = c.cfg.DefaultMaxAttempts
	case opts.MaxAttempts < 0:
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.MaxAttempts is %d, must be positive", kind, opts.MaxAttempts)
	}
	if opts.Timeout < 0 || opts.Timeout > 0 && opts.Timeout < time.Millisecond {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Timeout is %v, must be 0 (none) or at least 1ms", kind, opts.Timeout)
	}
	if opts.Retention == 0 {
		opts.Retention = c.cfg.Retention
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
		c.clock.Refresh(ctx, c.rdb, clockRefresh)
		at := opts.ProcessAt
		if at.IsZero() {
			at = time.Now().Add(opts.Delay)
		}
		dueMs = c.clock.ToRedis(at).UnixMilli()
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
	if in, ok := taskctx.From(ctx); ok {
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
		c.clock.Refresh(ctx, c.rdb, clockRefresh)
		deadlineMs = c.clock.ToRedis(opts.Deadline).UnixMilli()
	}
	// A child inherits its parent task's deadline (not the attempt's
	// timeout, nor a deadline the caller put on ctx for this call).
	if parentDeadlineMs > 0 && (deadlineMs == 0 || parentDeadlineMs < deadlineMs) {
		deadlineMs = parentDeadlineMs
	}
	payload, err := codec.Marshal(args)
	if err != nil {
		return prepared{}, fmt.Errorf("enqueue %s: encode args: %w", kind, err)
	}
	if len(payload) > c.cfg.MaxPayloadBytes {
		return prepared{}, fmt.Errorf("enqueue %s: args encode to %d bytes, limit %d: %w", kind, len(payload), c.cfg.MaxPayloadBytes, ErrPayloadTooLarge)
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
	})
	return prepared{queue: opts.Queue, task: store.NewTask{UserKey: opts.ID, Envelope: env, DueMs: dueMs, Part: opts.PartitionKey}, parent: parent}, nil
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

// Enqueue adds one task and returns its handle. Bad input (a nil args, an
// invalid name, a payload over the limit) is refused before Redis is touched.
// Concurrent calls share round trips.
//
// When the error is not nil, whether the task was added depends on it:
//   - not added: bad input (matching ErrInvalidName, ErrPayloadTooLarge,
//     or any error returned before Redis was reached) and ErrRedisFull
//     (Redis refused the write);
//   - added: the handle is not nil as well (the task was added, only its
//     record as the child of the handler's task that enqueued it failed);
//   - maybe added: any other error (ctx ended, timeouts, a broken
//     connection, Redis restarting). The script may have run in Redis and
//     its reply been lost.
//
// Within one call, a lost reply is safe: go-redis resends the command and
// the client resends it while Redis answers LOADING (for up to 5 s), and an
// op marker, kept for as long as those resends can come (see the package
// doc), makes a resend add nothing. Across calls nothing is remembered: to
// retry after a "maybe added" error, set EnqueueOpts.ID, so that a retry of
// a task that was added adds nothing and returns its handle with Duplicate
// true.
func (c *Client) Enqueue(ctx context.Context, args Args, opts *EnqueueOpts) (*Handle, error) {
	p, err := c.prepare(ctx, args, opts, extra{})
	if err != nil {
		return nil, err
	}
	req := &enqReq{p: p, done: make(chan struct{}), lead: make(chan struct{})}
	h, err := c.comb.submit(ctx, c, req)
	if err != nil {
		return nil, err
	}
	if p.parent != "" {
		if err := c.addKids(ctx, []prepared{p}, []*Handle{h}); err != nil {
			return h, err
		}
	}
	return h, nil
}

// EnqueueMany adds every task of specs in pipelined round trips and returns
// their handles in the order of specs. All specs are checked before anything is
// sent; the first bad one fails the call and nothing is added.
//
// Errors are read as Enqueue's, except that specs go to Redis in several
// script calls (one per queue and 500 tasks): after an error from Redis,
// including ErrRedisFull, the tasks of other calls may have been added. Set
// EnqueueOpts.ID on every spec to make the retry of the whole slice safe.
func (c *Client) EnqueueMany(ctx context.Context, specs []Spec) ([]*Handle, error) {
	ps := make([]prepared, len(specs))
	for i, s := range specs {
		p, err := c.prepare(ctx, s.Args, s.Opts, extra{})
		if err != nil {
			return nil, fmt.Errorf("spec %d: %w", i, err)
		}
		ps[i] = p
	}
	hs, err := c.send(ctx, ps)
	if err != nil {
		return nil, err
	}
	if len(ps) > 0 && ps[0].parent != "" {
		if err := c.addKids(ctx, ps, hs); err != nil {
			return hs, err
		}
	}
	return hs, nil
}

// addKids records children under their parent (a separate step: the parent
// may live in another hash slot). If it fails, the children run all the same
// but cancelling the parent will not reach them; the error says so.
func (c *Client) addKids(ctx context.Context, ps []prepared, hs []*Handle) error {
	parent := ps[0].parent
	ids := make([]string, 0, len(hs))
	for i, h := range hs {
		if ps[i].parent == parent && !h.dup {
			ids = append(ids, h.ID())
		}
	}
	pq, pkey, err := keys.SplitTaskID(parent)
	if err != nil {
		return err
	}
	if err := store.AddKids(ctx, c.rdb, keys.ForQueue(pq), pkey, ids); err != nil {
		return fmt.Errorf("tasks enqueued, but cancelling %s will not reach them: %w", parent, err)
	}
	return nil
}

// batchCall is one enqueue.lua call: up to chunk tasks of one queue.
type batchCall struct {
	q    keys.Queue
	idx  []int // positions in the caller's slice
	ks   []string
	args []any
	res  *redis.Cmd
	err  error         // the call's own error, once sent
	s    *redis.Script // defaults to enqueue.lua

	ordered bool // carries partitioned tasks: must run after the calls before it

	op   string   // enqueue.lua: the call's op id
	done []string // enqueue.lua: op ids of earlier calls whose markers it shortens
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

func (bc *batchCall) script() *redis.Script {
	if bc.s != nil {
		return bc.s
	}
	return script.Enqueue
}

// send enqueues ps, grouped per queue into script calls, pipelined in groups.
// On error, the handles of the tasks whose calls succeeded are set.
func (c *Client) send(ctx context.Context, ps []prepared) ([]*Handle, error) {
	out, errs := c.sendEach(ctx, ps)
	for _, err := range errs {
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// sendEach is send with each task's own outcome: its handle, or the error of
// its call (a failure before anything was sent is every task's error).
func (c *Client) sendEach(ctx context.Context, ps []prepared) ([]*Handle, []error) {
	errs := make([]error, len(ps))
	fail := func(err error) ([]*Handle, []error) {
		for i := range errs {
			errs[i] = err
		}
		return make([]*Handle, len(ps)), errs
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
		if err := c.ensureGroup(ctx, q); err != nil {
			return fail(err)
		}
		idx := byQueue[qn]
		for len(idx) > 0 {
			n := min(len(idx), chunk)
			tasks := make([]store.NewTask, n)
			for j := 0; j < n; j++ {
				tasks[j] = ps[idx[j]].task
			}
			op, done := newOpID(), c.read.take(qn)
			ks, args := store.EnqueueArgs(q, op, c.markerTTL.Milliseconds(), tasks, done...)
			bc := &batchCall{q: q, idx: idx[:n], ks: ks, args: args, op: op, done: done}
			for _, t := range tasks {
				bc.ordered = bc.ordered || t.Part != ""
			}
			calls = append(calls, bc)
			idx = idx[n:]
		}
	}
	_ = c.runCalls(ctx, calls) // each call's error is in its batchCall
	out := make([]*Handle, len(ps))
	for _, bc := range calls {
		if bc.err == nil {
			// Its reply was read and the go-redis call that sent it is
			// over (a pipeline's resend may repeat a call whose reply was
			// read, but only within that call): it is not sent again, and
			// it shortened the markers it carried.
			c.read.add(bc.q.Name, bc.op)
		} else {
			// Perhaps it never ran: a later call carries them.
			c.read.putBack(bc.q.Name, bc.done)
		}
		err := bc.err
		if err != nil {
			err = enqueueError(bc.q, err)
		} else {
			var res []store.Enqueued
			if res, err = store.ParseEnqueued(bc.res.Val(), len(bc.idx)); err == nil {
				for j, r := range res {
					out[bc.idx[j]] = &Handle{c: c, queue: bc.q.Name, key: r.Key, dup: r.Existed}
				}
				continue
			}
		}
		for _, i := range bc.idx {
			errs[i] = err
		}
	}
	// Delayed tasks: tell the coordinators (a separate step; should it
	// fail, the workers still move the tasks within a second).
	due := map[string]int64{}
	for i, p := range ps {
		if d := p.task.DueMs; d > 0 && out[i] != nil && (due[p.queue] == 0 || d < due[p.queue]) {
			due[p.queue] = d
		}
	}
	for qn, d := range due {
		if err := store.MarkDue(ctx, c.rdb, qn, d); err != nil {
			c.cfg.Logger.Warn("delayed tasks enqueued, but the coordinators were not told; workers move them within a second", slog.Any("err", err))
		}
	}
	return out, errs
}

// enqueueError is the error of an enqueue call to q that failed: an OOM
// answer becomes ErrRedisFull.
func enqueueError(q keys.Queue, err error) error {
	if redis.IsOOMError(err) {
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

func (c *Client) runCalls(ctx context.Context, calls []*batchCall) error {
	if len(calls) == 1 {
		return c.runGroup(ctx, calls)
	}
	workers := pipeWorkers
	for _, bc := range calls {
		if bc.ordered {
			// Partitioned tasks join their partitions in the order they
			// reach Redis: one pipeline after the other keeps call order.
			workers = 1
			break
		}
	}
	var groups [][]*batchCall
	for len(calls) > 0 {
		n := min(len(calls), pipeDepth)
		groups = append(groups, calls[:n])
		calls = calls[n:]
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan []*batchCall)
	)
	for w := 0; w < min(workers, len(groups)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range next {
				if err := c.runGroup(ctx, g); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, g := range groups {
		next <- g
	}
	close(next)
	wg.Wait()
	return first
}

// runGroup sends calls in one pipeline and sets each call's result and
// error; it returns the first error. The scripts are loaded at New; if Redis
// lost them (a restart), they are loaded again and the calls resent, and
// while Redis answers LOADING (reading its data back after a restart) the
// calls are sent again for up to loadingPatience: their op markers make
// both safe.
func (c *Client) runGroup(ctx context.Context, calls []*batchCall) error {
	return retryLoading(ctx, func() error { return c.sendGroup(ctx, calls) })
}

// retryLoading runs f, and again while it fails with LOADING, for up to
// loadingPatience and while ctx lasts; it returns f's last error.
func retryLoading(ctx context.Context, f func() error) error {
	start := time.Now()
	wait := loadingBackoff
	for {
		err := f()
		if err == nil || !redis.IsLoadingError(err) || time.Since(start)+wait > loadingPatience {
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
func (c *Client) sendGroup(ctx context.Context, calls []*batchCall) error {
	if len(calls) == 1 {
		// One call needs no pipeline: EVALSHA, falling back to EVAL.
		bc := calls[0]
		bc.res = bc.script().Run(ctx, c.rdb, bc.ks, bc.args...)
		bc.err = bc.res.Err()
		return bc.err
	}
	for try := 0; ; try++ {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, bc := range calls {
				bc.res = bc.script().EvalSha(ctx, p, bc.ks, bc.args...)
			}
			return nil
		})
		if err != nil && try == 0 && strings.Contains(err.Error(), "NOSCRIPT") {
			if lerr := script.Load(ctx, c.rdb); lerr != nil {
				for _, bc := range calls {
					bc.err = lerr
				}
				return lerr
			}
			continue
		}
		for _, bc := range calls {
			bc.err = bc.res.Err()
			if bc.err == nil && err != nil && bc.res.Val() == nil {
				bc.err = err // not sent at all
			}
		}
		return err
	}
}

// newOpID returns 128 random bits. math/rand/v2's global source is ChaCha8
// seeded from the OS, so ids do not repeat across processes, and no syscall
// is made per call.
func newOpID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + "." + strconv.FormatUint(rand.Uint64(), 36)
}

// enqReq is one Enqueue call waiting to be sent.
type enqReq struct {
	p    prepared
	h    *Handle
	err  error
	done chan struct{} // closed when h/err are set
	lead chan struct{} // closed when this request's caller must lead the next batch
}

// combiner coalesces concurrent Enqueue calls: the first caller leads and
// sends every request queued so far in one round trip; callers arriving
// meanwhile queue up, and the leader hands the lead to one of them when its
// own request is answered, so that no caller serves others indefinitely.
type combiner struct {
	mu      sync.Mutex
	pending []*enqReq
	leaders int // batches in flight
}

// maxLeaders is how many coalesced batches may be in flight at once, so that
// Redis works on one while the next is encoded and sent.
const maxLeaders = 4

func (cb *combiner) submit(ctx context.Context, c *Client, req *enqReq) (*Handle, error) {
	cb.mu.Lock()
	if cb.leaders < maxLeaders {
		cb.leaders++
		batch := append(cb.pending, req)
		cb.pending = nil
		cb.mu.Unlock()
		return cb.lead(ctx, c, req, batch)
	}
	cb.pending = append(cb.pending, req)
	cb.mu.Unlock()
	select {
	case <-req.done:
		return req.h, req.err
	case <-req.lead:
	case <-ctx.Done():
		if cb.withdraw(req) {
			return nil, ctx.Err()
		}
		select {
		case <-req.lead:
			// The lead was handed to this request just now: it must lead
			// all the same, or the queue behind it would stall.
		default:
			// Another leader is sending it; its answer is dropped.
			return nil, ctx.Err()
		}
	}
	cb.mu.Lock()
	batch := append([]*enqReq{req}, cb.pending...)
	cb.pending = nil
	cb.mu.Unlock()
	return cb.lead(ctx, c, req, batch)
}

// lead sends batch (which holds req), answers every request of it, then
// hands the lead to the next queued request, if any.
func (cb *combiner) lead(ctx context.Context, c *Client, req *enqReq, batch []*enqReq) (*Handle, error) {
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	ps := make([]prepared, len(batch))
	for i, r := range batch {
		ps[i] = r.p
	}
	hs, errs := c.sendEach(sendCtx, ps)
	cancel()
	for i, r := range batch {
		// Each request gets its own call's answer: a batch spanning
		// queues may fail for one queue and not for another.
		r.h, r.err = hs[i], errs[i]
		close(r.done)
	}
	cb.mu.Lock()
	if len(cb.pending) > 0 {
		// The lead passes on; the number of leaders stays.
		next := cb.pending[0]
		cb.pending = append(cb.pending[:0:0], cb.pending[1:]...)
		close(next.lead)
	} else {
		cb.leaders--
	}
	cb.mu.Unlock()
	return req.h, req.err
}

// withdraw removes req from the queue if it is still there (no leader took
// it, and the lead was not handed to it); it reports whether it did.
func (cb *combiner) withdraw(req *enqReq) bool {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	for i, r := range cb.pending {
		if r == req {
			cb.pending = append(cb.pending[:i], cb.pending[i+1:]...)
			return true
		}
	}
	return false
}

// ensureGroup creates the queue's stream and consumer group the first time
// this client enqueues to it, so that the enqueue script need not check.
func (c *Client) ensureGroup(ctx context.Context, q keys.Queue) error {
	if _, ok := c.groups.Load(q.Name); ok {
		return nil
	}
	if err := retryLoading(ctx, func() error { return store.EnsureGroup(ctx, c.rdb, q) }); err != nil {
		return enqueueError(q, err)
	}
	c.groups.Store(q.Name, struct{}{})
	return nil
}
