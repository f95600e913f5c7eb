package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// job is one delivered entry from the moment it is read until its outcome is
// recorded (or given up). It holds a slot all that time and is heartbeated.
type job struct {
	q       *queue
	entry   string
	dlv     int64
	key     string
	env     *codec.Envelope
	handler handlerFunc
	ctx     context.Context
	cancel  context.CancelCauseFunc

	// leaseEnd is when the handler must be cancelled unless a heartbeat
	// gets through first: monotonic nanoseconds (see mono).
	leaseEnd atomic.Int64

	mu        sync.Mutex
	lost      bool
	recording bool       // its outcome is on the way to Redis
	acked     bool       // its outcome is recorded (the entry acked)
	slot      bool       // holds a slot, given back once by finish
	limits    []*limiter // fleet-wide limits whose slots it holds
}

// nextEnvelope is the envelope of the entry that continues j's task: it
// names the task's key and carries the deliveries of this entry that ended
// without an outcome into Lost, so that hand-backs and retries never reset
// the poison count.
func (j *job) nextEnvelope() codec.Envelope {
	next := *j.env
	next.Key = j.key
	next.Lost += int(j.dlv - 1)
	return next
}

// extendLease moves j's lease end to until unless it is later already (a
// round of heartbeats sent after this one got through first).
func (j *job) extendLease(until int64) {
	for {
		cur := j.leaseEnd.Load()
		if cur >= until || j.leaseEnd.CompareAndSwap(cur, until) {
			return
		}
	}
}

func (j *job) lease() store.Lease { return store.Lease{EntryID: j.entry, Deliveries: j.dlv} }

// markLost cancels the handler: the lease is gone.
func (j *job) markLost() {
	j.mu.Lock()
	j.lost = true
	j.mu.Unlock()
	j.cancel(ErrLeaseLost)
}

// isRecording reports whether j's outcome was handed to the completer (a
// heartbeat that finds it acked is then no news).
func (j *job) isRecording() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recording
}

func (j *job) isLost() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lost
}

// outcome is what happens to a job; drop means record nothing (lease lost).
type outcome struct {
	j    *job
	c    store.Completion
	drop bool

	after func() // runs once the outcome is recorded
}

// guard is how long before the lease ends a handler is cancelled when
// heartbeats do not get through.
func (w *Worker) leaseGuard() time.Duration { return w.cfg.Lease - w.cfg.Lease/5 }

// acquire takes up to n slots: it waits for the first (or ctx), then takes
// what is free without waiting.
func (w *Worker) acquire(ctx context.Context, n int) int {
	select {
	case <-w.slots:
	case <-ctx.Done():
		return 0
	}
	got := 1
	for got < n {
		select {
		case <-w.slots:
			got++
		default:
			return got
		}
	}
	return got
}

func (w *Worker) release(n int) {
	for i := 0; i < n; i++ {
		w.slots <- struct{}{}
	}
}

// pause waits d or until ctx ends; it reports whether ctx is still alive.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type delivered struct {
	q     *queue
	entry string
	raw   string
	hasM  bool
	other map[string]any
	dlv   int64
	grp   string // the entry's group field (members of a group's own queue)

	cancelled bool // a taken-over entry whose task has a cancel request
}

// fetchLoop owns slot acquisition: it reads new entries and, every Lease/4,
// first takes over entries whose lease ended (XAUTOCLAIM), so that a busy or
// idle fetcher never starves recovery of slots.
func (w *Worker) fetchLoop(ctx context.Context) {
	defer w.loops.Done()
	reclaimEvery := max(w.cfg.Lease/4, 10*time.Millisecond)
	block := min(w.cfg.BlockTimeout, reclaimEvery)
	nextReclaim := time.Now()
	for {
		n := w.acquire(ctx, w.cfg.FetchBatch)
		if n == 0 {
			return
		}
		if !time.Now().Before(nextReclaim) {
			n -= w.reclaim(ctx, n)
			nextReclaim = time.Now().Add(reclaimEvery)
			if n == 0 {
				continue
			}
		}
		sent := time.Now()
		got, err := w.read(ctx, n, block)
		if err != nil {
			w.release(n)
			if ctx.Err() != nil {
				return
			}
			w.log.Error("read tasks", slog.Any("err", err))
			if !pause(ctx, 200*time.Millisecond) {
				return
			}
			continue
		}
		used := w.dispatchAll(ctx, got, n, sent)
		w.release(n - used)
	}
}

// dispatchAll dispatches entries holding n slots already. An entry beyond
// those (a read over several queues returns up to n per queue) takes a free
// slot if there is one, else goes straight back to its queue. Entries read
// after ctx ended (a blocking read outlives its ctx) are handed back too. It
// returns how many of the n slots it used.
func (w *Worker) dispatchAll(ctx context.Context, got []delivered, n int, sent time.Time) int {
	used := 0
	for _, d := range got {
		handBack, holds := ctx.Err() != nil, true
		if used < n {
			used++
		} else {
			select {
			case <-w.slots:
			default:
				handBack, holds = true, false
			}
		}
		w.dispatch(d, sent, handBack, holds)
	}
	return used
}

