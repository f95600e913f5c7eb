package client_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// longMarkers returns the op markers of queue q whose time to live is still
// above store.MarkerGrace (those that could be needed for a resend), and how
// many markers q has in all.
func longMarkers(t *testing.T, rdb redis.UniversalClient, q string) (long, all int) {
	t.Helper()
	ctx := context.Background()
	kq := keys.ForQueue(q)
	var node redis.Cmdable = rdb
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, kq.Stream())
		if err != nil {
			t.Fatal(err)
		}
		node = m
	}
	iter := node.Scan(ctx, 0, kq.Op("*"), 1000).Iterator()
	for iter.Next(ctx) {
		all++
		if d := node.PTTL(ctx, iter.Val()).Val(); d > store.MarkerGrace {
			long++
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return long, all
}

// An op marker lives minutes (the client's whole resend window), but once
// the client read its call's reply, go-redis sends the call no more: the
// next call to the queue shortens it to the grace. However many enqueues a
// queue took, the markers still above the grace are those of the last
// calls only.
func TestEnqueueMarkersShortenedOnceRead(t *testing.T) {
	env := testenv.Redis(t)
	c := testenv.Client(t, env)
	ctx := context.Background()

	q := testenv.Queue(t)
	const n = 200
	for i := 0; i < n; i++ {
		if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, Retention: markerPath}); err != nil {
			t.Fatal(err)
		}
	}
	long, all := longMarkers(t, env.RDB, q)
	if all == 0 {
		t.Fatal("no op markers found: the pattern does not match them")
	}
	// Sequential calls: each one shortens the marker of the one before.
	if long > 1 {
		t.Fatalf("after %d sequential enqueues %d op markers still live longer than %v, want at most the last call's", n, long, store.MarkerGrace)
	}

	// Concurrent calls: a call carries the markers of the calls that were
	// answered before it started, so only those answered after the last
	// call started stay long, at most the calls in flight at once (the
	// combiner's 4 leaders, one script call each for these small batches).
	q2 := testenv.Queue(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q2, Retention: markerPath}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if long, _ := longMarkers(t, env.RDB, q2); long > 4 {
		t.Fatalf("after %d concurrent enqueues %d op markers still live longer than %v, want at most 4", n, long, store.MarkerGrace)
	}
	if got := streamLen(t, env, q2); got != n {
		t.Fatalf("%d stream entries, want %d", got, n)
	}

	// EnqueueMany of more than one script call's worth (500 tasks),
	// pipelined: the first call of the next EnqueueMany carries them all,
	// so only the last EnqueueMany's three calls stay long.
	q3 := testenv.Queue(t)
	specs := make([]client.Spec, 1200)
	for i := range specs {
		specs[i] = client.Spec{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q3}}
	}
	for i := 0; i < 5; i++ {
		if _, err := c.EnqueueMany(ctx, specs); err != nil {
			t.Fatal(err)
		}
	}
	if long, _ := longMarkers(t, env.RDB, q3); long > 3 {
		t.Fatalf("after 5 EnqueueMany calls of 1200 tasks %d op markers still live longer than %v, want at most the last one's 3", long, store.MarkerGrace)
	}
}

// A call whose reply the client did not read keeps its long marker: the
// client does not know whether a try of it is still on its way. The
// markers that call carried are carried again by the next call.
func TestEnqueueUnreadReplyKeepsMarker(t *testing.T) {
	env := proxyEnv(t)
	c, p, _ := proxied(t, env)
	ctx := context.Background()
	q := testenv.Queue(t)
	var mu sync.Mutex
	var ops []string // marker keys, in call order
	p.add(&faultRule{match: evalOf(script.Enqueue), times: 1000, forward: true, after: func(args []string) {
		mu.Lock()
		ops = append(ops, scriptKeys(args)[1])
		mu.Unlock()
	}})
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, Retention: markerPath}); err != nil {
		t.Fatal(err)
	}
	// The second call runs in Redis, but its reply is an error (one that
	// go-redis does not resend on).
	p.mu.Lock()
	p.rules = nil
	p.mu.Unlock()
	failed := p.add(&faultRule{match: evalOf(script.Enqueue), times: 1, forward: true, reply: "-ERR injected\r\n",
		after: func(args []string) {
			mu.Lock()
			ops = append(ops, scriptKeys(args)[1])
			mu.Unlock()
		}})
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, Retention: markerPath}); err == nil {
		t.Fatal("the injected error was not returned")
	}
	if p.hitCount(failed) != 1 {
		t.Fatal("the second call did not meet the injected error")
	}
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, Retention: markerPath}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ops) != 2 {
		t.Fatalf("%d calls seen, want 2", len(ops))
	}
	first, second := env.RDB.PTTL(ctx, ops[0]).Val(), env.RDB.PTTL(ctx, ops[1]).Val()
	if first > store.MarkerGrace {
		t.Errorf("the first call's marker (reply read) lives %v, want at most %v", first, store.MarkerGrace)
	}
	if second <= store.MarkerGrace {
		t.Errorf("the second call's marker (reply not read) lives %v, want its whole TTL", second)
	}
	if n := streamLen(t, env, q); n != 3 {
		t.Fatalf("%d stream entries, want 3", n)
	}
}
