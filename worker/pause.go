package worker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// pausePoll is how often a worker reads its queues' pause flags (one
// pipelined round of EXISTS); a pause notice on a queue's control channel
// makes it read them at once. With the fetch loop's hand-back of what a
// read already in flight returns for a queue paused meanwhile, a worker
// starts no task of a paused queue later than this (plus a round trip)
// after the flag was set, even when the notice is lost.
const pausePoll = 250 * time.Millisecond

// pauseState is which of a worker's queues are paused, as last read.
type pauseState struct {
	set atomic.Pointer[map[*queue]bool] // nil: none paused

	mu      sync.Mutex
	changed chan struct{} // closed when set changes, then replaced
	poke    chan struct{} // a pause notice came: read the flags now
}

// initPause reads the pause flags once, before the fetch loop starts, so a
// worker started on a paused queue never reads from it.
func (w *Worker) initPause(ctx context.Context) error {
	w.pause.changed = make(chan struct{})
	w.pause.poke = make(chan struct{}, 1)
	return w.readPaused(ctx)
}

// pauseLoop (intake) reads the pause flags every pausePoll, and at once
// after a pause notice.
func (w *Worker) pauseLoop(ctx context.Context) {
	t := time.NewTicker(pausePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.pause.poke:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*pausePoll)
		err := w.readPaused(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.log.Debug("read pause flags", slog.Any("err", err))
		}
	}
}

// pauseNotice is called by controlLoop for a keys.PauseNotice message.
func (w *Worker) pauseNotice() {
	select {
	case w.pause.poke <- struct{}{}:
	default:
	}
}

// readPaused reads the flags and, when they changed, wakes a fetch loop
// waiting for a queue to resume and refreshes the registration.
func (w *Worker) readPaused(ctx context.Context) error {
	// No shard joins between the read of the list and the store of the
	// set (addShards holds the lock while it publishes the shards).
	w.shards.mu.Lock()
	defer w.shards.mu.Unlock()
	list := w.queueList()
	qs := make([]keys.Queue, len(list))
	for i, q := range list {
		qs[i] = q.keys
	}
	flags, err := store.PausedFlags(ctx, w.rdb, qs)
	if err != nil {
		return err
	}
	var set map[*queue]bool
	for i, on := range flags {
		if on {
			if set == nil {
				set = map[*queue]bool{}
			}
			set[list[i]] = true
		}
	}
	if set != nil && w.shards.any.Load() {
		set = w.pausedWithShards(list, set) // a sharded queue's pause holds for its shards
	}
	old := w.pause.set.Load()
	if sameSet(old, set) {
		return nil
	}
	if set == nil {
		w.pause.set.Store(nil)
	} else {
		w.pause.set.Store(&set)
	}
	for _, q := range list {
		was := old != nil && (*old)[q]
		if set[q] != was {
			if set[q] {
				w.log.Info("queue paused: not fetching from it", slog.String("queue", q.keys.Name))
			} else {
				w.log.Info("queue resumed", slog.String("queue", q.keys.Name))
			}
		}
	}
	w.pause.mu.Lock()
	close(w.pause.changed)
	w.pause.changed = make(chan struct{})
	w.pause.mu.Unlock()
	w.registryPoke()
	return nil
}

func sameSet(old *map[*queue]bool, set map[*queue]bool) bool {
	if old == nil {
		return len(set) == 0
	}
	if len(*old) != len(set) {
		return false
	}
	for q := range set {
		if !(*old)[q] {
			return false
		}
	}
	return true
}

// isPaused reports whether q was paused when the flags were last read.
func (w *Worker) isPaused(q *queue) bool {
	set := w.pause.set.Load()
	return set != nil && (*set)[q]
}

// activeQueues returns the worker's queues that are not paused, in order.
func (w *Worker) activeQueues() []*queue {
	set := w.pause.set.Load()
	list := w.queueList()
	if set == nil {
		return list
	}
	out := make([]*queue, 0, len(list))
	for _, q := range list {
		if !(*set)[q] {
			out = append(out, q)
		}
	}
	return out
}

// pausedNames returns the names of the worker's paused queues (configured
// ones: a shard is paused with its sharded queue).
func (w *Worker) pausedNames() []string {
	var out []string
	for _, q := range w.queueList() {
		if q.logical == "" && w.isPaused(q) {
			out = append(out, q.keys.Name)
		}
	}
	return out
}

// waitResume waits until the pause flags change, or ctx ends; it reports
// whether ctx is still alive.
func (w *Worker) waitResume(ctx context.Context) bool {
	w.pause.mu.Lock()
	ch := w.pause.changed
	w.pause.mu.Unlock()
	if len(w.activeQueues()) > 0 {
		return true // changed meanwhile
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}