func (w *Worker) read(ctx context.Context, n int, block time.Duration) ([]delivered, error) {
	if len(w.queues) > 1 {
		order := w.order()
		for _, q := range order {
			got, err := w.readGroup(ctx, []*queue{q}, n, -1)
			if err != nil || len(got) > 0 {
				return got, err
			}
		}
		if w.crossSlot.Load() {
			// Redis Cluster: one blocking read cannot span the queues'
			// slots. Block on one queue at a time, briefly, in turn.
			return w.readGroup(ctx, order[:1], n, min(block, crossSlotBlock))
		}
	}
	return w.readGroup(ctx, w.queues, n, block)
}

func (w *Worker) readGroup(ctx context.Context, qs []*queue, n int, block time.Duration) ([]delivered, error) {
	res, err := w.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    keys.Group,
		Consumer: w.cfg.Name,
		Streams:  w.streamsToRead(qs),
		Count:    int64(n),
		Block:    block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if len(qs) > 1 && strings.Contains(err.Error(), "CROSSSLOT") {
			w.crossSlot.Store(true)
			return nil, nil
		}
		if strings.Contains(err.Error(), "NOGROUP") {
			for _, q := range qs {
				if gerr := store.EnsureGroup(ctx, w.rdb, q.keys); gerr != nil {
					return nil, gerr
				}
			}
			return nil, nil
		}
		return nil, err
	}
	var out []delivered
	for _, s := range res {
		q := w.queueOfStream(s.Stream)
		for _, m := range s.Messages {
			d := delivered{q: q, entry: m.ID, dlv: 1}
			d.raw, d.hasM = m.Values["m"].(string)
			d.grp, _ = m.Values["g"].(string)
			if !d.hasM {
				d.other = m.Values
			}
			out = append(out, d)
		}
	}
	return out, nil
}

func (w *Worker) queueOfStream(stream string) *queue {
	for _, q := range w.queues {
		if q.keys.Stream() == stream {
			return q
		}
	}
	panic("worker: read from unknown stream " + stream)
}

// dispatch turns one delivered entry into a running job, or straight into
// an outcome when it cannot run here.
// holds tells whether the entry took a slot (given back when its outcome is
// recorded).
func (w *Worker) dispatch(d delivered, sent time.Time, handBack, holds bool) {
	j := &job{q: d.q, entry: d.entry, dlv: d.dlv, key: d.entry}
	var jctx context.Context
	jctx, j.cancel = context.WithCancelCause(context.Background())
	j.ctx = jctx
	j.leaseEnd.Store(mono(sent) + int64(w.leaseGuard()))
	j.slot = holds
	// Decode first: the heartbeat reads the task key once the job is listed.
	var env *codec.Envelope
	var decodeErr error
	if d.hasM {
		// The bytes alias the string go-redis read: nothing writes to them.
		if env, decodeErr = codec.DecodeEnvelope(unsafe.Slice(unsafe.StringData(d.raw), len(d.raw))); decodeErr == nil {
			decodeErr = checkEnvelope(env)
		}
		if decodeErr == nil {
			j.env = env
			if env.Key != "" {
				j.key = env.Key
			}
		}
	}
	if !d.hasM || decodeErr != nil {
		// Only a group id of the right form reaches the group (or the
		// outbox) with the entry's dead letter.
		if _, err := store.ParseGroupRef(d.grp); err != nil {
			d.grp = ""
		}
	}
	w.inflightMu.Lock()
	if old := w.inflight[jobKey{d.q.keys.Name, d.entry}]; old != nil {
		// This worker took back its own entry (its lease lapsed while Redis
		// was out of reach): the older run has lost the lease.
		old.markLost()
	}
	w.inflight[jobKey{d.q.keys.Name, d.entry}] = j
	_, cancelled := w.recentCancels[jobKey{d.q.keys.Name, d.entry}]
	delete(w.recentCancels, jobKey{d.q.keys.Name, d.entry})
	w.inflightMu.Unlock()
	if cancelled {
		j.cancel(ErrCancelled)
	}

	dead := func(raw []byte, reason string) {
		w.log.Warn("dead-lettering task", slog.String("task", keys.TaskID(d.q.keys.Name, j.key)), slog.String("reason", reason))
		// An entry that cannot be decoded still tells its group (the
		// entry's field g) that it ended.
		w.send(&outcome{j: j, c: store.Completion{Op: store.OpDead, EntryID: j.entry, Deliveries: j.dlv, Key: j.key, A1: raw, A2: reason, Group: d.grp}})
	}
	if !d.hasM {
		dead([]byte(fmt.Sprint(d.other)), "malformed entry: no 'm' field; it was not written by this library")
		return
	}
	if decodeErr != nil {
		dead([]byte(d.raw), "malformed entry: "+decodeErr.Error())
		return
	}
	if total := int64(env.Lost) + d.dlv; total > int64(w.cfg.MaxDeliveries) {
		dead([]byte(d.raw), fmt.Sprintf("poison: delivered %d times without an outcome (its workers died or lost the lease each time); limit %d",
			total, w.cfg.MaxDeliveries))
		return
	}
	if len(env.Payload) > w.cfg.MaxPayloadBytes {
		dead([]byte(d.raw), fmt.Sprintf("payload of %d bytes exceeds the worker's limit of %d: %v", len(env.Payload), w.cfg.MaxPayloadBytes, ErrPayloadTooLarge))
		return
	}
	if handBack {
		w.send(&outcome{j: j, c: w.parkCompletion(j, 0)})
		return
	}
	w.mu.Lock()
	h := w.handlers[env.Kind]
	w.mu.Unlock()
	if h == nil {
		w.log.Debug("no handler for kind here; handing the task back", slog.String("kind", env.Kind), slog.String("task", keys.TaskID(d.q.keys.Name, j.key)))
		w.send(&outcome{j: j, c: w.parkCompletion(j, parkDelay(env.Parked))})
		return
	}
	if d.cancelled {
		// Taken over from a worker that died: a cancel request sent to it
		// reached nobody.
		w.send(w.cancelled(j, reasonCancelled))
		return
	}
	if env.DeadlineMs > 0 && !w.clock.Now().Before(time.UnixMilli(env.DeadlineMs)) {
		// Past its deadline before it started: it never starts, and this
		// attempt does not count.
		o := w.cancelled(j, reasonDeadline)
		o.c.Attempt = j.env.Attempt - 1
		w.send(o)
		return
	}
	j.handler = h
	id := keys.TaskID(d.q.keys.Name, j.key)
	j.ctx = engine.WithTask(jctx, &taskValue{
		info: engine.TaskInfo{
			ID: id, Meta: env.Meta, TraceParent: env.TraceParent, TraceState: env.TraceState, DeadlineMs: env.DeadlineMs,
			Prev: env.Prev, Engine: w.eng,
		},
		Task: Task{
			ID: id, Queue: d.q.keys.Name, Kind: env.Kind,
			Attempt: env.Attempt, MaxAttempts: env.MaxAttempts, Deliveries: int(d.dlv),
			PartitionKey: env.Partition,
		},
		w:    w,
		prev: env.Prev,
		j:    j,
	})
	w.execs.Add(1)
	go w.exec(j)
}

