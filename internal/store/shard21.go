package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
)

// Issue 21: the registry of sharded queues (keys.ShardRegistry).

// ShardSet is a sharded queue as the registry holds it: its physical queues
// (keys.ShardName), shard i at Names[i].
type ShardSet struct {
	Queue string `msgpack:"-"` // the registry's field, not in the value
	N     int    `msgpack:"n"`
	// Names are the physical queue names, one per shard, in index order.
	Names []string `msgpack:"names"`
	// Epoch counts the changes of the set: 1 when it was declared. A
	// change of N (growing a live queue) makes a new epoch.
	Epoch int64 `msgpack:"epoch"`
	// CreatedMs is when the queue was declared, Unix ms in Redis time.
	CreatedMs int64 `msgpack:"at"`
}

// ErrBadShardSet is wrapped by the errors of a registry entry that is not
// what this library writes.
var ErrBadShardSet = errors.New("malformed shard registry entry")

// ErrShardCount is wrapped by the error of DeclareShards when the queue is
// declared already with another number of shards.
var ErrShardCount = errors.New("the queue has another number of shards")

// decodeShardSet decodes queue's registry entry through the codec gate and
// checks it: N in 1..keys.MaxShards, one name per shard, each the name of
// that shard of queue, an epoch and a creation time.
func decodeShardSet(queue string, b []byte) (ShardSet, error) {
	var s ShardSet
	if err := codec.Unmarshal(b, &s); err != nil {
		return ShardSet{}, fmt.Errorf("shard registry entry of queue %q (%d bytes): %w: %w", queue, len(b), ErrBadShardSet, err)
	}
	s.Queue = queue
	bad := func(format string, a ...any) (ShardSet, error) {
		return ShardSet{}, fmt.Errorf("shard registry entry of queue %q: %s: %w", queue, fmt.Sprintf(format, a...), ErrBadShardSet)
	}
	if s.N < 1 || s.N > keys.MaxShards {
		return bad("n is %d, want 1 to %d", s.N, keys.MaxShards)
	}
	if len(s.Names) != s.N {
		return bad("%d names for n = %d", len(s.Names), s.N)
	}
	for i, name := range s.Names {
		if q, j, ok := keys.ParseShard(name); !ok || q != queue || j != i {
			return bad("name %d is %.64q, want %s~%d.<salt>", i, name, queue, i)
		}
	}
	if s.Epoch < 1 {
		return bad("epoch is %d, want 1 or more", s.Epoch)
	}
	if s.CreatedMs <= 0 {
		return bad("created at %d, want a Unix ms time", s.CreatedMs)
	}
	return s, nil
}

// Shards reads queue's entry in the registry; ok is false when the queue is
// not sharded.
func Shards(ctx context.Context, rdb redis.Cmdable, queue string) (ShardSet, bool, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return ShardSet{}, false, err
	}
	b, err := rdb.HGet(ctx, keys.ShardRegistry, queue).Bytes()
	if errors.Is(err, redis.Nil) {
		return ShardSet{}, false, nil
	}
	if err != nil {
		return ShardSet{}, false, fmt.Errorf("read the shards of queue %q: %w", queue, err)
	}
	s, err := decodeShardSet(queue, b)
	if err != nil {
		return ShardSet{}, false, err
	}
	return s, true, nil
}

// SlotMasters returns the slot ranges of each master of rdb's cluster
// (CLUSTER SLOTS), masters in no particular order; a client of one Redis
// (not a *redis.ClusterClient) has every slot on one master.
func SlotMasters(ctx context.Context, rdb redis.Cmdable) ([][]keys.SlotRange, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return [][]keys.SlotRange{{{Start: 0, End: keys.Slots - 1}}}, nil
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("read the cluster's slots: %w", err)
	}
	byMaster := map[string][]keys.SlotRange{}
	var order []string
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			return nil, fmt.Errorf("read the cluster's slots: slots %d-%d have no node", s.Start, s.End)
		}
		m := s.Nodes[0].ID // the master comes first, its replicas after
		if m == "" {
			m = s.Nodes[0].Addr
		}
		if _, seen := byMaster[m]; !seen {
			order = append(order, m)
		}
		byMaster[m] = append(byMaster[m], keys.SlotRange{Start: s.Start, End: s.End})
	}
	out := make([][]keys.SlotRange, 0, len(order))
	for _, m := range order {
		out = append(out, byMaster[m])
	}
	return out, nil
}

// DeclareShards makes queue a sharded queue of n shards, placed over the
// masters of rdb (keys.PlaceShards), and returns its set. A queue declared
// already with n shards keeps the set it has (placed when it was
// declared); one declared with another number is refused with
// ErrShardCount (growing a queue is an operation of its own).
//
// The one write is HSETNX: a resent one, or a declaration that lost a race
// to another process, finds the entry there and answers with it. The
// physical queues are made when they are first used, like any queue.
func DeclareShards(ctx context.Context, rdb redis.Cmdable, queue string, n int) (ShardSet, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return ShardSet{}, err
	}
	if n < 1 || n > keys.MaxShards {
		return ShardSet{}, fmt.Errorf("declare queue %q with %d shards: a sharded queue has 1 to %d", queue, n, keys.MaxShards)
	}
	have := func(s ShardSet) (ShardSet, error) {
		if s.N != n {
			return ShardSet{}, fmt.Errorf("declare queue %q with %d shards: it has %d (epoch %d): %w", queue, n, s.N, s.Epoch, ErrShardCount)
		}
		return s, nil
	}
	if s, ok, err := Shards(ctx, rdb, queue); err != nil {
		return ShardSet{}, err
	} else if ok {
		return have(s)
	}
	masters, err := SlotMasters(ctx, rdb)
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	names, err := keys.PlaceShards(queue, n, masters)
	if err != nil {
		return ShardSet{}, err
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	s := ShardSet{Queue: queue, N: n, Names: names, Epoch: 1, CreatedMs: now.UnixMilli()}
	b, err := codec.Marshal(&s)
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	set, err := rdb.HSetNX(ctx, keys.ShardRegistry, queue, b).Result()
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	if set {
		return s, nil
	}
	// There already: this call's own first run (its reply lost) or
	// another declaration.
	got, ok, err := Shards(ctx, rdb, queue)
	if err != nil {
		return ShardSet{}, err
	}
	if !ok {
		return ShardSet{}, fmt.Errorf("declare queue %q: HSETNX found an entry that is gone now (deleted meanwhile)", queue)
	}
	return have(got)
}

// ShardMaster returns, for each name, the index in masters (as SlotMasters
// gives them) of the master that serves its queue's slot, or -1.
func ShardMaster(names []string, masters [][]keys.SlotRange) []int {
	out := make([]int, len(names))
	for i, name := range names {
		s := keys.QueueSlot(name)
		out[i] = slices.IndexFunc(masters, func(rs []keys.SlotRange) bool {
			return slices.ContainsFunc(rs, func(r keys.SlotRange) bool { return s >= r.Start && s <= r.End })
		})
	}
	return out
}
