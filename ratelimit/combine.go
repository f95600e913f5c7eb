package ratelimit

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/combine"
	"github.com/taskfleet/async/internal/store"
)

// combiner lets concurrent calls of a Limiter share round trips (see
// internal/combine): a call arriving while maxLeaders batches are in flight
// waits in a queue, and the next leader sends the whole queue in one
// pipeline. A lone caller sends at once, so sequential calls pay no extra
// latency. A call whose ctx ends while it waits is never sent (nothing is
// taken); once it is being sent, its answer decides, so that what it took
// is reported.
type combiner = combine.Combiner[store.RateCall, store.RateReply]

const maxLeaders = 4

func (l *Limiter) newCombiner() *combiner {
	return combine.New(combine.Config{MaxLeaders: maxLeaders, Timeout: 10 * time.Second}, l.send)
}

// send runs a batch of calls: one alone, or several in one pipeline.
func (l *Limiter) send(ctx context.Context, batch []*combine.Call[store.RateCall, store.RateReply]) error {
	if len(batch) == 1 {
		c := batch[0]
		c.Res, c.Err = store.RateLimit(ctx, l.rdb, &c.Req)
		return nil
	}
	calls := make([]*store.RateCall, len(batch))
	for i, c := range batch {
		calls[i] = &c.Req
	}
	replies, errs := store.RateLimitPipelined(ctx, l.rdb, calls)
	for i, c := range batch {
		c.Res, c.Err = replies[i], errs[i]
	}
	return nil
}