// checkEnvelope refuses an envelope this library cannot have written: one
// whose task key, kind, group or partition breaks the name rules (a task
// must not run, nor be recorded, under an id Client.Task refuses), or whose
// counts and retention are out of range.
func checkEnvelope(env *codec.Envelope) error {
	if env.Attempt < 1 || env.MaxAttempts < 1 || env.RetainMs < 1 || env.RetainMs > codec.MaxRetainMs {
		return fmt.Errorf("attempt %d, max attempts %d, retention %d ms; each must be at least 1, the retention at most %d ms",
			env.Attempt, env.MaxAttempts, env.RetainMs, codec.MaxRetainMs)
	}
	if err := keys.ValidateName("kind", env.Kind); err != nil {
		return err
	}
	if env.Key != "" {
		if err := keys.ValidateName("task key", env.Key); err != nil {
			return err
		}
	}
	if env.Group != "" {
		if _, err := store.ParseGroupRef(env.Group); err != nil {
			return err
		}
	}
	if env.Partition != "" {
		if err := keys.ValidatePartitionKey(env.Partition); err != nil {
			return err
		}
	}
	return nil
}

// crossSlotBlock bounds each blocking read when the queues live in different
// Redis Cluster slots and are read one at a time.
const crossSlotBlock = 100 * time.Millisecond

// recentCancelTTL is how long a cancel request for an entry this worker had
// not dispatched yet is remembered.
const recentCancelTTL = 10 * time.Second

// markCancelled looks up, in one round trip, which of the taken-over
// entries got belongs to a task with a cancel request: such a request was sent
// to a worker that died, and reached nobody. On error none is marked (the
// heartbeat looks again).
func (w *Worker) markCancelled(ctx context.Context, q *queue, got []delivered) {
	cmds := make([]*redis.BoolCmd, len(got))
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range got {
			key := d.entry
			if env, err := codec.DecodeEnvelope([]byte(d.raw)); err == nil && env.Key != "" {
				key = env.Key
			}
			cmds[i] = p.HExists(ctx, q.keys.Task(key), "cx")
		}
		return nil
	})
	if err != nil {
		return
	}
	for i := range got {
		got[i].cancelled = cmds[i].Val()
	}
}

// parkDelay is the wait before a task no worker here can run is offered
// again: 250ms, doubling per hand-back, at most 30s.
func parkDelay(parked int) time.Duration {
	d := 250 * time.Millisecond << min(parked, 7)
	return min(d, 30*time.Second)
}

