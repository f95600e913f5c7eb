package worker

import (
	"context"
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

// shardPoll is how often a worker reads the shard registry for its queues.
var shardPoll = 5 * time.Second

// shardState is the worker's view of its queues once shards join them.
type shardState struct {
	mu   sync.Mutex                        // one change of the lists at a time
	list atomic.Pointer[[]*queue]          // every queue served; nil before Start
	ctl  atomic.Pointer[map[string]*queue] // by control channel
	any  atomic.Bool                       // some queue served is a shard
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
// the shards not served yet.
func (w *Worker) readShards(ctx context.Context) ([]*queue, error) {
	have := map[string]bool{}
	for _, q := range w.queueList() {
		have[q.keys.Name] = true
	}
	var add []*queue
	for _, name := range slices.Sorted(maps.Keys(w.cfg.Queues)) {
		s, ok, err := store.Shards(ctx, w.rdb, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		for _, sn := range s.Names {
			if !have[sn] {
				add = append(add, &queue{keys: keys.ForQueue(sn), weight: w.cfg.Queues[name], logical: name, cursor: "0-0"})
			}
		}
	}
	return add, nil
}

// initShards adds the shards of the configured queues that the registry
// holds now to w.queues (Start, w.mu held, before any loop runs: Start
// then ensures their groups and subscribes to their control channels).
func (w *Worker) initShards(ctx context.Context) error {
	add, err := w.readShards(ctx)
	if err != nil {
		return fmt.Errorf("read the shard registry: %w", err)
	}
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
			w.log.Warn("read the shard registry; trying again later", slog.Any("err", err))
		}
	}
}

// addShards serves the shards the registry lists that the worker does not
// serve yet: their consumer groups ensured and their control channels
// subscribed to before the fetch loop sees them.
func (w *Worker) addShards(ctx context.Context) error {
	add, err := w.readShards(ctx)
	if err != nil || len(add) == 0 {
		return err
	}
	chans := make([]string, len(add))
	for i, q := range add {
		if err := store.EnsureGroup(ctx, w.rdb, q.keys); err != nil {
			return err
		}
		chans[i] = q.keys.Ctl()
	}
	// The confirmations reach controlLoop, which skips them; a cancel
	// request sent before this subscription took effect is caught by the
	// heartbeats.
	if err := w.ctl.Subscribe(ctx, chans...); err != nil {
		return fmt.Errorf("subscribe to control channels: %w", err)
	}
	w.shards.mu.Lock()
	defer w.shards.mu.Unlock()
	list := withShards(w.queueList(), add)
	ctl := map[string]*queue{}
	for _, q := range list {
		ctl[q.keys.Ctl()] = q
	}
	// A shard of a queue paused now starts paused.
	if set := w.pause.set.Load(); set != nil {
		withNew := w.pausedWithShards(list, *set)
		w.pause.set.Store(&withNew)
	}
	w.shards.ctl.Store(&ctl)
	w.shards.list.Store(&list)
	w.shards.any.Store(true)
	for _, q := range add {
		w.log.Info("serving a shard", slog.String("queue", q.served()), slog.String("shard", q.keys.Name))
	}
	w.wakeForwarder()
	return nil
}

// pausedWithShards returns set (a copy) with the shards in qs of each
// configured queue whose own flag set holds.
func (w *Worker) pausedWithShards(qs []*queue, set map[*queue]bool) map[*queue]bool {
	var names map[string]bool
	for q := range set {
		if q.keys.Name == q.served() {
			if names == nil {
				names = map[string]bool{}
			}
			names[q.keys.Name] = true
		}
	}
	out := make(map[*queue]bool, len(set))
	for q := range set {
		out[q] = true
	}
	for _, q := range qs {
		if names[q.served()] {
			out[q] = true
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
