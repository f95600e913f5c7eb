package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// Issue 21: read-only views of sharded queues for the inspector, the
// dashboard, the CLI, the HTTP API and the metrics (one queue with a
// per-shard breakdown).

// ShardSets reads the whole shard registry (one HGETALL): the sharded
// queues by name. An entry that is not what this library writes is left
// out of sets, and its error (matching ErrBadShardSet) is in bad under the
// queue's name, so that one broken entry hides no other.
func ShardSets(ctx context.Context, rdb redis.Cmdable) (sets map[string]ShardSet, bad map[string]error, err error) {
	all, err := rdb.HGetAll(ctx, keys.ShardRegistry).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read the shard registry: %w", err)
	}
	sets = make(map[string]ShardSet, len(all))
	for q, v := range all {
		if err := keys.ValidateName("queue", q); err != nil {
			continue // not a field this library writes; no queue has that name
		}
		s, err := decodeShardSet(q, []byte(v))
		if err != nil {
			if bad == nil {
				bad = map[string]error{}
			}
			bad[q] = err
			continue
		}
		sets[q] = s
	}
	return sets, bad, nil
}

// QueueMasters returns, for each physical queue name, the address of the
// master that serves its slot (CLUSTER SLOTS, one command), "" when no
// master serves it; nil when rdb is not a *redis.ClusterClient (one Redis:
// there is one master, the one rdb talks to).
func QueueMasters(ctx context.Context, rdb redis.Cmdable, names []string) ([]string, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return nil, nil
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("read the cluster's slots: %w", err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		s := keys.QueueSlot(n)
		for _, r := range slots {
			if s >= r.Start && s <= r.End && len(r.Nodes) > 0 {
				out[i] = r.Nodes[0].Addr // the master comes first
				break
			}
		}
	}
	return out, nil
}

// QueueDeadEntry is one dead entry of one of several queues.
type QueueDeadEntry struct {
	Queue string // the physical queue whose dead-letter store holds it
	DeadEntry
}

// DeadMerged lists up to limit entries of the dead-letter stores of the
// queues qs taken together, newest first, skipping the first offset. Ties
// of the time of death go in the order of qs, then as ZREVRANGE orders
// members of one score. It reads the newest offset+limit members of each
// store (one ZREVRANGE each, in one pipeline), merges them, then the
// records of the page's entries (one HMGET each, in one pipeline):
// O(len(qs)·(offset+limit)), for pages near the start.
func DeadMerged(ctx context.Context, rdb redis.UniversalClient, qs []keys.Queue, offset, limit int) ([]QueueDeadEntry, error) {
	if offset < 0 || limit < 1 {
		return nil, fmt.Errorf("dead tasks: offset %d must be ≥ 0 and limit %d ≥ 1", offset, limit)
	}
	zcmds := make([]*redis.ZSliceCmd, len(qs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range qs {
			zcmds[i] = p.ZRevRangeWithScores(ctx, q.Dead(), 0, int64(offset+limit-1))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dead tasks: %w", err)
	}
	type hit struct {
		qi, rank int
		key      string
		ms       int64
	}
	var hits []hit
	for i, c := range zcmds {
		for r, z := range c.Val() {
			hits = append(hits, hit{qi: i, rank: r, key: fmt.Sprint(z.Member), ms: int64(z.Score)})
		}
	}
	slices.SortFunc(hits, func(a, b hit) int {
		if c := cmp.Compare(b.ms, a.ms); c != 0 {
			return c
		}
		if c := cmp.Compare(a.qi, b.qi); c != 0 {
			return c
		}
		return cmp.Compare(a.rank, b.rank)
	})
	if offset >= len(hits) {
		return nil, nil
	}
	hits = hits[offset:min(offset+limit, len(hits))]
	hcmds := make([]*redis.SliceCmd, len(hits))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range hits {
			hcmds[i] = p.HMGet(ctx, qs[h.qi].Task(h.key), "m", "err", "a")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dead tasks: %w", err)
	}
	out := make([]QueueDeadEntry, 0, len(hits))
	for i, h := range hits {
		v := hcmds[i].Val()
		d := QueueDeadEntry{Queue: qs[h.qi].Name, DeadEntry: DeadEntry{Key: h.key, DiedMs: h.ms}}
		if len(v) == 3 {
			raw, _ := v[0].(string)
			d.Envelope = []byte(raw)
			d.Error, _ = v[1].(string)
			if a, ok := v[2].(string); ok {
				d.Attempt, _ = strconv.Atoi(a)
			}
		}
		out = append(out, d)
	}
	return out, nil
}