// parkCompletion hands j's task back, after delay (0: straight to the stream).
func (w *Worker) parkCompletion(j *job, delay time.Duration) store.Completion {
	var env []byte
	if j.env != nil {
		next := j.nextEnvelope()
		if delay > 0 {
			next.Parked++
		}
		env = codec.AppendEnvelope(nil, &next)
	}
	return store.Completion{Op: store.OpPark, EntryID: j.entry, Deliveries: j.dlv, Key: j.key, A1: env, A2: delay.Milliseconds(), A3: "", Attempt: attemptOf(j)}
}

// lapsedCompletion hands back j's task, whose lease lapsed here, straight
// to the stream. The delivery counts as one that ended without an outcome
// (as it would, taken over after its lease), so a task whose runs keep
// outliving their leases still meets the poison limit.
func (w *Worker) lapsedCompletion(j *job) store.Completion {
	next := j.nextEnvelope()
	next.Lost++
	return store.Completion{Op: store.OpPark, EntryID: j.entry, Deliveries: j.dlv, Key: j.key,
		A1: codec.AppendEnvelope(nil, &next), A2: int64(0), A3: "", Attempt: attemptOf(j)}
}

// attemptOf is the number of j's attempt, 0 when j has no envelope.
func attemptOf(j *job) int {
	if j.env == nil {
		return 0
	}
	return j.env.Attempt
}

func (w *Worker) send(o *outcome) {
	o.j.mu.Lock()
	o.j.recording = true
	o.j.mu.Unlock()
	select {
	case w.results <- o:
	case <-w.quit:
		w.finish(o.j)
	}
}

// exec runs one job on its own goroutine; the slot j holds bounds how many
// run at once, and Stop waits for them (execs).
func (w *Worker) exec(j *job) {
	defer w.execs.Done()
	ok, tokens := w.throttle(j)
	if !ok {
		return
	}
	ls := w.limitsFor(j)
	if len(ls) == 0 {
		w.send(w.run(j))
		return
	}
	full, err := w.takeSlots(j, ls)
	if err != nil || full != nil {
		w.refund(tokens) // it does not run now
		if err != nil {
			w.log.Error("take a limit's slot; the task retries after Config.LimitWait", slog.String("task", keys.TaskID(j.q.keys.Name, j.key)), slog.Any("err", err))
			full = nil
		}
		w.send(w.limitPark(j, full))
		return
	}
	j.mu.Lock()
	j.limits = ls
	j.mu.Unlock()
	o := w.run(j)
	w.giveSlots(j)
	w.send(o)
}

var (
	errAttemptTimeout = errors.New("attempt timed out")
	errTaskDeadline   = errors.New("task deadline exceeded")
)

// Reasons recorded for cancelled tasks; the client maps them to
// context.Canceled and context.DeadlineExceeded.
const (
	reasonCancelled = codec.ReasonCancelled
	reasonDeadline  = codec.ReasonDeadline
)

// cancelled ends j's task as cancelled, without retry.
func (w *Worker) cancelled(j *job, reason string) *outcome {
	return &outcome{j: j, c: store.Completion{Op: store.OpCancel, EntryID: j.entry, Deliveries: j.dlv, Key: j.key,
		Attempt: j.env.Attempt, A1: j.env.RetainMs, A2: reason}}
}

func (w *Worker) run(j *job) *outcome {
	ctx := j.ctx
	if j.env.DeadlineMs > 0 {
		var cancel context.CancelFunc
		local := w.clock.ToLocal(time.UnixMilli(j.env.DeadlineMs))
		ctx, cancel = context.WithDeadlineCause(ctx, local, errTaskDeadline)
		defer cancel()
	}
	if j.env.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, time.Duration(j.env.TimeoutMs)*time.Millisecond, errAttemptTimeout)
		defer cancel()
	}
	res, err := call(ctx, j.handler, j.env.Payload)
	cause := context.Cause(j.ctx)
	switch {
	case errors.Is(err, errRecorded):
		return &outcome{j: j, drop: true} // a batch handler recorded it all
	case err == nil:
		return &outcome{j: j, c: store.Completion{Op: store.OpSucceed, EntryID: j.entry, Deliveries: j.dlv, Key: j.key,
			Fresh: j.env.Key == "", Attempt: j.env.Attempt, A1: res, A2: j.env.RetainMs}}
	case j.isLost():
		w.log.Warn("lease lost; the attempt's outcome is not recorded", slog.String("task", keys.TaskID(j.q.keys.Name, j.key)), slog.Any("err", err))
		return &outcome{j: j, drop: true}
	case errors.Is(cause, ErrLeaseLost):
		// No heartbeat got through in time (Redis stalled, or our calls
		// did): the lease may still be ours in Redis, and a heartbeat sent
		// before the stall may yet renew it. Hand the task back now,
		// fenced by this attempt's token, rather than leave it to wait out
		// that lease.
		w.log.Warn("lease lapsed without a heartbeat getting through; handing the task back", slog.String("task", keys.TaskID(j.q.keys.Name, j.key)), slog.Any("err", err))
		return &outcome{j: j, c: w.lapsedCompletion(j)}
	case errors.Is(cause, ErrShutdown):
		return &outcome{j: j, c: w.parkCompletion(j, 0)}
	case errors.Is(cause, ErrCancelled):
		return w.cancelled(j, reasonCancelled)
	case errors.Is(context.Cause(ctx), errTaskDeadline):
		return w.cancelled(j, reasonDeadline)
	}
	if errors.Is(context.Cause(ctx), errAttemptTimeout) && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("attempt timed out after %v: %w", time.Duration(j.env.TimeoutMs)*time.Millisecond, err)
	}
	msg := err.Error()
	var perm *PermanentError
	if errors.As(err, &perm) || j.env.Attempt >= j.env.MaxAttempts {
		return &outcome{j: j, c: store.Completion{Op: store.OpDead, EntryID: j.entry, Deliveries: j.dlv, Key: j.key,
			Attempt: j.env.Attempt, A1: codec.AppendEnvelope(nil, j.env), A2: msg}}
	}
	delay := w.cfg.Backoff(j.env.Attempt)
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		delay = ra.Delay
	}
	if j.env.DeadlineMs > 0 && !w.clock.Now().Add(delay).Before(time.UnixMilli(j.env.DeadlineMs)) {
		// The next attempt would start past the deadline: end it now.
		return w.cancelled(j, reasonDeadline)
	}
	next := j.nextEnvelope()
	next.Attempt++
	next.RateTurn = 0 // a new attempt queues for its tokens anew
	return &outcome{j: j, c: store.Completion{Op: store.OpRetry, EntryID: j.entry, Deliveries: j.dlv, Key: j.key,
		Attempt: j.env.Attempt, A1: codec.AppendEnvelope(nil, &next), A2: max(delay.Milliseconds(), 0), A3: msg}}
}

