package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

type delivered struct {
	q     *queue
	entry string
	raw   string
	hasM  bool
	other string // the entry's fields, as text, when it has no 'm' field
	dlv   int64
	grp   string // the entry's group field (members of a group's own queue)
	part  string // the entry's partition fields (pk, nx), see store.Completion
	next  string

	cancelled bool // a taken-over entry whose task has a cancel request
}

// fetchLoop (intake) owns slot acquisition: it reads new entries and, every Lease/4,
// first takes over entries whose lease ended (XAUTOCLAIM), so that a busy or
// idle fetcher never starves recovery of slots.
func (w *Worker) fetchLoop(ctx context.Context) {
	reclaimEvery := max(w.cfg.Lease/4, 10*time.Millisecond)
	block := min(w.cfg.BlockTimeout, reclaimEvery)
	nextReclaim := time.Now()
	for {
		// A takeover due reads nothing ahead: it needs slots.
		n, h := w.acquire(ctx, w.cfg.FetchBatch, !time.Now().Before(nextReclaim))
		if h == 0 {
			return
		}
		if n > 0 && !time.Now().Before(nextReclaim) {
			used := w.reclaim(ctx, n)
			n, h = n-used, h-used
			nextReclaim = time.Now().Add(reclaimEvery)
			if h == 0 {
				continue
			}
		}
		qs := w.activeQueues()
		if len(qs) == 0 {
			// Every queue is paused: wait for a change.
			w.releaseAll(n, h)
			if !w.waitResume(ctx) {
				return
			}
			continue
		}
		sent := time.Now()
		got, err := w.read(ctx, qs, h, block)
		if err != nil {
			w.releaseAll(n, h)
			if ctx.Err() != nil {
				return
			}
			w.log.Error("read tasks", slog.Any("err", err))
			if !pause(ctx, 200*time.Millisecond) {
				return
			}
			continue
		}
		k := min(n, len(got))
		used := w.dispatchAll(ctx, got[:k], n, sent)
		usedAhead := 0
		if k < len(got) {
			usedAhead = w.dispatchAhead(ctx, got[k:], h-n, sent)
		}
		w.releaseAll(n-used, h-used-usedAhead)
		w.ahead.adapt(len(got) >= h, w.cfg.FetchBatch)
	}
}

// acquire takes up to max holds, n of them with a slot: it waits for the
// first hold, and for the first slot unless entries may be read ahead (see
// readAhead), then takes what is free without waiting. A slot is a handler
// that may start; a hold is an entry this worker may keep pending until its
// outcome is recorded (see holdsFor). The h-n holds without a slot are
// entries read ahead, whose handlers start as slots free.
//
// noAhead reads nothing ahead: it waits for the entries read ahead to
// start, then for a slot.
func (w *Worker) acquire(ctx context.Context, max int, noAhead bool) (n, h int) {
	select {
	case <-w.holds:
	case <-ctx.Done():
		return 0, 0
	}
	h = 1
	// While entries read ahead wait, newer ones queue behind them (they
	// start in the order read): no slot is taken here then.
	room := 0
	if !noAhead {
		room = w.ahead.room()
	}
	for w.ahead.waiting.Load() > 0 && room == 0 {
		select {
		case <-w.ahead.started:
		case <-ctx.Done():
			w.holds <- struct{}{}
			return 0, 0
		}
		if !noAhead {
			room = w.ahead.room()
		}
	}
	queued := w.ahead.waiting.Load() > 0
	if !queued {
		select {
		case <-w.slots:
			n = 1
		default:
			if room == 0 {
				select {
				case <-w.slots:
					n = 1
				case <-ctx.Done():
					w.holds <- struct{}{}
					return 0, 0
				}
			}
		}
	}
	for h < max {
		select {
		case <-w.holds:
		default:
			return n, h
		}
		if !queued {
			select {
			case <-w.slots:
				n++
				h++
				continue
			default:
			}
		}
		if h-n >= room {
			w.holds <- struct{}{}
			return n, h
		}
		h++
	}
	return n, h
}

// release gives back n slots and their holds, unused.
func (w *Worker) release(n int) { w.releaseAll(n, n) }

