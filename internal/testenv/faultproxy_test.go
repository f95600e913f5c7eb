package testenv_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
)

// proxied returns a proxy in front of a Redis of the test's own, a client
// through it that resends up to retries times, a client of the Redis itself,
// and a key prefix unique to the test.
func proxied(t *testing.T, retries int) (*testenv.FaultProxy, redis.UniversalClient, redis.UniversalClient, string) {
	t.Helper()
	env := testenv.IsolatedRedis(t, isolatedDB)
	p := testenv.NewFaultProxy(t, env.Addr)
	opt := p.Options(env)
	opt.MaxRetries = retries
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return p, rdb, env.RDB, "{" + testenv.Queue(t) + "}:"
}

// isolatedDB is this package's database for testenv.IsolatedRedis.
const isolatedDB = 12

func TestFaultProxyForwardsCommandsAndPipelines(t *testing.T) {
	p, rdb, _, k := proxied(t, 3)
	ctx := context.Background()
	if err := rdb.Set(ctx, k+"a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cmds, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.Incr(ctx, k+"a")
		pl.Get(ctx, k+"missing")
		pl.LPush(ctx, k+"l", "x", "y")
		pl.HSet(ctx, k+"h", "f", "v")
		pl.HGetAll(ctx, k+"h")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if n := cmds[0].(*redis.IntCmd).Val(); n != 2 {
		t.Fatalf("INCR in a pipeline gave %d, want 2", n)
	}
	if m := cmds[4].(*redis.MapStringStringCmd).Val(); m["f"] != "v" {
		t.Fatalf("HGETALL gave %v", m)
	}
	var names []string
	for _, c := range p.Commands() {
		if !testenv.IsSetup(c) {
			names = append(names, c.Name)
		}
	}
	got := strings.Join(names, " ")
	if got != "SET INCR GET LPUSH HSET HGETALL" {
		t.Fatalf("recorded %q, want the commands in order", got)
	}
	if p.Dropped() != 0 {
		t.Fatalf("dropped %d replies without a rule", p.Dropped())
	}
}

func TestFaultProxyDropReplyResends(t *testing.T) {
	for _, times := range []int{1, 2} {
		p, rdb, direct, k := proxied(t, 3)
		ctx := context.Background()
		p.DropReply(testenv.MatchCommand("INCR "+k+"n"), 1, times)
		n, err := rdb.Incr(ctx, k+"n").Result()
		if err != nil {
			t.Fatal(err)
		}
		// Each dropped attempt ran in Redis; the answer is the last one's.
		if want := int64(times + 1); n != want {
			t.Fatalf("drop %d: INCR returned %d, want %d", times, n, want)
		}
		if v, _ := direct.Get(ctx, k+"n").Int64(); v != int64(times+1) {
			t.Fatalf("drop %d: counter is %d in Redis, want %d", times, v, times+1)
		}
		if p.Dropped() != times {
			t.Fatalf("dropped %d replies, want %d", p.Dropped(), times)
		}
		// The rule is used up: the next one goes through.
		if n, err := rdb.Incr(ctx, k+"n").Result(); err != nil || n != int64(times+2) {
			t.Fatalf("after the rule: %d, %v", n, err)
		}
	}
}

func TestFaultProxyDropNthAndWithoutRetries(t *testing.T) {
	p, rdb, direct, k := proxied(t, -1) // go-redis: -1 disables retries
	ctx := context.Background()
	p.DropReply(testenv.MatchName("incr"), 2, 1)
	for i, wantErr := range []bool{false, true, false} {
		err := rdb.Incr(ctx, k+"n").Err()
		if (err != nil) != wantErr {
			t.Fatalf("INCR %d: err %v, want an error: %v", i+1, err, wantErr)
		}
	}
	if v, _ := direct.Get(ctx, k+"n").Int64(); v != 3 {
		t.Fatalf("counter %d, want 3: a dropped reply's command still runs", v)
	}
}

func TestFaultProxyDropInPipeline(t *testing.T) {
	p, rdb, direct, k := proxied(t, 3)
	ctx := context.Background()
	p.DropReply(testenv.MatchCommand("INCR "+k+"b"), 1, 1)
	_, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.Incr(ctx, k+"a")
		pl.Incr(ctx, k+"b")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// go-redis resends the whole pipeline.
	for _, key := range []string{"a", "b"} {
		if v, _ := direct.Get(ctx, k+key).Int64(); v != 2 {
			t.Fatalf("%s = %d, want 2 (the pipeline ran twice)", key, v)
		}
	}
	if p.Dropped() != 1 {
		t.Fatalf("dropped %d", p.Dropped())
	}
}

// A reply dropped twice in a pipeline: the commands behind the dropped one
// get no reply either, and do not count as drops.
func TestFaultProxyDropTwiceInPipeline(t *testing.T) {
	p, rdb, direct, k := proxied(t, 3)
	ctx := context.Background()
	p.DropReply(testenv.MatchName("INCR"), 1, 2)
	_, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.Incr(ctx, k+"a")
		pl.Incr(ctx, k+"b")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := direct.Get(ctx, k+"a").Int64(); v != 3 {
		t.Fatalf("a = %d, want 3 (two dropped runs, then the answered one)", v)
	}
	if p.Dropped() != 2 {
		t.Fatalf("dropped %d, want 2", p.Dropped())
	}
}

func TestFaultProxyDelay(t *testing.T) {
	p, rdb, _, k := proxied(t, 3)
	ctx := context.Background()
	const d = 100 * time.Millisecond
	p.Delay(testenv.MatchName("GET"), d, 1)
	start := time.Now()
	if err := rdb.Get(ctx, k+"x").Err(); !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("GET answered after %v, want at least %v", el, d)
	}
	p.ClearRules()
	if err := rdb.Get(ctx, k+"x").Err(); !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
}

