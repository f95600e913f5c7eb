package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// lostScripts answers NOSCRIPT, without sending them, to the rate limiter
// calls of the first pipeline whose op markers it names (as a cluster node
// that lost its scripts does), and counts the tries of every marker.
type lostScripts struct {
	mu    sync.Mutex
	lost  map[string]bool
	tries map[string]int
	piped bool
}

func (*lostScripts) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*lostScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *lostScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		first := !h.piped
		h.piped = true
		var send []redis.Cmder
		for _, c := range cmds {
			a := c.Args()
			if c.Name() != "evalsha" || len(a) < 6 || a[1] != script.RateLimit.Hash() {
				send = append(send, c)
				continue
			}
			marker, _ := a[5].(string)
			h.tries[marker]++
			if first && h.lost[marker] {
				c.SetErr(errors.New("NOSCRIPT No matching script. Please use EVAL."))
				continue
			}
			send = append(send, c)
		}
		h.mu.Unlock()
		if len(send) == 0 {
			return nil
		}
		return next(ctx, send)
	}
}

func rateCall(bucket, op string) *store.RateCall {
	return &store.RateCall{Bucket: bucket, Wake: bucket + ":wake", Marker: bucket + ":op:" + op,
		Interval: "3600000000", Burst: 3, N: 1, Mode: "allow", MarkerMs: time.Minute.Milliseconds(), GraceMs: 2000}
}

// Pipelined calls that met NOSCRIPT are sent again after the script is
// loaded, and only they: each call takes its event once.
func TestRateLimitPipelinedResendsOnlyNoscript(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	ctx := context.Background()
	if err := script.RateLimit.Load(ctx, env.RDB).Err(); err != nil {
		t.Fatal(err)
	}
	bucket := "async:{rl:" + testenv.Queue(t) + "}"
	calls := []*store.RateCall{rateCall(bucket, "a"), rateCall(bucket, "b"), rateCall(bucket, "c")}
	h := &lostScripts{lost: map[string]bool{calls[1].Marker: true}, tries: map[string]int{}}
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(h)
	replies, errs := store.RateLimitPipelined(ctx, rdb, calls)
	for i, r := range replies {
		if errs[i] != nil || !r.Taken || !r.Marked {
			t.Fatalf("call %d: %+v, %v; want taken, marked", i, r, errs[i])
		}
	}
	if h.tries[calls[0].Marker] != 1 || h.tries[calls[1].Marker] != 2 || h.tries[calls[2].Marker] != 1 {
		t.Fatalf("tries %v: want the NOSCRIPT call sent twice, the others once", h.tries)
	}
	// Three taken of a burst of 3 (one an hour): the bucket is empty.
	r, err := store.RateLimit(ctx, env.RDB, rateCall(bucket, "d"))
	if err != nil || r.Taken || r.Left != 0 || r.WaitUs <= 0 {
		t.Fatalf("fourth call: %+v, %v; want refused, none left", r, err)
	}
}
