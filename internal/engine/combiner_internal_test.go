package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

type pingArgs struct{ N int }

func (pingArgs) Kind() string { return "ping" }

// redisErr is an error reply as go-redis reports one.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

// oomOn answers OOM, after the fact, to the pipelined script calls whose
// first key is stream (the test only looks at the answers).
type oomOn struct{ stream string }

func (h oomOn) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h oomOn) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h oomOn) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if a := cmd.Args(); len(a) > 3 && a[3] == h.stream {
				cmd.SetErr(redisErr("OOM command not allowed when used memory > 'maxmemory'."))
			}
		}
		return err
	}
}

// Concurrent Enqueue calls coalesced into one batch that spans two queues
// each get their own call's answer: the call for one queue failing says
// nothing of the other's task, which was added.
func TestCoalescedEnqueueGetsItsOwnAnswer(t *testing.T) {
	// testenv imports package client, which imports this one: its
	// harness is rebuilt here.
	addr := os.Getenv("ASYNC_REDIS_ADDR")
	if addr == "" {
		addr = miniredis.RunT(t).Addr()
	}
	run := strconv.FormatUint(rand.Uint64(), 36)
	qa, qb := "coalesced-a-"+run, "coalesced-b-"+run
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	rdb.AddHook(oomOn{stream: keys.ForQueue(qb).Stream()})
	c, err := New(context.Background(), rdb, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	// Every leader slot taken: the next calls queue up behind them.
	var release []func()
	for {
		r, ok := c.comb.Hold()
		if !ok {
			break
		}
		release = append(release, r)
	}
	if len(release) != maxLeaders {
		t.Fatalf("held %d leader slots, want %d", len(release), maxLeaders)
	}
	defer func() {
		for _, r := range release {
			r()
		}
	}()
	type answer struct {
		h   Ref
		err error
	}
	ans := [2]chan answer{make(chan answer, 1), make(chan answer, 1)}
	for i, q := range []string{qa, qb} {
		go func() {
			h, err := c.Enqueue(ctx, pingArgs{N: i}, &Opts{Queue: q, Retention: time.Millisecond}) // the combiner's path (oneCall)
			ans[i] <- answer{h, err}
		}()
		// Polled as testenv.Eventually does.
		for deadline := time.Now().Add(10 * time.Second); c.comb.Queued() != i+1; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the call did not queue up")
			}
		}
	}
	// A leader finishing hands the lead to the first queued call, which
	// sends both.
	release[0]()
	a, b := <-ans[0], <-ans[1]
	if a.err != nil || a.h.Key == "" {
		t.Fatalf("queue a: %v, %v; want its task added", a.h, a.err)
	}
	if !errors.Is(b.err, ErrRedisFull) || b.h.Key != "" {
		t.Fatalf("queue b: %v, %v; want ErrRedisFull", b.h, b.err)
	}
	if ts, err := c.Read(ctx, a.h); err != nil || ts.State != "pending" {
		t.Fatalf("queue a's task: %q, %v", ts.State, err)
	}
}
