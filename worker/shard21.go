package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Issue 21: sharded queues, the worker's side. A worker configured with
// Queues {"uploads": w} serves the plain queue "uploads" (a producer that
// has not read the queue's declaration yet writes there) and every shard
// of it, as queues of their own: one consumer per shard in the shard's
// consumer group, reclaim, adoption, heartbeats, forwarding and
// housekeeping per shard as for any queue. The shards are read from the
// registry (keys.ShardRegistry) at Start and again every shardPoll, so a
// queue declared sharded while the worker runs is served within that time.
//
// Fairness: a fetch draws the order of the configured queues by their
// weights as before, each configured queue standing for all its physical
// queues; within one, the plain queue and the shards come in a uniformly
// random order. A sharded queue's share against the other configured
// queues is its weight w, whatever its number of shards, and each of its
// physical queues with tasks is first in its turn as often as any other:
// none starves while another has a backlog. Under StrictPriority the
// configured queues keep their priority order; their physical queues are
// still shuffled among themselves.
//
// Pausing the sharded queue's name (inspect.Pause) pauses its shards too;
// a shard can also be paused on its own. Config.QueueLimits and the
// "queue:<name>" RateLimits of a sharded queue hold for all its shards
// together: one limiter, one bucket.

// A registry entry that cannot be read touches only its own queue: the
// worker serves that queue's plain queue and the shards it knew before, goes
// on with its other queues, and reads the entry again at the next poll. So
// does Start, which never fails on the registry: a fleet keeps running
// through a malformed entry (one an operator wrote by hand, or a newer
// version's) or a registry read that failed for a moment, and takes up the
// shards once the entry reads again. The failure is logged when it first
// happens and when its reason changes (see noteRegistryRead), not at every
// poll.

// shardPoll is how often a worker reads the shard registry for its queues.
var shardPoll = 5 * time.Second

// shardState is the worker's view of its queues once shards join them.
type shardState struct {
	mu   sync.Mutex                        // one change of the lists at a time
	list atomic.Pointer[[]*queue]          // every queue served; nil before Start
	ctl  atomic.Pointer[map[string]*queue] // by control channel
	any  atomic.Bool                       // some queue served is a shard

	logMu sync.Mutex
	bad   map[string]string // configured queue -> why its entry did not read, as logged
}

// served is the configured queue that q serves: its own name, or the
// sharded queue whose shard it is.
func (q *queue) served() string {
	if q.logical != "" {
		return q.logical
	}
	return q.keys.Name
}

// queueList returns every queue the worker serves now, in order: each
// configured queue followed by its shards.
func (w *Worker) queueList() []*queue {
	if p := w.shards.list.Load(); p != nil {
		return *p
	}
	return w.queues
}

// ctlQueue returns the queue whose control channel is ch, or nil.
func (w *Worker) ctlQueue(ch string) *queue {
	if p := w.shards.ctl.Load(); p != nil {
		return (*p)[ch]
	}
	return w.byCtl[ch]
}

// readShards reads the registry entry of each configured queue and returns
// the shards not served yet. A queue whose entry does not read (a Redis
// error, or an entry that is not what this library writes) adds nothing
// this time; the others go on (see the top of this file).
func (w *Worker) readShards(ctx context.Context) []*queue {
	have := map[string]bool{}
	for _, q := range w.queueList() {
		have[q.keys.Name] = true
	}
	var add []*queue
	for _, name := range slices.Sorted(maps.Keys(w.cfg.Queues)) {
		s, ok, err := store.Shards(ctx, w.rdb, name)
		if ctx.Err() != nil {
			return add // stopping, or out of time: the next poll reads again
		}
		w.noteRegistryRead(name, err)
		if err != nil || !ok {
			continue
		}
		for _, sn := range s.Names {
			if !have[sn] {
				add = append(add, &queue{keys: keys.ForQueue(sn), weight: w.cfg.Queues[name], logical: name, cursor: "0-0"})
			}
		}
	}
	return add
}

