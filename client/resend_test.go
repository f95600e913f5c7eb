package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// proxied returns a client (default go-redis options) whose connections go
// through a fault proxy, and the proxy.
func proxied(t *testing.T, env *testenv.Env) (*client.Client, *faultProxy, *redis.Client) {
	t.Helper()
	p := newFaultProxy(t, env)
	rdb := p.client(t, env)
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, p, rdb
}

// streamLen is the number of entries in q's stream, read past the proxy.
func streamLen(t *testing.T, env *testenv.Env, q string) int64 {
	t.Helper()
	n, err := env.RDB.XLen(context.Background(), keys.ForQueue(q).Stream()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A lost enqueue reply is resent by go-redis for as long as its options allow
// (with the defaults, over two minutes after the first try: each retry may
// wait for a pooled connection, dial, write and read). The op marker must
// still be there when the last resend arrives, or the resend adds the task
// a second time. The proxy cuts the first reply; the marker's lifetime, read
// in Redis right after the first try, must cover the whole window, and on
// miniredis the resend is made to arrive at the window's end (its clock is
// moved on before the connection is cut).
func TestEnqueueResentAtWindowEndAddsOnce(t *testing.T) {
	env := proxyEnv(t)
	c, p, rdb := proxied(t, env)
	window := store.ResendWindow(rdb)
	if window <= 10*time.Second {
		t.Fatalf("go-redis' default resend window is %v; this test is about windows longer than 10s", window)
	}
	ctx := context.Background()
	q := testenv.Queue(t)
	var ttl atomic.Int64
	cut := p.add(&faultRule{match: evalOf(script.Enqueue), times: 1, cut: true, after: func(args []string) {
		ttl.Store(int64(env.RDB.PTTL(ctx, scriptKeys(args)[1]).Val()))
		if env.Mini != nil {
			env.Mini.FastForward(window)
		}
	}})
	h, err := c.Enqueue(ctx, PingArgs{Msg: "once"}, &client.EnqueueOpts{Queue: q, Retention: markerPath})
	if err != nil {
		t.Fatal(err)
	}
	if p.hitCount(cut) != 1 {
		t.Fatal("the enqueue's reply was not cut")
	}
	if got := time.Duration(ttl.Load()); got < window {
		t.Errorf("the op marker lived %v after the first try; go-redis may resend for %v", got, window)
	}
	if n := streamLen(t, env, q); n != 1 {
		t.Fatalf("one Enqueue with a lost reply left %d stream entries, want 1", n)
	}
	if h.Duplicate() {
		t.Fatal("the resend's answer says duplicate; it must be the first try's")
	}
}

// Redis answers LOADING while it reads its data back after a restart. A
// first try that was applied, then resends that all meet LOADING (more of
// them than go-redis retries), must end in one task and no error.
func TestEnqueueRetriesLoading(t *testing.T) {
	env := proxyEnv(t)
	c, p, _ := proxied(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	loading := p.add(&faultRule{match: evalOfAny(script.Enqueue, script.EnqueueOne), times: 6, forward: true,
		reply: "-LOADING Redis is loading the dataset in memory\r\n"})
	h, err := c.Enqueue(ctx, PingArgs{Msg: "restart"}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		t.Fatalf("Enqueue after %d LOADING answers: %v", p.hitCount(loading), err)
	}
	if p.hitCount(loading) != 6 {
		t.Fatalf("%d LOADING answers, want 6", p.hitCount(loading))
	}
	if n := streamLen(t, env, q); n != 1 {
		t.Fatalf("%d stream entries, want 1", n)
	}
	if st, err := h.State(ctx); err != nil || st != client.StatePending {
		t.Fatalf("state %q, %v; want pending", st, err)
	}

	// LOADING for longer than the client waits: an error, which the docs
	// call "maybe added" (the first try was applied here).
	p.add(&faultRule{match: evalOfAny(script.Enqueue, script.EnqueueOne), times: 1000, forward: true,
		reply: "-LOADING Redis is loading the dataset in memory\r\n"})
	start := time.Now()
	_, err = c.Enqueue(ctx, PingArgs{Msg: "long restart"}, &client.EnqueueOpts{Queue: q, ID: "long"})
	if !redis.IsLoadingError(err) {
		t.Fatalf("got %v; want the LOADING error once the client gave up", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("gave up after %v; the retries are bounded to a few seconds", d)
	}
	// The documented remedy: the same call again with its ID, once Redis
	// answers, adds nothing more.
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
	h2, err := c.Enqueue(ctx, PingArgs{Msg: "long restart"}, &client.EnqueueOpts{Queue: q, ID: "long"})
	if err != nil || !h2.Duplicate() {
		t.Fatalf("retry with the ID: %v, duplicate %v; want the task added by the first call", err, h2 != nil && h2.Duplicate())
	}
}

// At maxmemory with noeviction Redis refuses writes with OOM: Enqueue says so
// with ErrRedisFull, naming the queue, and adds nothing.
func TestEnqueueRedisFull(t *testing.T) {
	env := proxyEnv(t)
	c, p, _ := proxied(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q}); err != nil {
		t.Fatal(err)
	}
	p.add(&faultRule{match: evalOfAny(script.Enqueue, script.EnqueueOne), times: 2,
		reply: "-OOM command not allowed when used memory > 'maxmemory'. script: 1234, on @user_script:40.\r\n"})
	h, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q})
	if !errors.Is(err, client.ErrRedisFull) || !strings.Contains(err.Error(), q) || !strings.Contains(err.Error(), "maxmemory") {
		t.Fatalf("got %v; want ErrRedisFull naming the queue and maxmemory", err)
	}
	if h != nil {
		t.Fatalf("got handle %s with ErrRedisFull; want none: nothing was added", h.ID())
	}
	_, err = c.EnqueueMany(ctx, []client.Spec{{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q}}})
	if !errors.Is(err, client.ErrRedisFull) {
		t.Fatalf("EnqueueMany: got %v; want ErrRedisFull", err)
	}
	if n := streamLen(t, env, q); n != 1 {
		t.Fatalf("%d stream entries, want the 1 from before", n)
	}
}

