package patterns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/combine"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// BatchOpts configures a Batch. MaxSize and MaxWait have no defaults: a nil
// *BatchOpts is refused.
type BatchOpts struct {
	// MaxSize is the most items one batch holds (1 to 10,000). A batch
	// starts as soon as it has MaxSize items. Required.
	MaxSize int

	// MaxWait is how long a batch waits for more items after its first
	// (by Redis' clock; a coordinator starts it on time, workers alone
	// within a second). Required, at least 1ms.
	MaxWait time.Duration

	// Queue is the queue batches run in. Defaults to the client's default
	// queue.
	Queue string

	// MaxAttempts is how many times a batch runs when its handler fails as
	// a whole (returns an error that is not a worker.BatchErrors); after
	// the last, or a permanent error, every item of it is dead-lettered
	// with that error. Defaults to the client's default.
	MaxAttempts int

	// Timeout bounds each run of a batch. Defaults to none.
	Timeout time.Duration

	// Retention is how long each item's result is kept. Defaults to the
	// client's retention.
	Retention time.Duration
}

// maxBatchSize bounds BatchOpts.MaxSize: a batch's items are read and
// recorded in one script call each.
const maxBatchSize = 10000

// Batch is grab/async's Batch across the fleet: any process appends items;
// a worker handler registered with worker.HandleBatch for the batch's kind
// receives up to MaxSize of them at once (as soon as MaxSize are queued, or
// MaxWait after the first) and returns one result, or error, per item. The
// batch's kind is In's: In implements client.Args, and its Kind names the
// batches (on its zero value).
//
// Each item is a task of its own, "<queue>/<batch>.<index>" (state waiting
// until its batch ran): its handle's Outcome and client.Result give the
// item's own result, its ContinueWith registers a continuation of that item
// alone, and Cancel takes it out before its batch runs (an item cancelled
// while its batch runs ends cancelled at once; the handler may still see
// it, and its result is dropped). While its batch waits or runs, its state
// is waiting. An item is stored
// as an entry of its batch, not as a record of its own, until it ends (a
// result record; a dead item keeps a record in the dead-letter store). Items
// are kept for the batch's Retention once they succeeded. A batch is leased as a whole, like a
// task: if its worker dies the batch runs again (after the lease) with the
// same items. An item joins a batch only while the batch waits, in the same
// script that checks so, so an item is never in two batches and a batch is
// never split. In must encode with msgpack.
type Batch[In client.Args, Out any] struct {
	c       *client.Client
	kind    string
	opts    BatchOpts
	queue   string
	envPre  []byte // a batch's envelope before its key
	envPost []byte // and after it

	ensured atomic.Bool  // the queue's stream and group exist
	ptr     atomic.Value // string: the open batch's key, as last seen

	comb *combine.Combiner[[]byte, *client.Handle] // Append calls, combined
}

// NewBatch returns the Batch of In's kind (In's Kind, the name the worker
// side registers with worker.HandleBatch). It checks the options; nothing is
// written until the first Append.
func NewBatch[In client.Args, Out any](c *client.Client, opts *BatchOpts) (*Batch[In, Out], error) {
	if c == nil {
		return nil, errors.New("patterns.NewBatch: client is nil")
	}
	var zero In
	kind := zero.Kind()
	if err := keys.ValidateName("kind", kind); err != nil {
		return nil, fmt.Errorf("patterns.NewBatch: %w", err)
	}
	if opts == nil {
		opts = &BatchOpts{}
	}
	if opts.MaxSize < 1 || opts.MaxSize > maxBatchSize {
		return nil, fmt.Errorf("patterns.NewBatch %s: BatchOpts.MaxSize is %d, must be 1 to %d", kind, opts.MaxSize, maxBatchSize)
	}
	if opts.MaxWait < time.Millisecond {
		return nil, fmt.Errorf("patterns.NewBatch %s: BatchOpts.MaxWait is %v, must be at least 1ms", kind, opts.MaxWait)
	}
	b := &Batch[In, Out]{c: c, kind: kind, opts: *opts}
	b.comb = combine.New(combine.Config{MaxLeaders: 1, MaxBatch: store.MaxAppend, Timeout: 30 * time.Second}, b.sendAppends)
	queue, env, err := engineOf(c).Template(context.Background(), batchArgs{kind: kind}, optsOf(b.enqueueOpts()), "")
	if err != nil {
		return nil, fmt.Errorf("patterns.NewBatch %s: %w", kind, err)
	}
	// The envelope's key is its second element, after the array header;
	// the script puts each batch's key there.
	hdr := 1
	if env[0] == 0xdc {
		hdr = 3
	}
	if len(env) <= hdr || env[hdr] != 0xa0 {
		return nil, fmt.Errorf("patterns.NewBatch %s: unexpected envelope layout", kind)
	}
	b.queue, b.envPre, b.envPost = queue, env[:hdr], env[hdr+1:]
	return b, nil
}

func (b *Batch[In, Out]) enqueueOpts() *client.EnqueueOpts {
	return &client.EnqueueOpts{Queue: b.opts.Queue, MaxAttempts: b.opts.MaxAttempts, Timeout: b.opts.Timeout, Retention: b.opts.Retention}
}

// Kind is the batch's kind.
func (b *Batch[In, Out]) Kind() string { return b.kind }

// Queue is the queue its batches run in.
func (b *Batch[In, Out]) Queue() string { return b.queue }