// call runs h, turning a panic into a *PanicError with the stack.
func call(ctx context.Context, h handlerFunc, payload []byte) (res []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return h(ctx, payload)
}

// finish forgets j and frees its slot. A run whose outcome was not recorded
// is remembered for a while: its entry may still be pending here, and is
// not adopted (see adopt).
func (w *Worker) finish(j *job) {
	j.cancel(nil)
	k := jobKey{j.q.keys.Name, j.entry}
	j.mu.Lock()
	slot, acked := j.slot, j.acked
	j.slot = false
	j.mu.Unlock()
	w.inflightMu.Lock()
	if w.inflight[k] == j {
		delete(w.inflight, k)
	}
	if !acked {
		w.ended[k] = endedRun{dlv: j.dlv, at: time.Now()}
	}
	w.inflightMu.Unlock()
	if slot {
		w.release(1)
	}
}

const maxFlush = 512

func (w *Worker) completeLoop() {
	defer w.support.Done()
	batch := make([]*outcome, 0, maxFlush)
	for {
		select {
		case o := <-w.results:
			batch = append(batch[:0], o)
		drain:
			for len(batch) < maxFlush {
				select {
				case o := <-w.results:
					batch = append(batch, o)
				default:
					break drain
				}
			}
			w.flush(batch)
		case <-w.quit:
			for {
				batch = batch[:0]
			rest:
				for len(batch) < maxFlush {
					select {
					case o := <-w.results:
						batch = append(batch, o)
					default:
						break rest
					}
				}
				if len(batch) == 0 {
					return
				}
				w.flush(batch)
			}
		}
	}
}

// flush records a batch of outcomes, one script call per queue.
func (w *Worker) flush(batch []*outcome) {
	byQueue := map[*queue][]*outcome{}
	for _, o := range batch {
		if o.drop {
			w.finish(o.j)
			continue
		}
		byQueue[o.j.q] = append(byQueue[o.j.q], o)
	}
	scheduled := false
	for q, os := range byQueue {
		items := make([]store.Completion, len(os))
		for i, o := range os {
			items[i] = o.c
			if o.j.env != nil && o.j.env.Group != "" {
				items[i].Group = o.j.env.Group
			}
			if o.c.Op == store.OpRetry || o.c.Op == store.OpPark && o.c.A2.(int64) > 0 {
				scheduled = true
			}
		}
		var applied []store.Applied
		var err error
		full := 0 // tries refused because Redis was out of memory
		for try := 0; try < 5; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			applied, err = store.Complete(ctx, w.rdb, q.keys, w.cfg.Name, items)
			cancel()
			if err == nil {
				break
			}
			if isOOM(err) && w.waitOOM(q, err, full) {
				// The outcomes are kept (and their leases heartbeated)
				// until Redis takes them: giving up would run the
				// handlers again for nothing.
				full++
				try--
				continue
			}
			select {
			case <-w.quit:
				// Stopping: one more try at most, so Stop is not held up;
				// unrecorded outcomes come back through their leases.
				if try > 0 {
					w.log.Error("record outcomes; giving up while stopping: the tasks run again after their lease",
						slog.String("queue", q.keys.Name), slog.Any("err", err))
					try = 5
					continue
				}
			default:
			}
			w.log.Error("record outcomes; retrying", slog.String("queue", q.keys.Name), slog.Any("err", err))
			time.Sleep(time.Duration(100*(try+1)) * time.Millisecond)
		}
		fired := false
		for i, o := range os {
			if err == nil && applied[i] == store.LeaseLost {
				w.log.Warn("lease lost before the outcome was recorded; another worker runs the task",
					slog.String("task", keys.TaskID(q.keys.Name, o.j.key)))
			}
			fired = fired || err == nil && applied[i] == store.Fired
			if err == nil && applied[i] != store.LeaseLost {
				o.j.mu.Lock()
				o.j.acked = true
				o.j.mu.Unlock()
			}
			if o.after != nil && err == nil && applied[i] != store.LeaseLost {
				o.after()
			}
			w.finish(o.j)
		}
		if fired {
			// Continuations of tasks that just ended start now, not at the
			// next sweep.
			w.drainOutbox(q)
		}
	}
	if scheduled {
		w.wakeForwarder()
	}
}