// A ContinueWith on an ended task registers the continuation, then drains
// the queue's outbox to start it at once. That drain is best effort: when
// it fails, the call still returns the continuation's handle, and a later
// drain (the sweeps of workers and coordinators) starts it.
func TestContinueWithKeepsHandleWhenDrainFails(t *testing.T) {
	env := proxyEnv(t)
	c, p, _ := proxied(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	parent, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "parent"})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := parent.Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %q, %v", st, err)
	}
	outbox := keys.ForQueue(q).Outbox()
	failed := p.add(&faultRule{times: 1, reply: "-ERR injected\r\n", match: func(args []string) bool {
		return strings.EqualFold(args[0], "XRANGE") && args[1] == outbox
	}})
	next, err := parent.ContinueWith(ctx, PingArgs{Msg: "next"}, nil)
	if err != nil || next == nil {
		t.Fatalf("ContinueWith: %v, %v; want the handle and no error", next, err)
	}
	if p.hitCount(failed) != 1 {
		t.Fatal("the drain did not meet the injected error")
	}
	if st, _ := next.State(ctx); st != client.StateWaiting {
		t.Fatalf("state %q before a drain, want waiting", st)
	}
	if err := store.DrainOutbox(ctx, env.RDB, keys.ForQueue(q), time.Hour.Milliseconds()); err != nil {
		t.Fatal(err)
	}
	if st, _ := next.State(ctx); st != client.StatePending {
		t.Fatalf("state %q after a drain, want pending", st)
	}
}

// A ContinueWith from a handler makes the continuation a child of the
// handler's task. waiting.lua's reply lost and resent must not make the call
// take its own new continuation for an old one (and skip that record).
func TestContinueWithResentWaitingStaysChild(t *testing.T) {
	env := proxyEnv(t)
	c, p, _ := proxied(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	running, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "running"})
	if err != nil {
		t.Fatal(err)
	}
	parent, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "parent"})
	if err != nil {
		t.Fatal(err)
	}
	cut := p.add(&faultRule{match: evalOf(script.Waiting), times: 1, cut: true})
	hctx := engine.WithInfo(ctx, &engine.TaskInfo{ID: running.ID()})
	next, err := parent.ContinueWith(hctx, PingArgs{Msg: "next"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.hitCount(cut) != 1 {
		t.Fatal("waiting.lua's reply was not cut")
	}
	if next.Duplicate() {
		t.Error("the new continuation is reported as a duplicate")
	}
	kids, err := store.Kids(ctx, env.RDB, keys.ForQueue(q), "running")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, next.ID()) {
		t.Fatalf("children of %s: %v; want %s", running.ID(), kids, next.ID())
	}
	if _, err := running.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := next.State(ctx); st != client.StateCancelled {
		t.Fatalf("continuation %q after its creator's task was cancelled, want cancelled", st)
	}
}

// contadd.lua run twice with the same arguments (what a resend does) lists
// the continuation once.
func TestContAddResentListsOnce(t *testing.T) {
	env := testenv.Redis(t)
	c := testenv.Client(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "parent"}); err != nil {
		t.Fatal(err)
	}
	kq := keys.ForQueue(q)
	spec := store.ContSpec(q, "next", false)
	for i := 0; i < 2; i++ {
		fired, err := store.AddContinuation(ctx, env.RDB, kq, "parent", spec)
		if err != nil || fired {
			t.Fatalf("run %d: fired %v, %v", i+1, fired, err)
		}
	}
	list, err := env.RDB.LRange(ctx, kq.Conts("parent"), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("continuations %q; want the spec once", list)
	}
}

// New warns, once per Redis client, when that client does not bound socket
// reads by the ctx deadline, and names the option.
func TestNewWarnsWithoutContextDeadlines(t *testing.T) {
	env := testenv.Redis(t)
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	rdb := testenv.NewEnvClient(env)
	defer rdb.Close()
	for i := 0; i < 2; i++ {
		c, err := client.New(context.Background(), rdb, &client.Config{Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 || !strings.Contains(buf.String(), "ContextTimeoutEnabled") {
		t.Fatalf("log %q: %d warnings naming ContextTimeoutEnabled, want 1", buf.String(), n)
	}
	buf.Reset()
	on := redis.NewClient(&redis.Options{Addr: env.Addr, DB: env.DB, ContextTimeoutEnabled: true})
	defer on.Close()
	if testenv.Real() && env.Mini == nil {
		if _, ok := env.RDB.(*redis.ClusterClient); ok {
			return // the plain client above does not reach a cluster
		}
	}
	c, err := client.New(context.Background(), on, &client.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if strings.Contains(buf.String(), "ContextTimeoutEnabled") {
		t.Fatalf("log %q: a warning for a client with ContextTimeoutEnabled", buf.String())
	}
}
