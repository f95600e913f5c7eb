package engine

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
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
// as well (worker/shard21.go).

// ShardRefresh is how long the engine trusts what it read of a queue's
// entry in the shard registry.
var ShardRefresh = 5 * time.Second

// shardEntry is what the engine knows of one queue's shards.
type shardEntry struct {
	set  *store.ShardSet // nil: not sharded
	read time.Time       // when the registry was read
	next atomic.Uint64   // round-robin
}

// shardCache maps a queue name to its *shardEntry.
type shardCache struct {
	m  sync.Map
	mu sync.Mutex // one registry read per queue at a time
}

// ShardOf is the index of the shard, of n, that key belongs to: FNV-1a of
// the key, modulo n. Every process computes the same.
func ShardOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

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
	if v, ok := e.shardsOf.m.Load(queue); ok {
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
		if time.Since(old.read) < ShardRefresh {
			return old, nil // read meanwhile
		}
	}
	s, ok, err := store.Shards(ctx, e.rdb, queue)
	if err != nil {
		if old != nil {
			e.cfg.Logger.Warn("async: reading the shard registry failed; keeping what was read before",
				slog.String("queue", queue), slog.Any("err", err))
			return old, nil
		}
		return nil, fmt.Errorf("queue %q: %w", queue, err)
	}
	ent := &shardEntry{read: time.Now()}
	if ok {
		ent.set = &s
	}
	if old != nil {
		ent.next.Store(old.next.Load())
	}
	e.shardsOf.m.Store(queue, ent)
	return ent, nil
}

// place returns the physical queue of a task sent to queue, with the id
// key and partition key pk ("" for none): queue itself unless it is
// sharded.
func (e *Engine) place(ctx context.Context, queue, key, pk string) (string, error) {
	if keys.IsShard(queue) {
		return queue, nil // placed already (a shard named by a handle)
	}
	ent, err := e.shards(ctx, queue)
	if err != nil || ent.set == nil {
		return queue, err
	}
	n := ent.set.N
	var i int
	switch {
	case pk != "":
		i = ShardOf(pk, n)
	case key != "":
		i = ShardOf(shardKey(key), n)
	default:
		i = int((ent.next.Add(1) - 1) % uint64(n))
	}
	return ent.set.Names[i], nil
}

// Resolve returns the Ref of the task r names: a task id made of a sharded
// queue's name and a key of the caller's ("uploads/K") names the task on
// the shard of K, where an enqueue with that id placed it. Generated keys
// (stream entry ids) are left on the queue named: a handle carries its
// shard already, and one of the plain queue was written there. A task
// placed by its partition key is found through its handle's id, which
// names its shard.
func (e *Engine) Resolve(ctx context.Context, r Ref) (Ref, error) {
	if r.Queue == "" || keys.IsShard(r.Queue) || keys.IsEntryID(r.Key) {
		return r, nil
	}
	ent, err := e.shards(ctx, r.Queue)
	if err != nil {
		return Ref{}, err
	}
	if ent.set != nil {
		r.Queue = ent.set.Names[ShardOf(shardKey(r.Key), ent.set.N)]
	}
	return r, nil
}

// DeclareShards declares queue a sharded queue of n shards in the
// registry (store.DeclareShards) and returns its physical queues; the
// engine knows it at once.
func (e *Engine) DeclareShards(ctx context.Context, queue string, n int) ([]string, error) {
	s, err := store.DeclareShards(ctx, e.rdb, queue, n)
	if err != nil {
		return nil, err
	}
	ent := &shardEntry{set: &s, read: time.Now()}
	e.shardsOf.m.Store(queue, ent)
	return append([]string(nil), s.Names...), nil
}

// Queue is the physical queue the i-th task of p goes to: the queue its
// options named, or, for a sharded queue, the shard PrepareItems placed
// it on (by its key). A caller that records the task's id elsewhere (a
// group's members, a join's continuation spec) takes the queue from here.
func (p Prepared) Queue(i int) string { return p.ps[i].queue }