// isOOM reports whether err is Redis refusing a write over its maxmemory.
func isOOM(err error) bool {
	return strings.Contains(err.Error(), "OOM command not allowed")
}

// oomLogEvery is how often a worker logs that Redis refuses its writes for
// lack of memory.
const oomLogEvery = 10 * time.Second

// waitOOM backs off before the next try to record outcomes that Redis
// refused for lack of memory (the try'th refusal in a row), logging it at
// error level once per oomLogEvery. It reports false, at once, when the
// worker is stopping: then the usual last try applies.
func (w *Worker) waitOOM(q *queue, err error, try int) bool {
	select {
	case <-w.quit:
		return false
	default:
	}
	now := time.Now().UnixNano()
	if last := w.oomLogged.Load(); now-last >= int64(oomLogEvery) && w.oomLogged.CompareAndSwap(last, now) {
		w.log.Error("redis is over its maxmemory and refuses to record outcomes; they are kept and retried (free memory or raise maxmemory)",
			slog.String("queue", q.keys.Name), slog.Any("err", err))
	}
	t := time.NewTimer(min(50*time.Millisecond<<min(try, 6), w.cfg.Lease/4))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.quit:
		return false
	}
}

// drainOutbox activates the continuations waiting in q's outbox. One
// goroutine drains a queue at a time; a request arriving meanwhile makes it
// drain once more instead of reading the same entries in parallel.
func (w *Worker) drainOutbox(q *queue) {
	q.drainAgain.Store(true)
	for q.drainAgain.Load() {
		if !q.drainMu.TryLock() {
			return // the holder sees drainAgain
		}
		q.drainAgain.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := store.DrainOutbox(ctx, w.rdb, q.keys, defaultRetainMs)
		cancel()
		q.drainMu.Unlock()
		if err != nil {
			w.log.Error("start continuations; the next sweep retries", slog.String("queue", q.keys.Name), slog.Any("err", err))
			return
		}
	}
}

// defaultRetainMs is how long tasks that end without a run of their own
// (continuations cancelled because their parent did not succeed) are kept
// when a worker ends them; the client's Config.Retention applies when a
// client does.
const defaultRetainMs = int64(24 * time.Hour / time.Millisecond)

func (w *Worker) wakeForwarder() {
	select {
	case w.fwdWake <- struct{}{}:
	default:
	}
}

// procStart anchors mono.
var procStart = time.Now()

// mono returns t as nanoseconds on the monotonic clock since procStart.
func mono(t time.Time) int64 { return int64(t.Sub(procStart)) }

// watchdogLoop cancels (cause ErrLeaseLost) every handler whose lease end,
// pushed forward by each heartbeat that gets through, has passed: the
// handler stops before another worker may take its task over.
func (w *Worker) watchdogLoop() {
	defer w.support.Done()
	t := time.NewTicker(max(w.cfg.Lease/20, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case now := <-t.C:
			m := mono(now)
			w.inflightMu.Lock()
			for _, j := range w.inflight {
				if j.leaseEnd.Load() < m {
					j.cancel(ErrLeaseLost)
				}
			}
			w.inflightMu.Unlock()
		}
	}
}

