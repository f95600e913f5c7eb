package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
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
	// Prev are the queue's earlier layouts that tasks may still be in,
	// oldest first: the plain queue (N 0) of a queue that was in use when
	// it was declared, and the shard counts it had before it grew.
	Prev []ShardLayout `msgpack:"prev,omitempty"`
	// ActiveMs is when the layout of N shards takes effect for the tasks
	// placed by a key (Unix ms in Redis time): until then they keep to the
	// newest of Prev, so that every producer reads the change before any
	// places a key by it (see Place).
	ActiveMs int64 `msgpack:"act,omitempty"`
}

// ShardLayout is an earlier layout of a sharded queue: its first N shards
// (Names[:N]), or the plain queue when N is 0.
type ShardLayout struct {
	N int `msgpack:"n"`
	// UntilMs is when producers stop looking for a key's earlier tasks in
	// this layout (Unix ms in Redis time): by then its keys' tasks have
	// ended and their records expired (ShardChange.Settle).
	UntilMs int64 `msgpack:"until"`
}

// ShardChange is how a change of a queue's layout (declaring a queue in
// use, growing one) takes effect.
type ShardChange struct {
	// Grace is how long after the change a task with a partition key or an
	// id keeps to the old layout: long enough for every producer to read
	// the change (engine.ShardRefresh) and for calls in flight to land (a
	// command go-redis resends arrives seconds later). 0: DefaultShardGrace.
	Grace time.Duration
	// Settle is how long producers look for a key's earlier tasks in the
	// old layout, to put a task behind them (its partition key's order) or
	// to find it there (its id's idempotency): at least the longest time a
	// task of the queue waits and its record is kept after it ends. 0:
	// DefaultShardSettle.
	Settle time.Duration
}

// The defaults of ShardChange.
const (
	DefaultShardGrace  = 30 * time.Second
	DefaultShardSettle = 24 * time.Hour
)

// ErrNotSharded is wrapped by the error of GrowShards for a queue that is
// not declared sharded.
var ErrNotSharded = errors.New("the queue is not a sharded queue (declare it first)")

// ErrShardChangePending is wrapped by the error of GrowShards when the
// queue's previous change has not taken effect yet.
var ErrShardChangePending = errors.New("the previous change of the queue's shards has not taken effect yet")

func (c ShardChange) ms() (grace, settle int64, err error) {
	g, st := c.Grace, c.Settle
	if g < 0 || st < 0 {
		return 0, 0, fmt.Errorf("ShardChange: Grace %v and Settle %v must not be negative", g, st)
	}
	if g == 0 {
		g = DefaultShardGrace
	}
	if st == 0 {
		st = DefaultShardSettle
	}
	if st < g {
		return 0, 0, fmt.Errorf("ShardChange: Settle %v is shorter than Grace %v", st, g)
	}
	return g.Milliseconds(), st.Milliseconds(), nil
}

// Physical is the queue of key in the layout of the first n shards (n 0:
// the plain queue).
func (s *ShardSet) Physical(n int, key string) string {
	if n == 0 {
		return s.Queue
	}
	return s.Names[keys.JumpShard(key, n)]
}

// Next is where key goes once the current layout is in effect, and when
// that is (ActiveMs): a task placed by Place before then whose key goes
// elsewhere after is written only if its key still has a task where
// Place put it, should it reach Redis after ActiveMs (NewTask.IfThereFromMs).
func (s *ShardSet) Next(key string) string { return s.Physical(s.N, key) }