// FirstSending with DropReply loses the first reply of each distinct
// command and lets its resend through.
func TestFaultProxyDropFirstSendings(t *testing.T) {
	p, rdb, _, k := proxied(t, 3)
	ctx := context.Background()
	p.DropReply(testenv.FirstSending(testenv.MatchArg(k+"n")), 1, math.MaxInt)
	for _, c := range []struct{ by, want int64 }{{1, 2}, {2, 6}, {1, 7}} {
		// Each first sending runs twice (it and its resend); a command
		// sent before runs once.
		n, err := rdb.IncrBy(ctx, k+"n", c.by).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n != c.want {
			t.Fatalf("INCRBY %d gave %d, want %d", c.by, n, c.want)
		}
	}
	if p.Dropped() != 2 {
		t.Fatalf("dropped %d replies, want 2 (one per distinct command)", p.Dropped())
	}
}

// Latency holds the commands of a pipeline together: the round trip takes
// d longer, not d per command as Delay does.
func TestFaultProxyLatency(t *testing.T) {
	p, rdb, _, k := proxied(t, 3)
	ctx := context.Background()
	const d, n = 100 * time.Millisecond, 50
	p.Latency(testenv.MatchName("GET"), d)
	start := time.Now()
	if err := rdb.Get(ctx, k+"x").Err(); !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	if el := time.Since(start); el < d {
		t.Fatalf("GET answered after %v, want at least %v", el, d)
	}
	start = time.Now()
	if _, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for range n {
			pl.Get(ctx, k+"x")
		}
		return nil
	}); !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	el := time.Since(start)
	if el < d {
		t.Fatalf("a pipeline of %d GETs answered after %v, want at least %v", n, el, d)
	}
	if el >= n*d {
		t.Fatalf("a pipeline of %d GETs answered after %v: held %v each in turn, not together", n, el, d)
	}
}

func TestFaultProxyCutAll(t *testing.T) {
	p, rdb, direct, k := proxied(t, -1)
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- rdb.BLPop(ctx, 10*time.Second, k+"never").Err() }()
	testenv.Eventually(t, 5*time.Second, "the BLPOP to reach the proxy", func() bool {
		for _, c := range p.Commands() {
			if c.Name == "BLPOP" {
				return true
			}
		}
		return false
	})
	p.CutAll()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, redis.Nil) {
			t.Fatalf("BLPOP on a cut connection returned %v, want a connection error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("BLPOP still blocked after CutAll")
	}
	// New connections work.
	if err := rdb.Set(ctx, k+"after", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := direct.Get(ctx, k+"after").Result(); v != "1" {
		t.Fatalf("after the cut: %q", v)
	}
}

func TestFaultProxyPubSubPassesThrough(t *testing.T) {
	p, rdb, direct, k := proxied(t, 3)
	ctx := context.Background()
	// A rule on every command must not touch a subscribed connection.
	p.DropReply(testenv.MatchName("PING"), 1, 100)
	sub := rdb.Subscribe(ctx, k+"ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	ch := sub.Channel()
	if err := direct.Publish(ctx, k+"ch", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		if m.Payload != "hello" {
			t.Fatalf("got %q", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message through the proxy")
	}
}

func TestFaultProxyNamesScripts(t *testing.T) {
	p, rdb, _, k := proxied(t, 3)
	ctx := context.Background()
	if got := testenv.ScriptName(script.Enqueue.Hash()); got != "enqueue" {
		t.Fatalf("ScriptName(enqueue's sha) = %q", got)
	}
	// A script new to the server (its cache outlives FLUSHDB).
	s := redis.NewScript("return redis.call('INCR', KEYS[1]) -- " + k)
	// The first EVALSHA answers NOSCRIPT and go-redis falls back to EVAL;
	// both match the script's name.
	p.DropReply(testenv.MatchCommand("EVALSHA "+s.Hash()), 2, 1)
	n, err := s.Run(ctx, rdb, []string{k + "n"}).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || p.Dropped() != 1 {
		t.Fatalf("script ran to %d with %d drops, want 2 and 1", n, p.Dropped())
	}
	var seen []string
	for _, c := range p.Commands() {
		if strings.HasPrefix(c.Name, "EVAL") {
			seen = append(seen, c.String())
		}
	}
	want := []string{"EVALSHA " + s.Hash(), "EVAL " + s.Hash(), "EVAL " + s.Hash()}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("recorded %q, want %q", seen, want)
	}
}