// controlLoop receives cancel requests for running tasks and cancels their
// handlers (cause ErrCancelled). A request lost while the connection is down
// is caught by the next heartbeat.
func (w *Worker) controlLoop() {
	defer w.support.Done()
	for {
		msg, err := w.ctl.Receive(context.Background())
		if err != nil {
			select {
			case <-w.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		q := w.byCtl[m.Channel]
		if q == nil {
			continue
		}
		k := jobKey{q.keys.Name, m.Payload}
		w.inflightMu.Lock()
		j := w.inflight[k]
		if j == nil {
			// Read but not dispatched yet, perhaps: dispatch looks here.
			w.recentCancels[k] = time.Now()
			for ok, at := range w.recentCancels {
				if time.Since(at) > recentCancelTTL {
					delete(w.recentCancels, ok)
				}
			}
		}
		w.inflightMu.Unlock()
		if j != nil {
			j.cancel(ErrCancelled)
		}
	}
}

// beatsInFlight bounds how many rounds of heartbeats may be under way at
// once.
const beatsInFlight = 4

// heartbeatLoop starts a round of heartbeats every Lease/4, each on a
// goroutine of its own: a call stuck on a dead pooled connection (go-redis
// reads it until its ReadTimeout, whatever the ctx says, unless the client
// has ContextTimeoutEnabled) does not hold up the next rounds, which take
// other connections. A lease is only ever extended by a heartbeat that got
// through (see watchdogLoop).
func (w *Worker) heartbeatLoop() {
	defer w.support.Done()
	t := time.NewTicker(w.cfg.Lease / 4)
	defer t.Stop()
	var rounds sync.WaitGroup
	defer rounds.Wait()
	inFlight := make(chan struct{}, beatsInFlight)
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
		}
		select {
		case inFlight <- struct{}{}:
		default:
			w.log.Error("heartbeats are stuck in Redis calls; handlers are cancelled before their leases end unless one gets through",
				slog.Int("rounds", beatsInFlight))
			continue
		}
		rounds.Add(1)
		go func() {
			defer rounds.Done()
			defer func() { <-inFlight }()
			w.heartbeatRound()
		}()
	}
}

// heartbeatRound extends the leases, and limits' slots, of every job in
// flight.
func (w *Worker) heartbeatRound() {
	byQueue := map[*queue][]*job{}
	w.inflightMu.Lock()
	for _, j := range w.inflight {
		if !j.isLost() {
			byQueue[j.q] = append(byQueue[j.q], j)
		}
	}
	w.inflightMu.Unlock()
	var all []*job
	for q, js := range byQueue {
		all = append(all, js...)
		for len(js) > 0 {
			part := js[:min(len(js), 1000)]
			js = js[len(part):]
			w.heartbeat(q, part)
		}
	}
	w.renewSlots(all)
}

func (w *Worker) heartbeat(q *queue, js []*job) {
	leases := make([]store.Lease, len(js))
	tasks := make([]string, len(js))
	for i, j := range js {
		leases[i] = j.lease()
		tasks[i] = j.key
	}
	sent := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	beats, err := store.HeartbeatWithin(ctx, w.rdb, q.keys, w.cfg.Name, w.cfg.Lease.Milliseconds(), leases, tasks)
	if err != nil {
		w.log.Error("heartbeat failed; handlers are cancelled before their leases end unless one gets through",
			slog.String("queue", q.keys.Name), slog.Any("err", err))
		return
	}
	until := mono(sent) + int64(w.leaseGuard())
	for i, j := range js {
		if beats[i] != store.BeatLost {
			j.extendLease(until)
			if beats[i] == store.BeatCancelled {
				j.cancel(ErrCancelled)
			}
		} else if !j.isRecording() {
			w.log.Warn("lease lost; cancelling the handler", slog.String("task", keys.TaskID(q.keys.Name, j.key)))
			j.markLost()
		}
	}
}

// reclaim takes up entries stranded under this worker's own consumer (see
// adopt), then takes over entries whose lease ended, up to n in all, across
// the queues, and dispatches them. It returns how many of the n slots it
// used.
func (w *Worker) reclaim(ctx context.Context, n int) int {
	used := 0
	for _, q := range w.queues {
		if used < n {
			used += w.adopt(ctx, q, n-used)
		}
		for pass := 0; pass < 10 && used < n; pass++ {
			sent := time.Now()
			next, claimed, err := store.Reclaim(ctx, w.rdb, q.keys, w.cfg.Name, w.cfg.Lease.Milliseconds(), q.cursor, n-used,
				newOpID(), w.markers)
			if err != nil {
				if ctx.Err() == nil {
					w.log.Error("reclaim expired leases", slog.String("queue", q.keys.Name), slog.Any("err", err))
				}
				break
			}
			q.cursor = next
			got := make([]delivered, len(claimed))
			for i, c := range claimed {
				got[i] = delivered{q: q, entry: c.EntryID, raw: string(c.Envelope), hasM: len(c.Envelope) > 0, dlv: c.Deliveries,
					other: map[string]any{"entry": c.EntryID}}
			}
			if len(got) > 0 {
				w.log.Info("took over tasks whose lease ended", slog.String("queue", q.keys.Name), slog.Int("count", len(got)))
				w.markCancelled(ctx, q, got)
			}
			used += w.dispatchAll(ctx, got, n-used, sent)
			if next == "0-0" {
				break
			}
		}
	}
	return used
}

// endedRun is a run that ended here without its outcome recorded.
type endedRun struct {
	dlv int64
	at  time.Time
}

// adoptIdle is how long an entry must have been idle under this worker's
// consumer, unknown to it, before it takes the entry up (see adopt): past
// the moments between a read's reply and the dispatch of what it returned.
func (w *Worker) adoptIdle() time.Duration {
	return min(max(w.cfg.Lease/10, 20*time.Millisecond), time.Second)
}