// releaseAll gives back n slots and h holds, unused.
func (w *Worker) releaseAll(n, h int) {
	for i := 0; i < n; i++ {
		w.slots <- struct{}{}
	}
	for i := 0; i < h; i++ {
		w.holds <- struct{}{}
	}
}

// takeOne takes a free slot and hold without waiting, if there are both.
func (w *Worker) takeOne() bool {
	select {
	case <-w.holds:
	default:
		return false
	}
	select {
	case <-w.slots:
		return true
	default:
		w.holds <- struct{}{}
		return false
	}
}

// holdsFor is how many entries a worker of concurrency c and fetch batch b
// keeps pending at most: c running, and twice max(c, b) whose handlers
// returned and whose outcomes are on their way to Redis. A handler's slot
// is free once it returns, so the next read does not wait for the round
// trip that records its outcome; the holds bound that lag (Redis slower than
// the handlers stops the reads, not the handlers' pace).
func holdsFor(c, b int) int { return c + 2*max(c, b) }

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

// read reads new entries of qs (the queues not paused).
func (w *Worker) read(ctx context.Context, qs []*queue, n int, block time.Duration) ([]delivered, error) {
	if len(qs) > 1 {
		order := w.fetchOrder(qs)
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
	return w.readGroup(ctx, qs, n, block)
}

// crossSlotBlock bounds each blocking read when the queues live in different
// Redis Cluster slots and are read one at a time.
const crossSlotBlock = 100 * time.Millisecond

// order returns the queues qs in the order one fetch tries them.
func (w *Worker) order(qs []*queue) []*queue {
	if len(qs) == 1 || w.cfg.StrictPriority {
		return qs
	}
	rest := append([]*queue(nil), qs...)
	out := make([]*queue, 0, len(rest))
	for len(rest) > 0 {
		total := 0
		for _, q := range rest {
			total += q.weight
		}
		r := rand.IntN(total)
		for i, q := range rest {
			if r < q.weight {
				out = append(out, q)
				rest = append(rest[:i], rest[i+1:]...)
				break
			}
			r -= q.weight
		}
	}
	return out
}

func (w *Worker) readGroup(ctx context.Context, qs []*queue, n int, block time.Duration) ([]delivered, error) {
	ks := make([]keys.Queue, len(qs))
	for i, q := range qs {
		ks[i] = q.keys
	}
	res, err := store.ReadNew(ctx, w.rdb, ks, w.cfg.Name, n, block)
	switch {
	case errors.Is(err, store.ErrCrossSlot):
		w.crossSlot.Store(true)
		return nil, nil
	case errors.Is(err, store.ErrNoGroup):
		for _, q := range qs {
			if gerr := store.EnsureGroup(ctx, w.rdb, q.keys); gerr != nil {
				return nil, gerr
			}
		}
		return nil, nil
	case err != nil:
		return nil, err
	}
	out := make([]delivered, len(res))
	for i, e := range res {
		out[i] = delivered{q: qs[e.Queue], entry: e.ID, raw: e.Envelope, hasM: e.HasM, other: e.Fields, grp: e.Group, dlv: 1,
			part: e.Part, next: e.Next}
	}
	return out, nil
}

// dispatchAll dispatches entries holding n slots already. An entry beyond
// those (a read over several queues returns up to n per queue) takes a free
// slot if there is one, else goes straight back to its queue. Entries read
// after ctx ended (a blocking read outlives its ctx) are handed back too,
// and so are entries of a queue paused since the read was sent (or taken
// over from a dead worker while it is paused): straight back into the
// stream, fenced by their tokens, so that no task of a paused queue starts
// once this worker knows of the pause. It returns how many of the n slots
// it used.
func (w *Worker) dispatchAll(ctx context.Context, got []delivered, n int, sent time.Time) int {
	used := 0
	for _, d := range got {
		handBack, holds := ctx.Err() != nil || w.isPaused(d.q), true
		if used < n {
			used++
		} else {
			if !w.takeOne() {
				handBack, holds = true, false
			}
		}
		w.dispatch(d, sent, handBack, holds, holds)
	}
	return used
}

// dispatchAhead dispatches entries read ahead, holding m holds (no slot):
// each waits for a slot on its goroutine (startAhead). An entry beyond those
// is dispatched as dispatchAll does. It returns how many of the m holds it
// used.
func (w *Worker) dispatchAhead(ctx context.Context, got []delivered, m int, sent time.Time) int {
	used := 0
	for _, d := range got {
		if used < m {
			used++
			w.dispatch(d, sent, ctx.Err() != nil || w.isPaused(d.q), false, true)
			continue
		}
		handBack, holds := ctx.Err() != nil || w.isPaused(d.q), true
		if !w.takeOne() {
			handBack, holds = true, false
		}
		w.dispatch(d, sent, handBack, holds, holds)
	}
	return used
}

// dispatch turns one delivered entry into a running job, or straight into
// an outcome when it cannot run here.
// holds tells whether the entry took a slot (given back when its outcome is
// recorded).
// slot tells whether it took a slot too (else it waits for one before its
// handler starts: an entry read ahead).
func (w *Worker) dispatch(d delivered, sent time.Time, handBack, slot, holds bool) {
	j := &job{q: d.q, entry: d.entry, dlv: d.dlv, key: d.entry, part: d.part, partNext: d.next}
	var jctx context.Context
	jctx, j.cancel = context.WithCancelCause(context.Background())
	j.ctx = jctx
	j.leaseEnd.Store(mono(sent) + int64(w.leaseGuard()))
	j.slot, j.hold = slot, holds
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
		w.deadLettered(j, reason)
		// An entry that cannot be decoded still tells its group (the
		// entry's field g) that it ended.
		o := j.ends(store.Dead(raw, reason))
		o.c.Attempt = 0 // none ran
		if o.c.Group == "" {
			o.c.Group = d.grp
		}
		w.send(o)
	}
	if !d.hasM {
		dead([]byte(d.other), "malformed entry: no 'm' field; it was not written by this library")
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
		w.send(j.park(0))
		return
	}
	w.mu.Lock()
	h := w.handlers[env.Kind]
	w.mu.Unlock()
	if h == nil {
		w.log.Debug("no handler for kind here; handing the task back", slog.String("kind", env.Kind), slog.String("task", keys.TaskID(d.q.keys.Name, j.key)))
		w.send(j.park(parkDelay(env.Parked)))
		return
	}
	if d.cancelled {
		// Taken over from a worker that died: a cancel request sent to it
		// reached nobody.
		w.report(j, EventCancelled, 0, 0, ErrCancelled)
		w.send(j.cancelled(codec.ReasonCancelled))
		return
	}
	if env.DeadlineMs > 0 && !w.clock.Now().Before(time.UnixMilli(env.DeadlineMs)) {
		// Past its deadline before it started: it never starts, and this
		// attempt does not count.
		w.report(j, EventCancelled, 0, 0, deadlineEnded{})
		o := j.cancelled(codec.ReasonDeadline)
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
		pg:   w.jobProgress(j),
	})
	w.execs.Add(1)
	if !slot {
		w.ahead.waiting.Add(1) // before the fetch loop acquires again
		w.ahead.queue <- j
		return
	}
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

