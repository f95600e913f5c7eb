package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Issue 21: sharded queues, the producer's side. A queue declared with N
// shards (DeclareShards, the registry keys.ShardRegistry) is N physical
// queues; the engine places each task it sends to the queue on one of them:
//
//   - a task with a partition key on the shard of that key (ShardOf), so
//     that all the tasks of a key are in one shard and keep their order;
//   - else a task with an id (EnqueueOpts.ID) on the shard of its id, so
//     that enqueueing the id again finds the task (idempotency holds);
//   - else the next shard, round-robin per engine.
//
// Whether a queue is sharded is read from the registry on the engine's
// first use of the queue (one HGET), and read again when the answer is
// older than ShardRefresh: a queue declared sharded after a producer first
// used it is picked up within that time. Until then the producer keeps
// writing to the plain queue, which the workers of a sharded queue serve
// as well (worker/shard21.go). A change of layout (a queue declared in
// use, grown) keeps keyed tasks to the old layout for a grace and then
// looks for a moved key's earlier tasks in it (place, findEarlier; see
// docs/design.md, "Growing a queue").

// ShardRefresh is how long the engine trusts what it read of a queue's
// entry in the shard registry.
var ShardRefresh = 5 * time.Second

// shardEntry is what the engine knows of one queue's shards.
type shardEntry struct {
	set     *store.ShardSet // nil: not sharded
	read    time.Time       // when the registry was read (sent)
	redisMs int64           // Redis time of the read, Unix ms
	next    atomic.Uint64   // round-robin
}

// redisNow is the Redis time now, Unix ms: the read's, plus the time
// passed since on the monotonic clock (a step of the wall clock does not
// move it). The read's time is taken before it was sent, so this errs
// early by the read's round trip: a layout change takes effect that much
// later here, never earlier.
func (ent *shardEntry) redisNow() int64 { return ent.redisMs + time.Since(ent.read).Milliseconds() }

// shardCache maps a queue name to its *shardEntry.
type shardCache struct {
	m  sync.Map
	mu sync.Mutex // one registry read per queue at a time
}

// ShardOf is the index of the shard, of n, that key belongs to
// (keys.JumpShard): every process computes the same, and growing n moves
// only the keys that go to the new shards.
func ShardOf(key string, n int) int { return keys.JumpShard(key, n) }

// shardKey is the key a task id's shard is chosen by: a batch item
// (keys.BatchOfItem) goes with its batch.
func shardKey(key string) string {
	if b, _, ok := keys.BatchOfItem(key); ok {
		return b
	}
	return key
}

// shards returns what the engine knows of queue's shards (a nil set when
// it is not sharded): from the cache while it is fresh, else from the
// registry. A failed read of a stale entry keeps the old answer (logged);
// a failed first read is an error.
func (e *Engine) shards(ctx context.Context, queue string) (*shardEntry, error) {
	return e.readShards(ctx, queue, false)
}

// readShards is shards; force reads the registry whatever the cache holds
// (after this engine changed the entry). Reads hold shardsOf.mu from send
// to store, so a read begun before a change (a declaration's) is stored
// before the forced read that follows the change.
func (e *Engine) readShards(ctx context.Context, queue string, force bool) (*shardEntry, error) {
	if force {
		e.shardsOf.mu.Lock()
	} else if v, ok := e.shardsOf.m.Load(queue); ok {
		ent := v.(*shardEntry)
		if time.Since(ent.read) < ShardRefresh {
			return ent, nil
		}
		// Stale: one caller reads the registry, the others go on with
		// what was read before meanwhile.
		if !e.shardsOf.mu.TryLock() {
			return ent, nil
		}
	} else {
		e.shardsOf.mu.Lock()
	}
	defer e.shardsOf.mu.Unlock()
	var old *shardEntry
	if v, ok := e.shardsOf.m.Load(queue); ok {
		old = v.(*shardEntry)
		if !force && time.Since(old.read) < ShardRefresh {
			return old, nil // read meanwhile
		}
	}
	local := time.Now()
	s, ok, nowMs, err := store.ShardsAt(ctx, e.rdb, queue)
	if err != nil {
		if old != nil {
			e.cfg.Logger.Warn("async: reading the shard registry failed; keeping what was read before",
				slog.String("queue", queue), slog.Any("err", err))
			return old, nil
		}
		return nil, fmt.Errorf("queue %q: %w", queue, err)
	}
	ent := &shardEntry{read: local, redisMs: nowMs}
	if ok {
		ent.set = &s
	}
	if old != nil {
		ent.next.Store(old.next.Load())
	}
	e.shardsOf.m.Store(queue, ent)
	return ent, nil
}

// placement is where place puts a task.
type placement struct {
	queue   string   // the physical queue
	earlier []string // where an earlier task of its key may be (findEarlier)
	// next and fromMs: a task placed by the old layout during a change's
	// grace whose key goes to next after it; written in queue only if its
	// key has a task there, should it reach Redis after fromMs.
	next   string
	fromMs int64
}

