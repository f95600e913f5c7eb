package worker

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// completers is how many goroutines record outcomes, so that one batch is
// encoded while another is in Redis.
const completers = 2

// send hands o to the completers, or, once they stopped, gives j up: its
// entry comes back after its lease. Its handler returned (or none ran):
// its slot is free for the next one now, while its entry stays held (a
// hold, see holdsFor) until the outcome is recorded.
func (w *Worker) send(o *outcome) {
	o.j.mu.Lock()
	free := o.j.slot
	o.j.slot = false
	o.j.recording = true
	took := o.j.took
	o.j.mu.Unlock()
	if free {
		w.slots <- struct{}{}
	}
	w.ahead.ran(took)
	select {
	case w.results <- o:
	case <-w.quit():
		w.finish(o.j)
	}
}

// finish forgets j and frees its hold, and its slot unless send did. A run
// whose outcome was not recorded is remembered for a while: its entry may
// still be pending here, and is not adopted (see adopt).
func (w *Worker) finish(j *job) {
	j.cancel(nil)
	k := jobKey{j.q.keys.Name, j.entry}
	j.mu.Lock()
	hold, slot, acked := j.hold, j.slot, j.acked
	j.slot, j.hold = false, false
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
		w.slots <- struct{}{}
	}
	if hold {
		w.holds <- struct{}{}
	}
}

const maxFlush = 512

// completeLoop (support) records the outcomes sent to it, in batches; once
// ctx ends (every handler returned, or was given up) it records what is
// left and returns.
func (w *Worker) completeLoop(ctx context.Context) {
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
		case <-ctx.Done():
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
			scheduled = scheduled || o.c.Outcome.Scheduled()
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
			case <-w.quit():
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
			// A stop cuts the wait short: the next try is then the last.
			t := time.NewTimer(time.Duration(100*(try+1)) * time.Millisecond)
			select {
			case <-t.C:
			case <-w.quit():
			}
			t.Stop()
		}
		fired := false
		for i, o := range os {
			if err == nil && applied[i] == store.LeaseLost {
				// Another worker runs the task (or ran it): this outcome
				// is not recorded.
				w.report(o.j, EventLeaseLost, o.j.took, 0, ErrLeaseLost)
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
	case <-w.quit():
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
	case <-w.quit():
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
		err := w.keep.DrainOutbox(ctx, q.keys)
		cancel()
		q.drainMu.Unlock()
		if err != nil {
			w.log.Error("start continuations; the next sweep retries", slog.String("queue", q.keys.Name), slog.Any("err", err))
			return
		}
	}
}

// handBackAll returns every task still in flight to its queue's stream now.
// Their handlers' later outcomes fail the fence and are dropped.
func (w *Worker) handBackAll() {
	w.inflightMu.Lock()
	var left []*job
	for k, j := range w.inflight {
		left = append(left, j)
		delete(w.inflight, k)
	}
	w.inflightMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	byQueue := map[*queue][]store.Completion{}
	for _, j := range left {
		if j.env == nil {
			// A malformed entry: its dead-letter outcome is queued; if it
			// is not recorded, the entry is read again after its lease.
			continue
		}
		byQueue[j.q] = append(byQueue[j.q], j.park(0).c)
	}
	for q, items := range byQueue {
		if _, err := store.Complete(ctx, w.rdb, q.keys, w.cfg.Name, items); err != nil {
			w.log.Error("hand back unfinished tasks; they return after their lease", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
	}
}
