package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
)

// RateCall is one call of the rate limiter's script (ratelimit.lua) on one
// bucket; its header says what each part means.
type RateCall struct {
	Bucket string   // the bucket's key
	Wake   string   // its turn schedule's key
	Marker string   // the call's op marker
	Cut    []string // op markers of earlier calls whose replies were read, cut to GraceMs

	Interval string // emission interval in µs (per / rate), formatted
	Burst    int
	N        int
	Mode     string // "allow", "reserve", "refund" or "take"
	Turn     int64  // the caller's turn in µs ("take"; 0: none)
	MarkerMs int64  // how long the op marker lives
	GraceMs  int64  // how long the cut markers live on
}

// RateReply is the answer of a RateCall.
type RateReply struct {
	Taken  bool
	WaitUs int64 // refused: until n would fit, or the turn; reserve: until it is due
	Left   int   // events that still fit now
	Turn   int64 // the turn given, in µs ("take" refused; else 0)
	Marked bool  // the call left its op marker (it wrote)
}

func (c *RateCall) keys() []string {
	ks := make([]string, 3, 3+len(c.Cut))
	ks[0], ks[1], ks[2] = c.Bucket, c.Wake, c.Marker
	return append(ks, c.Cut...)
}

func (c *RateCall) args() []any {
	return []any{c.Interval, c.Burst, c.N, c.Mode, c.Turn, c.MarkerMs, len(c.Cut), c.GraceMs}
}

func rateReply(v []int64, err error) (RateReply, error) {
	if err != nil {
		return RateReply{}, err
	}
	if len(v) != 5 {
		return RateReply{}, fmt.Errorf("unexpected reply %v", v)
	}
	return RateReply{Taken: v[0] == 1, WaitUs: v[1], Left: int(v[2]), Turn: v[3], Marked: v[4] == 1}, nil
}

// RateLimit runs one call (EVALSHA, falling back to EVAL).
func RateLimit(ctx context.Context, rdb redis.Scripter, c *RateCall) (RateReply, error) {
	return rateReply(script.RateLimit.Run(ctx, rdb, c.keys(), c.args()...).Int64Slice())
}

// RateLimitPipelined runs calls in one pipeline and returns each one's
// answer. The calls that met NOSCRIPT (on a cluster, a node that lost its
// scripts fails only its own) are sent once more after loading the script;
// the others ran, and are not sent again.
func RateLimitPipelined(ctx context.Context, rdb redis.UniversalClient, calls []*RateCall) ([]RateReply, []error) {
	replies, errs := make([]RateReply, len(calls)), make([]error, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	for try := 0; len(todo) > 0; try++ {
		cmds := make([]*redis.Cmd, len(todo))
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range todo {
				cmds[j] = script.RateLimit.EvalSha(ctx, p, calls[i].keys(), calls[i].args()...)
			}
			return nil
		})
		var again []int
		for j, i := range todo {
			replies[i], errs[i] = rateReply(cmds[j].Int64Slice())
			if errs[i] != nil && try == 0 && strings.HasPrefix(errs[i].Error(), "NOSCRIPT") {
				again = append(again, i)
			}
		}
		if len(again) > 0 {
			if err := script.RateLimit.Load(ctx, rdb).Err(); err != nil {
				break // their NOSCRIPT errors stand
			}
		}
		todo = again
	}
	return replies, errs
}