// Append adds item to the open batch (opening one when none waits) and
// returns the item's handle; its Outcome decodes into an Out with
// client.Result[Out]. Concurrent Append calls on one Batch share round
// trips: one of them sends the items of all that arrived meanwhile, then
// hands that job to a caller still waiting.
func (b *Batch[In, Out]) Append(ctx context.Context, item In) (*client.Handle, error) {
	p, err := b.encode(0, item)
	if err != nil {
		return nil, err
	}
	h, err := b.comb.Do(ctx, p)
	if err != nil && err == ctx.Err() {
		// Withdrawn before it was sent (a round's own errors say what
		// failed).
		return nil, fmt.Errorf("patterns.Batch %s: append: %w", b.kind, err)
	}
	if err == nil {
		b.tell(ctx, []In{item}, []*client.Handle{h})
	}
	return h, err
}

// tell tells the client's enqueued hooks of items, added as hs (in order),
// on the caller's goroutine.
func (b *Batch[In, Out]) tell(ctx context.Context, items []In, hs []*client.Handle) {
	e := engineOf(b.c)
	if !e.Listening() {
		return
	}
	for i, h := range hs {
		if h == nil || i >= len(items) {
			continue
		}
		r, err := engine.RefOf(h.ID())
		if err != nil {
			continue
		}
		e.TellTask(ctx, engine.EnqueuedTask{Ref: r, Kind: b.kind, Args: items[i], Opts: optsOf(b.enqueueOpts())})
	}
}

// sendAppends sends one round of Append calls (see internal/combine): one
// caller at a time sends the items of the calls that arrived meanwhile, up
// to store.MaxAppend, then hands that job to the oldest caller still
// waiting, so no caller serves others for long. A caller whose ctx ends
// while it waits is withdrawn; once its item is being sent, the round's
// outcome is its answer.
func (b *Batch[In, Out]) sendAppends(ctx context.Context, round []*combine.Call[[]byte, *client.Handle]) error {
	raw := make([][]byte, len(round))
	for i, r := range round {
		raw[i] = r.Req
	}
	hs, err := b.appendRaw(ctx, raw)
	if err != nil {
		return err
	}
	for i, r := range round {
		r.Res = hs[i]
	}
	return nil
}

func (b *Batch[In, Out]) encode(i int, it In) ([]byte, error) {
	p, err := codec.Marshal(it)
	if err != nil {
		return nil, fmt.Errorf("patterns.Batch %s: append: encode item %d (%T): %w", b.kind, i, it, err)
	}
	if len(p) > maxItemBytes {
		return nil, fmt.Errorf("patterns.Batch %s: append: item %d encodes to %d bytes, limit %d", b.kind, i, len(p), maxItemBytes)
	}
	return p, nil
}

// AppendMany adds items in order, as Append does each (one round trip per
// 2,000 items).
func (b *Batch[In, Out]) AppendMany(ctx context.Context, items []In) ([]*client.Handle, error) {
	raw := make([][]byte, len(items))
	for i, it := range items {
		p, err := b.encode(i, it)
		if err != nil {
			return nil, err
		}
		raw[i] = p
	}
	hs, err := b.appendRaw(ctx, raw)
	if err == nil {
		b.tell(ctx, items, hs)
	}
	return hs, err
}

func (b *Batch[In, Out]) appendRaw(ctx context.Context, raw [][]byte) ([]*client.Handle, error) {
	what := "patterns.Batch " + b.kind + ": append"
	q := keys.ForQueue(b.queue)
	if !b.ensured.Load() {
		if err := store.EnsureGroup(ctx, engineOf(b.c).Redis(), q); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		b.ensured.Store(true)
	}
	hs := make([]*client.Handle, 0, len(raw))
	for len(raw) > 0 {
		n, size := 0, 0
		for n < len(raw) && n < store.MaxAppend && (n == 0 || size+len(raw[n]) <= maxAppendBytes) {
			size += len(raw[n])
			n++
		}
		guess, _ := b.ptr.Load().(string)
		newKey := func() string { return keys.BatchKeyPrefix + randomKey() }
		segs, ptr, due, err := store.AppendBatch(ctx, engineOf(b.c).Redis(), q, b.kind, guess, newKey, b.envPre, b.envPost, b.opts.MaxSize, b.opts.MaxWait.Milliseconds(), raw[:n])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		b.ptr.Store(ptr)
		if due > 0 {
			// A new batch waits: tell the coordinators when it is due (a
			// lost wake-up costs at most a second: workers move it too).
			_ = store.MarkDue(ctx, engineOf(b.c).Redis(), b.queue, due)
		}
		for _, sg := range segs {
			for i := 0; i < sg.Count; i++ {
				hs = append(hs, handleOf(b.c, engine.Ref{Queue: b.queue, Key: sg.Batch + "." + strconv.Itoa(sg.First+i)}))
			}
		}
		raw = raw[n:]
	}
	return hs, nil
}

// maxItemBytes bounds one item's encoding; maxAppendBytes the items of one
// script call (well inside Redis' 1 GB query buffer).
const (
	maxItemBytes   = 1 << 20
	maxAppendBytes = 16 << 20
)

// Flush starts the open batch now, with the items it has (grab/async's
// Reduce); false when no batch was open.
func (b *Batch[In, Out]) Flush(ctx context.Context) (bool, error) {
	ok, err := store.FlushBatch(ctx, engineOf(b.c).Redis(), keys.ForQueue(b.queue), b.kind)
	if err != nil {
		return false, fmt.Errorf("patterns.Batch %s: flush: %w", b.kind, err)
	}
	return ok, nil
}

func randomKey() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// batchArgs stands for a batch task's (empty) args.
type batchArgs struct{ kind string }

func (a batchArgs) Kind() string { return a.kind }

// EncodeMsgpack encodes nothing: a batch's items are read from Redis.
func (batchArgs) EncodeMsgpack(enc *msgpack.Encoder) error { return enc.EncodeNil() }
