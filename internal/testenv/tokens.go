package testenv

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
)

// Take is one rate-limit token taken, or given back, through a client
// watched by RecordTokens. Redis ran the call at some time between Early and
// Late, Redis' clock in microseconds.
type Take struct {
	Bucket string
	N      int
	Refund bool // a refund of N taken earlier, not a take
	Early  int64
	Late   int64
	Err    error // set when a clock reading failed: the time is unknown
}

// TokenLog is the list of tokens taken through a client, in Redis time; see
// RecordTokens.
type TokenLog struct {
	mu    sync.Mutex
	takes []Take
}

// Takes returns the tokens taken (and refunds) so far, in the order their
// calls were sent.
func (l *TokenLog) Takes() []Take {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Take(nil), l.takes...)
}

// Drain returns the tokens taken (and refunds) since the last Drain, in the
// order their calls were sent, and forgets them.
func (l *TokenLog) Drain() []Take {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.takes
	l.takes = nil
	return out
}

// RecordTokens watches every ratelimit.lua call that rdb sends and logs the
// tokens it took and gave back, each with the time Redis took it.
//
// A handler's start, read on the local clock, is not the time its token was
// taken: a reply, a scheduling delay and a clock offset lie between them, and
// a busy machine stretches the first two at will. So the log reads Redis'
// clock right before and right after each call instead, in the same pipeline
// and on the bucket's own node (a one-line script on the bucket's key), and
// the token was taken between the two readings. Tests that assert a rate
// compare these times, by the margin the limiter promises.
func RecordTokens(rdb redis.UniversalClient) *TokenLog {
	l := &TokenLog{}
	rdb.AddHook(tokenHook{l: l, rdb: rdb})
	return l
}

// redisNow returns Redis' clock; run with the bucket as its key, so that on a
// cluster it runs on the bucket's node.
const redisNow = "return redis.call('TIME')"

type tokenHook struct {
	l   *TokenLog
	rdb redis.UniversalClient
}

func (tokenHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook sends a lone rate-limit call as a pipeline of one, which
// ProcessPipelineHook brackets.
func (h tokenHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if _, ok := rateCall(cmd); !ok {
			return next(ctx, cmd)
		}
		_, _ = h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Process(ctx, cmd) })
		return cmd.Err()
	}
}

func (h tokenHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && strings.EqualFold(fmt.Sprint(cmds[0].Args()[0]), "multi") {
			return next(ctx, cmds)
		}
		type bracket struct {
			call          rate
			cmd           redis.Cmder
			before, after *redis.Cmd
		}
		var bs []bracket
		out := make([]redis.Cmder, 0, len(cmds))
		for _, c := range cmds {
			rc, ok := rateCall(c)
			if !ok {
				out = append(out, c)
				continue
			}
			b := bracket{call: rc, cmd: c,
				before: redis.NewCmd(ctx, "eval", redisNow, 1, rc.bucket),
				after:  redis.NewCmd(ctx, "eval", redisNow, 1, rc.bucket)}
			bs = append(bs, b)
			out = append(out, b.before, c, b.after)
		}
		if len(bs) == 0 {
			return next(ctx, cmds)
		}
		_ = next(ctx, out)
		for _, b := range bs {
			res, err := b.cmd.(*redis.Cmd).Int64Slice()
			if err != nil || len(res) == 0 || (!b.call.refund && res[0] != 1) {
				continue // refused or failed: nothing taken
			}
			tk := Take{Bucket: b.call.bucket, N: b.call.n, Refund: b.call.refund}
			var err1, err2 error
			tk.Early, err1 = redisTime(b.before)
			tk.Late, err2 = redisTime(b.after)
			if err1 != nil || err2 != nil {
				tk.Err = fmt.Errorf("Redis' clock unread around the call: %w", errors.Join(err1, err2))
			}
			h.l.mu.Lock()
			h.l.takes = append(h.l.takes, tk)
			h.l.mu.Unlock()
		}
		for _, c := range cmds {
			if err := c.Err(); err != nil {
				return err
			}
		}
		return nil
	}
}

// rate is a ratelimit.lua call that takes or gives back tokens.
type rate struct {
	bucket string
	n      int
	refund bool
}

var rateLimitHash = script.RateLimit.Hash()

// rateCall reports whether cmd runs ratelimit.lua in a mode that takes
// tokens at once ('allow', 'take') or gives them back ('refund').
// ('reserve' takes them in the future and is not logged.)
func rateCall(cmd redis.Cmder) (rate, bool) {
	args := cmd.Args()
	if len(args) < 3 {
		return rate{}, false
	}
	name := strings.ToLower(fmt.Sprint(args[0]))
	switch name {
	case "evalsha", "evalsha_ro":
		if fmt.Sprint(args[1]) != rateLimitHash {
			return rate{}, false
		}
	case "eval", "eval_ro":
		sum := sha1.Sum([]byte(fmt.Sprint(args[1])))
		if hex.EncodeToString(sum[:]) != rateLimitHash {
			return rate{}, false
		}
	default:
		return rate{}, false
	}
	nk, err := strconv.Atoi(fmt.Sprint(args[2]))
	if err != nil || nk < 1 || len(args) < 3+nk+4 {
		return rate{}, false
	}
	argv := args[3+nk:]
	n, _ := strconv.Atoi(fmt.Sprint(argv[2]))
	switch fmt.Sprint(argv[3]) {
	case "allow", "take":
		return rate{bucket: fmt.Sprint(args[3]), n: n}, true
	case "refund":
		return rate{bucket: fmt.Sprint(args[3]), n: n, refund: true}, true
	}
	return rate{}, false
}

// redisTime parses a TIME reply into microseconds.
func redisTime(c *redis.Cmd) (int64, error) {
	v, err := c.StringSlice()
	if err != nil {
		return 0, err
	}
	if len(v) != 2 {
		return 0, fmt.Errorf("TIME answered %q", v)
	}
	s, err1 := strconv.ParseInt(v[0], 10, 64)
	us, err2 := strconv.ParseInt(v[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("TIME answered %q", v)
	}
	return s*1_000_000 + us, nil
}
