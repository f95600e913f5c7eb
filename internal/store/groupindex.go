package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// GroupIndexCap is how many groups a queue's index of groups keeps: the
// newest (groupnew.lua drops the oldest beyond it).
const GroupIndexCap = 100000

// GroupSummary is a group and its progress, for the inspector.
type GroupSummary struct {
	Ref       GroupRef
	State     string // running, succeeded, failed, cancelled
	Members   int64
	Succeeded int64
	Failed    int64 // members that did not succeed (failed, dead, cancelled)
	Open      int64 // members not ended yet
	Held      int64 // InvokeAll members not released yet
	CreatedMs int64
	Join      string
}

// ListGroups reads the groups homed in q, newest first: the index, then
// per group its hash, the size of its open set and of its held set, in one
// pipeline. It returns, apart, the ids of the indexed groups whose hash is
// gone (expired): PruneGroups drops them.
func ListGroups(ctx context.Context, rdb redis.Cmdable, q keys.Queue) ([]GroupSummary, []string, error) {
	ids, err := rdb.ZRevRange(ctx, q.Groups(), 0, -1).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("list the groups of queue %q: %w", q.Name, err)
	}
	type reads struct {
		h          *redis.SliceCmd
		open, held *redis.IntCmd
		sentinel   *redis.BoolCmd
	}
	rs := make([]reads, len(ids))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			rs[i] = reads{
				h:        p.HMGet(ctx, q.Group(id), "st", "n", "ok", "bad", "at", "join"),
				open:     p.SCard(ctx, q.GroupOpen(id)),
				held:     p.ZCard(ctx, q.GroupHeld(id)),
				sentinel: p.SIsMember(ctx, q.GroupOpen(id), OpenMember),
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read the groups of queue %q: %w", q.Name, err)
	}
	var out []GroupSummary
	var gone []string
	for i, id := range ids {
		v := rs[i].h.Val()
		str := func(j int) string {
			if j >= len(v) {
				return ""
			}
			s, _ := v[j].(string)
			return s
		}
		num := func(j int) int64 { n, _ := strconv.ParseInt(str(j), 10, 64); return max(n, 0) }
		if str(0) == "" {
			gone = append(gone, id)
			continue
		}
		open := rs[i].open.Val()
		if rs[i].sentinel.Val() {
			open--
		}
		out = append(out, GroupSummary{Ref: GroupRef{Home: q, ID: id}, State: str(0), Members: num(1), Succeeded: num(2), Failed: num(3),
			Open: max(open, 0), Held: rs[i].held.Val(), CreatedMs: num(4), Join: str(5)})
	}
	return out, gone, nil
}

// PruneGroups drops ids from q's index of groups, each only while its
// group hash is gone (groupprune.lua). Running it twice leaves the same
// state.
func PruneGroups(ctx context.Context, rdb redis.Scripter, q keys.Queue, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ks := make([]string, 0, 1+len(ids))
	ks = append(ks, q.Groups())
	args := make([]any, len(ids))
	for i, id := range ids {
		ks = append(ks, q.Group(id))
		args[i] = id
	}
	if err := script.GroupPrune.Run(ctx, rdb, ks, args...).Err(); err != nil {
		return fmt.Errorf("prune the groups of queue %q: %w", q.Name, err)
	}
	return nil
}

// HeldMember is an InvokeAll member held in its group (not released yet).
type HeldMember struct {
	Group GroupRef
	ID    string // the member's task id
}

// HeldMembers reads up to count of the held members of the groups homed in
// q (its index of groups, newest first; each group's held set in
// submission order), skipping the first offset. more is false once the
// last was read.
func HeldMembers(ctx context.Context, rdb redis.Cmdable, q keys.Queue, offset, count int) (out []HeldMember, more bool, err error) {
	ids, err := rdb.ZRevRange(ctx, q.Groups(), 0, -1).Result()
	if err != nil {
		return nil, false, fmt.Errorf("list the groups of queue %q: %w", q.Name, err)
	}
	sizes := make([]*redis.IntCmd, len(ids))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			sizes[i] = p.ZCard(ctx, q.GroupHeld(id))
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read the held members of queue %q: %w", q.Name, err)
	}
	for i, id := range ids {
		n := int(sizes[i].Val())
		if offset >= n {
			offset -= n
			continue
		}
		if len(out) >= count {
			return out, true, nil
		}
		start := offset
		ms, err := rdb.ZRange(ctx, q.GroupHeld(id), int64(start), int64(start+count-len(out)-1)).Result()
		if err != nil {
			return nil, false, fmt.Errorf("read the held members of group %s: %w", GroupRef{Home: q, ID: id}, err)
		}
		offset = 0
		for _, m := range ms {
			out = append(out, HeldMember{Group: GroupRef{Home: q, ID: id}, ID: m})
		}
		if len(out) >= count && (start+len(ms) < n || i < len(ids)-1) {
			return out, true, nil
		}
	}
	return out, false, nil
}
