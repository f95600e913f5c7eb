package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// GroupIndexEntry is one id of a queue's index of groups with its score
// (the group's creation, Redis time in ms).
type GroupIndexEntry struct {
	Home  string // the queue's name
	ID    string // the group's own id
	Score int64
}

// GroupIndexAfter reads, for each queue of qs in one pipeline, up to limit
// entries of its index of groups that come after the entry at (in the
// order newest first, then by home queue and id, both descending): at nil
// means from the newest. The entries that share at's score are read whole
// (groups created in the same millisecond), the others limit at most.
func GroupIndexAfter(ctx context.Context, rdb redis.Cmdable, qs []keys.Queue, at *GroupIndexEntry, limit int) ([][]GroupIndexEntry, error) {
	older := make([]*redis.ZSliceCmd, len(qs))
	ties := make([]*redis.ZSliceCmd, len(qs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j, q := range qs {
			maxScore := "+inf"
			if at != nil {
				maxScore = "(" + strconv.FormatInt(at.Score, 10)
				if q.Name <= at.Home {
					s := strconv.FormatInt(at.Score, 10)
					ties[j] = p.ZRevRangeByScoreWithScores(ctx, q.Groups(), &redis.ZRangeBy{Max: s, Min: s})
				}
			}
			older[j] = p.ZRevRangeByScoreWithScores(ctx, q.Groups(), &redis.ZRangeBy{Max: maxScore, Min: "-inf", Count: int64(limit)})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the indexes of groups: %w", err)
	}
	out := make([][]GroupIndexEntry, len(qs))
	for j, q := range qs {
		add := func(zs []redis.Z) {
			for _, z := range zs {
				id, _ := z.Member.(string)
				if math.IsInf(z.Score, 0) || math.IsNaN(z.Score) {
					continue
				}
				e := GroupIndexEntry{Home: q.Name, ID: id, Score: int64(z.Score)}
				if at != nil && e.Score == at.Score && q.Name == at.Home && id >= at.ID {
					continue
				}
				out[j] = append(out[j], e)
			}
		}
		if ties[j] != nil {
			add(ties[j].Val())
		}
		add(older[j].Val())
	}
	return out, nil
}

// ReadGroupSummaries reads the groups of entries (any home queues), in one
// pipeline: per group its hash, the size of its open set and of its held
// set. A group whose hash is gone (expired) has an empty State.
func ReadGroupSummaries(ctx context.Context, rdb redis.Cmdable, entries []GroupIndexEntry) ([]GroupSummary, error) {
	type reads struct {
		h          *redis.SliceCmd
		open, held *redis.IntCmd
		sentinel   *redis.BoolCmd
	}
	rs := make([]reads, len(entries))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			q := keys.ForQueue(e.Home)
			rs[i] = reads{
				h:        p.HMGet(ctx, q.Group(e.ID), "st", "n", "ok", "bad", "at", "join"),
				open:     p.SCard(ctx, q.GroupOpen(e.ID)),
				held:     p.ZCard(ctx, q.GroupHeld(e.ID)),
				sentinel: p.SIsMember(ctx, q.GroupOpen(e.ID), OpenMember),
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the groups: %w", err)
	}
	out := make([]GroupSummary, len(entries))
	for i, e := range entries {
		v := rs[i].h.Val()
		str := func(j int) string {
			if j >= len(v) {
				return ""
			}
			s, _ := v[j].(string)
			return s
		}
		num := func(j int) int64 { n, _ := strconv.ParseInt(str(j), 10, 64); return max(n, 0) }
		out[i] = GroupSummary{Ref: GroupRef{Home: keys.ForQueue(e.Home), ID: e.ID}}
		if str(0) == "" {
			continue
		}
		open := rs[i].open.Val()
		if rs[i].sentinel.Val() {
			open--
		}
		out[i] = GroupSummary{Ref: out[i].Ref, State: str(0), Members: num(1), Succeeded: num(2), Failed: num(3),
			Open: max(open, 0), Held: rs[i].held.Val(), CreatedMs: num(4), Join: str(5)}
	}
	return out, nil
}
