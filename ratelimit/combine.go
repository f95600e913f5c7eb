package ratelimit

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
)

// call is one script call of a Limiter, waiting to be sent.
type call struct {
	keys []string
	args []any

	res  []int64
	err  error
	done chan struct{} // closed when answered
	lead chan struct{} // closed when this call must send the queued ones
}

// combiner lets concurrent calls share round trips: a call arriving while
// maxLeaders batches are in flight waits in a queue, and the next leader
// sends the whole queue in one pipeline. A lone caller sends at once, so
// sequential calls pay no extra latency.
type combiner struct {
	mu      sync.Mutex
	pending []*call
	leaders int
}

const maxLeaders = 4

func (l *Limiter) do(ctx context.Context, c *call) ([]int64, error) {
	cb := &l.comb
	cb.mu.Lock()
	if cb.leaders < maxLeaders {
		cb.leaders++
		batch := append(cb.pending, c)
		cb.pending = nil
		cb.mu.Unlock()
		l.lead(ctx, batch)
		return c.res, c.err
	}
	cb.pending = append(cb.pending, c)
	cb.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-c.lead:
	case <-ctx.Done():
		if cb.withdraw(c) {
			return nil, ctx.Err() // never sent: nothing was taken
		}
		select {
		case <-c.lead:
			// Handed the lead just now: lead all the same, or the queue
			// behind would stall.
		default:
			<-c.done // being sent: its answer decides
			return c.res, c.err
		}
	}
	cb.mu.Lock()
	batch := append([]*call{c}, cb.pending...)
	cb.pending = nil
	cb.mu.Unlock()
	l.lead(ctx, batch)
	return c.res, c.err
}

// lead sends batch, answers its calls and passes the lead on.
func (l *Limiter) lead(ctx context.Context, batch []*call) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if len(batch) == 1 {
		c := batch[0]
		c.res, c.err = script.RateLimit.Run(sctx, l.rdb, c.keys, c.args...).Int64Slice()
	} else {
		// Resend only the calls Redis did not run (a node that lost its
		// scripts, on a cluster, fails only its own); the others ran.
		todo := batch
		for try := 0; len(todo) > 0; try++ {
			cmds := make([]*redis.Cmd, len(todo))
			_, _ = l.rdb.Pipelined(sctx, func(p redis.Pipeliner) error {
				for i, c := range todo {
					cmds[i] = script.RateLimit.EvalSha(sctx, p, c.keys, c.args...)
				}
				return nil
			})
			var again []*call
			for i, c := range todo {
				c.res, c.err = cmds[i].Int64Slice()
				if c.err != nil && try == 0 && strings.HasPrefix(c.err.Error(), "NOSCRIPT") {
					again = append(again, c)
				}
			}
			if len(again) > 0 {
				if err := script.RateLimit.Load(sctx, l.rdb).Err(); err != nil {
					break // their NOSCRIPT errors stand
				}
			}
			todo = again
		}
	}
	for _, c := range batch {
		close(c.done)
	}
	cb := &l.comb
	cb.mu.Lock()
	if len(cb.pending) > 0 {
		next := cb.pending[0]
		cb.pending = append(cb.pending[:0:0], cb.pending[1:]...)
		close(next.lead)
	} else {
		cb.leaders--
	}
	cb.mu.Unlock()
}

func (cb *combiner) withdraw(c *call) bool {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	for i, x := range cb.pending {
		if x == c {
			cb.pending = append(cb.pending[:i], cb.pending[i+1:]...)
			return true
		}
	}
	return false
}
