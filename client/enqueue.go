package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
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
}

// Spec is one task for EnqueueMany.
type Spec struct {
	Args Args
	Opts *EnqueueOpts
}

// opTTL is how long an enqueue batch remembers that it ran, so that a resend
// by go-redis after a timeout or broken connection adds nothing. go-redis'
// default retry window (3 retries, at most 512 ms backoff each, 3 s read
// timeout) is well inside it.
const opTTL = 10 * time.Second

// chunk is the most tasks one enqueue script call carries.
const chunk = 500

type prepared struct {
	queue string
	task  store.NewTask
}

func (c *Client) prepare(args Args, o *EnqueueOpts) (prepared, error) {
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
	}
	switch {
	case opts.MaxAttempts == 0:
		opts.MaxAttempts = c.cfg.DefaultMaxAttempts
	case opts.MaxAttempts < 0:
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.MaxAttempts is %d, must be positive", kind, opts.MaxAttempts)
	}
	if opts.Timeout < 0 {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Timeout is %v, must not be negative", kind, opts.Timeout)
	}
	if opts.Retention == 0 {
		opts.Retention = c.cfg.Retention
	} else if opts.Retention < time.Millisecond {
		return prepared{}, fmt.Errorf("enqueue %s: EnqueueOpts.Retention is %v, must be at least 1ms", kind, opts.Retention)
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
	})
	return prepared{queue: opts.Queue, task: store.NewTask{UserKey: opts.ID, Envelope: env}}, nil
}

// Enqueue adds one task and returns its handle. Bad input (a nil args, an
// invalid name, a payload over the limit) is refused before Redis is touched.
// Concurrent calls share round trips. If ctx ends before Redis answers, the
// task may or may not have been added.
func (c *Client) Enqueue(ctx context.Context, args Args, opts *EnqueueOpts) (*Handle, error) {
	p, err := c.prepare(args, opts)
	if err != nil {
		return nil, err
	}
	req := &enqReq{p: p, done: make(chan struct{}), lead: make(chan struct{})}
	return c.comb.submit(ctx, c, req)
}

// EnqueueMany adds every task of specs in pipelined round trips and returns
// their handles in the order of specs. All specs are checked before anything is
// sent; the first bad one fails the call and nothing is added.
func (c *Client) EnqueueMany(ctx context.Context, specs []Spec) ([]*Handle, error) {
	ps := make([]prepared, len(specs))
	for i, s := range specs {
		p, err := c.prepare(s.Args, s.Opts)
		if err != nil {
			return nil, fmt.Errorf("spec %d: %w", i, err)
		}
		ps[i] = p
	}
	return c.send(ctx, ps)
}

// batchCall is one enqueue.lua call: up to chunk tasks of one queue.
type batchCall struct {
	q    keys.Queue
	idx  []int // positions in the caller's slice
	ks   []string
	args []any
	res  *redis.Cmd
}

// send enqueues ps, grouped per queue into script calls, pipelined in groups.
func (c *Client) send(ctx context.Context, ps []prepared) ([]*Handle, error) {
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
			return nil, err
		}
		idx := byQueue[qn]
		for len(idx) > 0 {
			n := min(len(idx), chunk)
			tasks := make([]store.NewTask, n)
			for j := 0; j < n; j++ {
				tasks[j] = ps[idx[j]].task
			}
			ks, args := store.EnqueueArgs(q, newOpID(), opTTL.Milliseconds(), tasks)
			calls = append(calls, &batchCall{q: q, idx: idx[:n], ks: ks, args: args})
			idx = idx[n:]
		}
	}
	if err := c.runCalls(ctx, calls); err != nil {
		return nil, err
	}
	out := make([]*Handle, len(ps))
	for _, bc := range calls {
		res, err := store.ParseEnqueued(bc.res.Val(), len(bc.idx))
		if err != nil {
			return nil, err
		}
		for j, r := range res {
			out[bc.idx[j]] = &Handle{c: c, queue: bc.q.Name, key: r.Key, dup: r.Existed}
		}
	}
	return out, nil
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
	for w := 0; w < min(pipeWorkers, len(groups)); w++ {
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

// runGroup sends calls in one pipeline. The scripts are loaded at New; if
// Redis lost them (a restart), they are loaded again and the calls resent,
// which their op markers make safe.
func (c *Client) runGroup(ctx context.Context, calls []*batchCall) error {
	if len(calls) == 1 {
		// One call needs no pipeline: EVALSHA, falling back to EVAL.
		bc := calls[0]
		bc.res = script.Enqueue.Run(ctx, c.rdb, bc.ks, bc.args...)
		if err := bc.res.Err(); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		return nil
	}
	for try := 0; ; try++ {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, bc := range calls {
				bc.res = script.Enqueue.EvalSha(ctx, p, bc.ks, bc.args...)
			}
			return nil
		})
		if err != nil && try == 0 && strings.Contains(err.Error(), "NOSCRIPT") {
			if lerr := script.Load(ctx, c.rdb); lerr != nil {
				return fmt.Errorf("enqueue: %w", lerr)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		return nil
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
	hs, err := c.send(sendCtx, ps)
	cancel()
	for i, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.h = hs[i]
		}
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
	if err := store.EnsureGroup(ctx, c.rdb, q); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	c.groups.Store(q.Name, struct{}{})
	return nil
}