// Place returns, at Redis time nowMs, the queue a task placed by key
// (its partition key, else its id) goes to, and the other queues where an
// earlier task of the key may still be, newest layout first (none once
// every earlier layout settled). Before ActiveMs the target is the newest
// earlier layout's queue.
func (s *ShardSet) Place(key string, nowMs int64) (string, []string) {
	cur, prev := s.N, s.Prev
	if nowMs < s.ActiveMs && len(prev) > 0 {
		cur, prev = prev[len(prev)-1].N, prev[:len(prev)-1]
	}
	target := s.Physical(cur, key)
	var others []string
	for i := len(prev) - 1; i >= 0; i-- {
		if prev[i].UntilMs <= nowMs {
			continue
		}
		if q := s.Physical(prev[i].N, key); q != target && !slices.Contains(others, q) {
			others = append(others, q)
		}
	}
	return target, others
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
	for i, l := range s.Prev {
		if l.N < 0 || l.N >= s.N || i > 0 && l.N <= s.Prev[i-1].N {
			return bad("earlier layout %d has %d shards; want fewer than %d, more than the one before", i, l.N, s.N)
		}
		if l.UntilMs <= 0 {
			return bad("earlier layout %d settles at %d, want a Unix ms time", i, l.UntilMs)
		}
	}
	if s.ActiveMs < 0 {
		return bad("takes effect at %d, want a Unix ms time or 0", s.ActiveMs)
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

// ShardsAt is Shards and the Redis time of the read (Unix ms), in one
// round trip.
func ShardsAt(ctx context.Context, rdb redis.Cmdable, queue string) (ShardSet, bool, int64, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return ShardSet{}, false, 0, err
	}
	var get *redis.StringCmd
	var now *redis.TimeCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.HGet(ctx, keys.ShardRegistry, queue)
		now = p.Time(ctx)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return ShardSet{}, false, 0, fmt.Errorf("read the shards of queue %q: %w", queue, err)
	}
	t, err := now.Result()
	if err != nil {
		return ShardSet{}, false, 0, fmt.Errorf("read the shards of queue %q: %w", queue, err)
	}
	b, err := get.Bytes()
	if errors.Is(err, redis.Nil) {
		return ShardSet{}, false, t.UnixMilli(), nil
	}
	if err != nil {
		return ShardSet{}, false, 0, fmt.Errorf("read the shards of queue %q: %w", queue, err)
	}
	s, err := decodeShardSet(queue, b)
	if err != nil {
		return ShardSet{}, false, 0, err
	}
	return s, true, t.UnixMilli(), nil
}

// DeclareShards makes queue a sharded queue of n shards, placed over the
// masters of rdb (keys.PlaceShards), and returns its set. A queue declared
// already with n shards keeps the set it has (placed when it was
// declared); one declared with another number is refused with
// ErrShardCount (GrowShards grows one).
//
// A queue whose plain queue holds tasks (its stream or its scheduled set
// exists) is in use: the plain queue becomes the set's earlier layout, so
// that the tasks placed by a key keep to it for ch.Grace and look for
// their key's earlier tasks there for ch.Settle (ShardSet.Place). A queue
// not in use takes the shards at once.
//
// The one write is HSETNX: a resent one, or a declaration that lost a race
// to another process, finds the entry there and answers with it. The
// physical queues are made when they are first used, like any queue.
func DeclareShards(ctx context.Context, rdb redis.Cmdable, queue string, n int, ch ShardChange) (ShardSet, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return ShardSet{}, err
	}
	if n < 1 || n > keys.MaxShards {
		return ShardSet{}, fmt.Errorf("declare queue %q with %d shards: a sharded queue has 1 to %d", queue, n, keys.MaxShards)
	}
	graceMs, settleMs, err := ch.ms()
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
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
	plain := keys.ForQueue(queue)
	inUse, err := rdb.Exists(ctx, plain.Stream(), plain.Scheduled()).Result()
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return ShardSet{}, fmt.Errorf("declare queue %q: %w", queue, err)
	}
	nowMs := now.UnixMilli()
	s := ShardSet{Queue: queue, N: n, Names: names, Epoch: 1, CreatedMs: nowMs}
	if inUse > 0 {
		s.Prev = []ShardLayout{{N: 0, UntilMs: nowMs + settleMs}}
		s.ActiveMs = nowMs + graceMs
	}
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