// parkDelay is the wait before a task no worker here can run is offered
// again: 250ms, doubling per hand-back, at most 30s.
func parkDelay(parked int) time.Duration {
	d := 250 * time.Millisecond << min(parked, 7)
	return min(d, 30*time.Second)
}

// readAhead is how many entries a worker reads beyond its free slots: none
// at first, and more (up to its FetchBatch) while the queue has a backlog
// and its handlers are quick (their runs average under aheadRun), so that
// a read is under way while the handlers run the last one; it falls back
// to none as soon as handlers are slow or an entry read ahead waited longer
// than aheadWait for its slot. Entries are never held back from other
// workers for longer than that: Concurrency handlers running, and at most
// this many waiting briefly behind them.
type readAhead struct {
	queue   chan *job     // entries read ahead, in the order read (aheadLoop)
	started chan struct{} // a signal: an entry read ahead left the queue
	allow   atomic.Int64  // entries that may wait for a slot
	waiting atomic.Int64  // entries read ahead, not started yet
	slow    atomic.Bool   // an entry waited too long, or a handler ran long
	runNs   atomic.Int64  // handlers' recent run time, a moving average
	ran_    atomic.Int64  // handlers that returned since the last adapt

	// off: nothing is read ahead (StrictPriority over several queues: an
	// entry of a lower queue waiting for its slot would start after
	// entries of a higher queue enqueued meanwhile).
	off bool
}