// adopt takes up, in q, up to n entries pending under this worker's own
// consumer that it does not run: the reply of the read or reclaim that
// delivered them was lost, and go-redis' resend did not return them (a
// read of new entries returns newer ones; a reclaim finds them idle no
// more). Left alone, such an entry would wait out a whole lease, then be
// taken over with one more delivery counted toward MaxDeliveries. Only
// entries delivered since Start are adopted (a restarted worker of the
// same name leaves those of its previous life to their lease), and none
// that ran here under the same token and ended without an outcome
// recorded; adopt.lua fences each by its token and keeps it. It returns
// how many of the n slots it used.
func (w *Worker) adopt(ctx context.Context, q *queue, n int) int {
	sent := time.Now()
	since := sent.Sub(w.started)
	idle := w.adoptIdle()
	if since <= idle {
		return 0
	}
	ps, err := store.OwnPending(ctx, w.rdb, q.keys, w.cfg.Name, idle.Milliseconds(), w.cfg.Concurrency+100)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("list own pending entries", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
		return 0
	}
	var leases []store.Lease
	w.inflightMu.Lock()
	for k, e := range w.ended {
		if sent.Sub(e.at) > 2*w.cfg.Lease {
			delete(w.ended, k) // idle past its lease by now: adopt.lua skips it
		}
	}
	for _, p := range ps {
		k := jobKey{q.keys.Name, p.EntryID}
		e, ended := w.ended[k]
		// The entry's idle time is Redis' since its delivery; since is
		// this process' since Start, read before XPENDING ran: an entry
		// delivered before Start is idle longer.
		if w.inflight[k] != nil || ended && e.dlv == p.Deliveries || time.Duration(p.IdleMs)*time.Millisecond >= since {
			continue
		}
		leases = append(leases, store.Lease{EntryID: p.EntryID, Deliveries: p.Deliveries})
		if len(leases) == n {
			break
		}
	}
	w.inflightMu.Unlock()
	if len(leases) == 0 {
		return 0
	}
	sent = time.Now()
	adopted, err := store.Adopt(ctx, w.rdb, q.keys, w.cfg.Name, idle.Milliseconds(), w.cfg.Lease.Milliseconds(), leases)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("take up own pending entries", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
		return 0
	}
	got := make([]delivered, len(adopted))
	for i, c := range adopted {
		got[i] = delivered{q: q, entry: c.EntryID, raw: string(c.Envelope), hasM: len(c.Envelope) > 0, dlv: c.Deliveries,
			other: map[string]any{"entry": c.EntryID}}
	}
	if len(got) == 0 {
		return 0
	}
	w.log.Warn("took up tasks delivered here whose delivery was lost on the way", slog.String("queue", q.keys.Name), slog.Int("count", len(got)))
	w.markCancelled(ctx, q, got)
	return w.dispatchAll(ctx, got, n, sent)
}

// newOpID returns 128 random bits, to name one resend-safe call.
func newOpID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + "." + strconv.FormatUint(rand.Uint64(), 36)
}

func (w *Worker) forwardLoop(ctx context.Context) {
	defer w.loops.Done()
	for {
		wait := time.Second
		for _, q := range w.queues {
			moved, nextDue, now, err := store.Forward(ctx, w.rdb, q.keys, 100)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error("move due tasks", slog.String("queue", q.keys.Name), slog.Any("err", err))
				continue
			}
			if err := store.DrainOutbox(ctx, w.rdb, q.keys, defaultRetainMs); err != nil && ctx.Err() == nil {
				w.log.Error("start continuations", slog.String("queue", q.keys.Name), slog.Any("err", err))
			}
			if moved == 100 {
				wait = 0
			} else if nextDue >= 0 {
				wait = min(wait, max(time.Duration(nextDue-now)*time.Millisecond, time.Millisecond))
			}
		}
		if wait == 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.fwdWake:
			t.Stop()
		case <-t.C:
		}
	}
}

func (w *Worker) housekeepLoop(ctx context.Context) {
	defer w.loops.Done()
	t := time.NewTicker(w.cfg.HousekeepInterval)
	defer t.Stop()
	idle := max(10*w.cfg.Lease, 10*time.Minute).Milliseconds()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.clock.Sync(ctx, w.rdb); err != nil && ctx.Err() == nil {
			w.log.Error("read redis time", slog.Any("err", err))
		}
		for _, q := range w.queues {
			if _, _, err := store.Housekeep(ctx, w.rdb, q.keys, idle); err != nil && ctx.Err() == nil {
				w.log.Error("trim stream", slog.String("queue", q.keys.Name), slog.Any("err", err))
			}
			if _, err := store.CapDead(ctx, w.rdb, q.keys, w.cfg.DeadLetterCap); err != nil && ctx.Err() == nil {
				w.log.Error("cap dead letters", slog.String("queue", q.keys.Name), slog.Any("err", err))
			}
		}
	}
}