// GrowShards grows the sharded queue queue to n shards and returns its new
// set: shards 0..N-1 keep their names (and their tasks), the new ones are
// placed on the masters with the fewest of the queue's shards
// (keys.GrowShards). The old layout becomes the newest of Prev: tasks
// placed by a key keep to it for ch.Grace, and look there for their key's
// earlier tasks for ch.Settle (ShardSet.Place). A queue that has n shards
// already is left as it is (a repeated call, or a resend, changes
// nothing); fewer shards are refused (a queue does not shrink), and so is
// a change while the previous one has not taken effect
// (ErrShardChangePending).
//
// The write replaces the entry only if it is still the one read
// (shardcas.lua): a resend finds its own entry; a change by another
// process meanwhile makes this call read again.
func GrowShards(ctx context.Context, rdb redis.Cmdable, queue string, n int, ch ShardChange) (ShardSet, error) {
	if err := keys.ValidateName("queue", queue); err != nil {
		return ShardSet{}, err
	}
	graceMs, settleMs, err := ch.ms()
	if err != nil {
		return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
	}
	for range 5 {
		raw, err := rdb.HGet(ctx, keys.ShardRegistry, queue).Bytes()
		if errors.Is(err, redis.Nil) {
			return ShardSet{}, fmt.Errorf("grow queue %q to %d shards: %w", queue, n, ErrNotSharded)
		}
		if err != nil {
			return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
		}
		cur, err := decodeShardSet(queue, raw)
		if err != nil {
			return ShardSet{}, err
		}
		switch {
		case cur.N == n:
			return cur, nil
		case n < cur.N:
			return ShardSet{}, fmt.Errorf("grow queue %q to %d shards: it has %d, and a queue does not shrink: %w", queue, n, cur.N, ErrShardCount)
		case n > keys.MaxShards:
			return ShardSet{}, fmt.Errorf("grow queue %q to %d shards: a sharded queue has at most %d", queue, n, keys.MaxShards)
		}
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
		}
		nowMs := now.UnixMilli()
		if nowMs < cur.ActiveMs {
			return ShardSet{}, fmt.Errorf("grow queue %q to %d shards: its change to %d takes effect in %v: %w",
				queue, n, cur.N, time.Duration(cur.ActiveMs-nowMs)*time.Millisecond, ErrShardChangePending)
		}
		masters, err := SlotMasters(ctx, rdb)
		if err != nil {
			return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
		}
		add, err := keys.GrowShards(queue, cur.Names, n, masters)
		if err != nil {
			return ShardSet{}, err
		}
		next := ShardSet{Queue: queue, N: n, Names: append(slices.Clone(cur.Names), add...), Epoch: cur.Epoch + 1,
			CreatedMs: cur.CreatedMs, ActiveMs: nowMs + graceMs}
		for _, l := range cur.Prev {
			if l.UntilMs > nowMs {
				next.Prev = append(next.Prev, l)
			}
		}
		next.Prev = append(next.Prev, ShardLayout{N: cur.N, UntilMs: nowMs + settleMs})
		b, err := codec.Marshal(&next)
		if err != nil {
			return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
		}
		ok, err := script.ShardCAS.Run(ctx, rdb, []string{keys.ShardRegistry}, queue, raw, b).Int()
		if err != nil {
			return ShardSet{}, fmt.Errorf("grow queue %q: %w", queue, err)
		}
		if ok == 1 {
			return next, nil
		}
		// Changed by another process meanwhile: read it again.
	}
	return ShardSet{}, fmt.Errorf("grow queue %q to %d shards: its entry kept changing under this call", queue, n)
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

// Earlier is a task that a sharded queue's layout change may have parted
// from its key's earlier tasks: Queues are where they may be, in the order
// to look; ID is its id, Part its partition key (either may be "").
type Earlier struct {
	Queues   []string
	ID, Part string
}

// FindEarlier answers, for each of es, the index in its Queues of the
// first queue where its key has a task: a partition key's waiting or
// running tasks (its partition list), or the id's task record or result
// (a task with both is found by either: it went where its key's tasks
// were, and its id must stay one task);
// -1 when none has. One pipelined round trip (on a cluster, one per node
// in parallel).
func FindEarlier(ctx context.Context, rdb redis.Cmdable, es []Earlier) ([]int, error) {
	cmds := make([][]*redis.IntCmd, len(es))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range es {
			cmds[i] = make([]*redis.IntCmd, len(e.Queues))
			for j, name := range e.Queues {
				q := keys.ForQueue(name)
				var ks []string
				if e.Part != "" {
					ks = append(ks, q.Partition(e.Part))
				}
				if e.ID != "" {
					ks = append(ks, q.Task(e.ID), q.Result(e.ID))
				}
				cmds[i][j] = p.Exists(ctx, ks...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]int, len(es))
	for i := range es {
		out[i] = -1
		for j, c := range cmds[i] {
			if c.Val() > 0 {
				out[i] = j
				break
			}
		}
	}
	return out, nil
}