// noteRegistryRead logs how the read of queue's registry entry went, when
// that changed: a failure when it first happens and when its reason does
// (another malformed entry, or malformed after unreadable), and a read
// that works again once. A failure that only repeats is logged at debug
// level. Errors other than a malformed entry count as one reason
// ("unavailable"), whatever their text (a connection's address in it
// changes from one try to the next).
func (w *Worker) noteRegistryRead(queue string, err error) {
	reason := ""
	malformed := errors.Is(err, store.ErrBadShardSet)
	switch {
	case malformed:
		reason = err.Error()
	case err != nil:
		reason = "unavailable"
	}
	w.shards.logMu.Lock()
	last, had := w.shards.bad[queue]
	switch {
	case err == nil && had:
		delete(w.shards.bad, queue)
	case err != nil && last != reason:
		if w.shards.bad == nil {
			w.shards.bad = map[string]string{}
		}
		w.shards.bad[queue] = reason
	}
	w.shards.logMu.Unlock()
	switch {
	case err == nil && had:
		w.log.Info("the queue's shard registry entry reads again", slog.String("queue", queue))
	case err == nil:
	case last != reason && malformed:
		w.log.Error("the queue's shard registry entry is malformed: serving its plain queue and the shards known before, reading the entry again at every poll (delete the entry and declare the queue again to repair it)",
			slog.String("queue", queue), slog.Duration("poll", shardPoll), slog.Any("err", err))
	case last != reason:
		w.log.Warn("read the queue's shard registry entry: serving its plain queue and the shards known before, reading the entry again at every poll",
			slog.String("queue", queue), slog.Duration("poll", shardPoll), slog.Any("err", err))
	default:
		w.log.Debug("the queue's shard registry entry still does not read", slog.String("queue", queue), slog.Any("err", err))
	}
}

// initShards adds the shards of the configured queues that the registry
// holds now to w.queues (Start, w.mu held, before any loop runs: Start
// then ensures their groups and subscribes to their control channels).
// It does not fail: an entry that does not read is logged and read again
// by shardLoop (the error result is always nil).
func (w *Worker) initShards(ctx context.Context) error {
	add := w.readShards(ctx)
	w.shards.mu.Lock()
	defer w.shards.mu.Unlock()
	w.queues = withShards(w.queues, add)
	ctl := map[string]*queue{}
	for _, q := range w.queues {
		ctl[q.keys.Ctl()] = q
		w.byCtl[q.keys.Ctl()] = q
	}
	list := w.queues
	w.shards.list.Store(&list)
	w.shards.ctl.Store(&ctl)
	w.shards.any.Store(len(list) > len(w.cfg.Queues))
	return nil
}

// withShards returns qs with add inserted, each shard after the last queue
// that serves the same configured queue.
func withShards(qs, add []*queue) []*queue {
	out := slices.Clone(qs)
	for _, a := range add {
		at := len(out)
		for i, q := range out {
			if q.served() == a.served() {
				at = i + 1
			}
		}
		out = slices.Insert(out, at, a)
	}
	return out
}

// shardLoop (intake) reads the shard registry every shardPoll and starts
// serving the shards that joined.
func (w *Worker) shardLoop(ctx context.Context) {
	t := time.NewTicker(shardPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, shardPoll)
		err := w.addShards(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.log.Warn("start serving new shards; trying again later", slog.Any("err", err))
		}
	}
}

