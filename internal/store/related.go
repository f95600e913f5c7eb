package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// Relations are the tasks one task names: the children its handler
// enqueued and the continuations registered on it. Read only.
type Relations struct {
	Kids       []string // child task ids, sorted; at most the n asked for
	KidsTotal  int64
	Conts      []string // continuation specs ("<queue>/<key>|<0 or 1>"), in registration order
	ContsTotal int64
}

// TaskRelations reads, in one pipeline, up to n of the children of the
// task key of q (SSCAN: one call, so on a large set a sample of about n)
// and its first n continuations, with the totals of both.
func TaskRelations(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string, n int) (Relations, error) {
	var kc, cc *redis.IntCmd
	var ks *redis.ScanCmd
	var cs *redis.StringSliceCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		kc = p.SCard(ctx, q.Kids(key))
		ks = p.SScan(ctx, q.Kids(key), 0, "", int64(n))
		cc = p.LLen(ctx, q.Conts(key))
		cs = p.LRange(ctx, q.Conts(key), 0, int64(n-1))
		return nil
	})
	if err != nil {
		return Relations{}, fmt.Errorf("read the children and continuations of %s: %w", keys.TaskID(q.Name, key), err)
	}
	r := Relations{KidsTotal: kc.Val(), ContsTotal: cc.Val(), Conts: cs.Val()}
	kids, _ := ks.Val()
	if len(kids) > n {
		kids = kids[:n]
	}
	slices.Sort(kids)
	r.Kids = kids
	return r, nil
}