const (
	aheadWait = 10 * time.Millisecond
	aheadRun  = time.Millisecond
)

// room is how many more entries may be read ahead now.
func (a *readAhead) room() int {
	return int(max(a.allow.Load()-a.waiting.Load(), 0))
}

// adapt sets the allowance after a read; full tells whether it came back
// with all it asked for (a backlog).
func (a *readAhead) adapt(full bool, batch int) {
	if a.off {
		return
	}
	cur := a.allow.Load()
	returned := a.ran_.Swap(0)
	switch {
	case a.slow.Swap(false) || time.Duration(a.runNs.Load()) > aheadRun:
		a.allow.Store(0)
	case full && returned > 0 && cur < int64(batch):
		a.allow.Store(min(max(2*cur, 16), int64(batch)))
	}
}

// ran folds a handler's run time into the average; send calls it with
// every outcome. An outcome of no handler run (took 0: an entry handed back
// or handed on without starting, a task parked for a limit or a rate, a
// dead letter) says nothing of the handlers' pace: it is not counted.
func (a *readAhead) ran(took time.Duration) {
	if took <= 0 {
		return
	}
	old := a.runNs.Load()
	a.runNs.Store(old + (int64(took)-old)/8)
	a.ran_.Add(1)
	if took > aheadWait {
		a.slow.Store(true)
	}
}

// aheadLoop (support) starts the entries read ahead, in the order read, as
// slots free. A task that must not start by then (its lease lost,
// cancelled, its queue paused, or the worker stopping: once intake has
// stopped, Stop waits only for the handlers running) is handed on without
// running.
func (w *Worker) aheadLoop(ctx context.Context) {
	stopping := w.intake.ctx.Done()
	for {
		var j *job
		select {
		case j = <-w.ahead.queue:
		case <-ctx.Done():
			w.dropAhead()
			return
		}
		// An entry waits aheadWait at most: then (handlers are slow) it
		// goes back to its queue, for any worker, and so do the ones read
		// ahead behind it that find no free slot.
		slot := false
		select {
		case <-w.slots:
			slot = true
		default:
			if !w.ahead.slow.Load() {
				t := time.NewTimer(aheadWait)
				select {
				case <-w.slots:
					slot = true
				case <-j.ctx.Done():
				case <-stopping:
				case <-t.C:
					w.ahead.slow.Store(true)
					w.ahead.allow.Store(0)
				}
				t.Stop()
			}
		}
		if slot {
			j.mu.Lock()
			j.slot = true
			j.mu.Unlock()
		}
		w.ahead.waiting.Add(-1)
		select {
		case w.ahead.started <- struct{}{}:
		default:
		}
		if slot && j.ctx.Err() == nil && !w.isPaused(j.q) && w.intake.ctx.Err() == nil {
			go w.exec(j)
			continue
		}
		go w.notStarted(j)
	}
}

// dropAhead forgets the entries read ahead that are still queued when the
// support loops end. Only a Stop whose ctx ended leaves any (a Stop that
// waits for the handlers waits for each of these to be handed on), and it
// handed their tasks back to their queues (handBackAll) first. Each ends
// its count in execs, so that nothing waits for it.
func (w *Worker) dropAhead() {
	for {
		select {
		case j := <-w.ahead.queue:
			w.ahead.waiting.Add(-1)
			w.finish(j)
			w.execs.Done()
		default:
			return
		}
	}
}

// notStarted hands on j, read ahead, whose handler must not start.
func (w *Worker) notStarted(j *job) {
	defer w.execs.Done()
	cause := context.Cause(j.ctx)
	switch {
	case j.isLost():
		w.send(&outcome{j: j, drop: true})
	case errors.Is(cause, ErrLeaseLost):
		w.send(j.lapsed())
	case errors.Is(cause, ErrCancelled):
		w.report(j, EventCancelled, 0, 0, ErrCancelled)
		w.send(j.cancelled(codec.ReasonCancelled))
	default:
		// Stopping, its queue paused, or it waited too long for a slot:
		// back into the stream.
		w.send(j.park(0))
	}
}