// place returns the physical queue of a task sent to queue, with the id
// key and partition key pk ("" for none): queue itself unless it is
// sharded. A task placed by a key whose layout changed lately also gets
// the queues where an earlier task of that key may still be
// (store.ShardSet.Place): findEarlier then sends it there if one is.
func (e *Engine) place(ctx context.Context, queue, key, pk string) (placement, error) {
	if keys.IsShard(queue) {
		return placement{queue: queue}, nil // placed already (a shard named by a handle)
	}
	ent, err := e.shards(ctx, queue)
	if err != nil || ent.set == nil {
		return placement{queue: queue}, err
	}
	by := pk
	if by == "" {
		by = shardKey(key)
	}
	if by == "" {
		return placement{queue: ent.set.Names[int((ent.next.Add(1)-1)%uint64(ent.set.N))]}, nil
	}
	now := ent.redisNow()
	q, earlier := ent.set.Place(by, now)
	pl := placement{queue: q, earlier: earlier}
	if now < ent.set.ActiveMs {
		if next := ent.set.Next(by); next != q {
			pl.next, pl.fromMs = next, ent.set.ActiveMs
		}
	}
	return pl, nil
}

// findEarlier moves each task of ps placed by a key whose layout changed
// lately to the queue where an earlier task of its key still is, if one
// is: behind that key's waiting tasks (its partition key's order), or onto
// the task its id names already (the id's idempotency). One pipelined
// round trip for all of them; none when no task needs it.
func (e *Engine) findEarlier(ctx context.Context, ps []prepared) error {
	var probes []store.Earlier
	var at []int
	for i := range ps {
		if len(ps[i].earlier) == 0 {
			continue
		}
		probes = append(probes, store.Earlier{Queues: ps[i].earlier, ID: ps[i].userID, Part: ps[i].task.Part})
		at = append(at, i)
	}
	if len(probes) == 0 {
		return nil
	}
	found, err := store.FindEarlier(ctx, e.rdb, probes)
	if err != nil {
		return fmt.Errorf("look for earlier tasks in the old layout of a sharded queue: %w", err)
	}
	for j, i := range at {
		if found[j] >= 0 {
			// There only while its key's tasks are: enqueue.lua answers
			// Moved if they ended meanwhile, and sendEach sends it to
			// its target then. Without the condition, a task sent here
			// after another producer found the key gone and wrote to the
			// new shard would start the key anew here: its tasks on two
			// shards at once.
			ps[i].target = ps[i].queue
			ps[i].queue = ps[i].earlier[found[j]]
			ps[i].task.IfThere, ps[i].task.IfThereFromMs = true, 0
		}
		ps[i].earlier = nil
	}
	return nil
}

// Resolve returns the Ref of the task r names: a task id made of a sharded
// queue's name and a key of the caller's ("uploads/K") names the task on
// the shard of K, where an enqueue with that id placed it; else, while the
// queue's earlier layouts settle, where an earlier layout placed it; else
// on the plain queue, where the tasks go that are not placed (a batch's
// items, a repeat's, those of a producer that had not read the
// declaration yet). One pipelined look when the key's shard does not have
// it. Generated keys (stream entry ids) are left on the queue named: a
// handle carries its shard already, and one of the plain queue was
// written there. A task placed by its partition key is found through its
// handle's id, which names its shard.
func (e *Engine) Resolve(ctx context.Context, r Ref) (Ref, error) {
	if r.Queue == "" || keys.IsShard(r.Queue) || keys.IsEntryID(r.Key) {
		return r, nil
	}
	ent, err := e.shards(ctx, r.Queue)
	if err != nil {
		return Ref{}, err
	}
	if ent.set == nil {
		return r, nil
	}
	if _, _, ok := keys.BatchOfItem(r.Key); ok {
		return r, nil // a batch's items are on the plain queue
	}
	q, earlier := ent.set.Place(r.Key, ent.redisNow())
	cand := append([]string{q}, earlier...)
	if !slices.Contains(cand, r.Queue) {
		cand = append(cand, r.Queue)
	}
	found, err := store.FindEarlier(ctx, e.rdb, []store.Earlier{{Queues: cand, ID: r.Key}})
	if err != nil {
		return Ref{}, fmt.Errorf("task %s: %w", r.ID(), err)
	}
	if found[0] >= 0 {
		q = cand[found[0]] // where it is; where it would go when it is nowhere
	}
	r.Queue = q
	return r, nil
}

// DeclareShards declares queue a sharded queue of n shards in the
// registry (store.DeclareShards), or grows it to n (store.GrowShards) when
// grow is set and it has fewer, and returns its physical queues; the
// engine reads the entry again at once.
func (e *Engine) DeclareShards(ctx context.Context, queue string, n int, grow bool, ch store.ShardChange) ([]string, error) {
	var s store.ShardSet
	var err error
	if grow {
		s, err = store.GrowShards(ctx, e.rdb, queue, n, ch)
		if errors.Is(err, store.ErrNotSharded) {
			s, err = store.DeclareShards(ctx, e.rdb, queue, n, ch)
		}
	} else {
		s, err = store.DeclareShards(ctx, e.rdb, queue, n, ch)
	}
	if err != nil {
		return nil, err
	}
	if _, err := e.readShards(ctx, queue, true); err != nil {
		return nil, err
	}
	return append([]string(nil), s.Names...), nil
}

// Queue is the physical queue the i-th task of p goes to: the queue its
// options named, or, for a sharded queue, the shard PrepareItems placed
// it on (by its key). A caller that records the task's id elsewhere (a
// group's members, a join's continuation spec) takes the queue from here.
func (p Prepared) Queue(i int) string { return p.ps[i].queue }