// addShards serves the shards the registry lists that the worker does not
// serve yet: their consumer groups ensured, their control channels
// subscribed to and their own pause flags read before the fetch loop sees
// them. An error leaves them for the next call.
func (w *Worker) addShards(ctx context.Context) error {
	add := w.readShards(ctx)
	if len(add) == 0 {
		return nil
	}
	chans := make([]string, len(add))
	ks := make([]keys.Queue, len(add))
	for i, q := range add {
		if err := store.EnsureGroup(ctx, w.rdb, q.keys); err != nil {
			return err
		}
		chans[i] = q.keys.Ctl()
		ks[i] = q.keys
	}
	// The confirmations reach controlLoop, which skips them; a cancel
	// request sent before this subscription took effect is caught by the
	// heartbeats, and a pause notice by the flags read next.
	if err := w.ctl.Subscribe(ctx, chans...); err != nil {
		return fmt.Errorf("subscribe to control channels: %w", err)
	}
	// A shard paused on its own before this worker knew of it starts
	// paused: pauseLoop reads only the queues it knew as its read began.
	flags, err := store.PausedFlags(ctx, w.rdb, ks)
	if err != nil {
		return err
	}
	own := map[*queue]bool{}
	for i, on := range flags {
		if on {
			own[add[i]] = true
		}
	}
	w.shards.mu.Lock()
	defer w.shards.mu.Unlock()
	list := withShards(w.queueList(), add)
	ctl := map[string]*queue{}
	for _, q := range list {
		ctl[q.keys.Ctl()] = q
	}
	// Before the list: a read of the pause flags that ends from now on
	// pauses the shards of a paused queue (pausedWithShards).
	w.shards.any.Store(true)
	// A shard of a queue paused now starts paused. Compare-and-swap: a
	// read of the flags stored meanwhile (a queue resumed, say) is not
	// overwritten with what was read before it.
	for {
		old := w.pause.set.Load()
		set := maps.Clone(own)
		if old != nil {
			maps.Copy(set, *old)
		}
		if len(set) == 0 {
			break // nothing paused
		}
		withNew := w.pausedWithShards(list, set)
		if w.pause.set.CompareAndSwap(old, &withNew) {
			break
		}
	}
	w.shards.ctl.Store(&ctl)
	w.shards.list.Store(&list)
	for _, q := range add {
		w.log.Info("serving a shard", slog.String("queue", q.served()), slog.String("shard", q.keys.Name), slog.Bool("paused", w.isPaused(q)))
	}
	w.wakeForwarder()
	return nil
}

// pausedWithShards returns set (a copy), the pause flags last read for the
// queues qs, with the shards of each configured queue that set holds. The
// shards are those of qs and of the queues served now (w.queueList): a
// read of the flags that began before addShards published a shard still
// pauses it with its queue, whose own flag every read has. The queues
// served now that qs lacks (added while the read was under way) keep what
// the set stored last held for them: the read knows nothing of their own
// flags.
func (w *Worker) pausedWithShards(qs []*queue, set map[*queue]bool) map[*queue]bool {
	out := make(map[*queue]bool, len(set))
	for q := range set {
		out[q] = true
	}
	now := w.queueList()
	if len(now) > len(qs) {
		in := make(map[*queue]bool, len(qs))
		for _, q := range qs {
			in[q] = true
		}
		if old := w.pause.set.Load(); old != nil {
			for _, q := range now {
				if !in[q] && (*old)[q] {
					out[q] = true
				}
			}
		}
	}
	var names map[string]bool
	for q := range set {
		if q.keys.Name == q.served() {
			if names == nil {
				names = map[string]bool{}
			}
			names[q.keys.Name] = true
		}
	}
	for _, l := range [][]*queue{qs, now} {
		for _, q := range l {
			if names[q.served()] {
				out[q] = true
			}
		}
	}
	return out
}

// fetchOrder returns the queues qs in the order one fetch tries them: the
// configured queues in the order w.order draws by weight (or priority),
// each followed by its physical queues' others, those of one configured
// queue shuffled (see the top of this file).
func (w *Worker) fetchOrder(qs []*queue) []*queue {
	if !w.shards.any.Load() {
		return w.order(qs)
	}
	groups := map[string][]*queue{}
	var reps []*queue
	for _, q := range qs {
		if _, ok := groups[q.served()]; !ok {
			reps = append(reps, q)
		}
		groups[q.served()] = append(groups[q.served()], q)
	}
	out := make([]*queue, 0, len(qs))
	for _, r := range w.order(reps) {
		g := groups[r.served()]
		rand.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		out = append(out, g...)
	}
	return out
}
