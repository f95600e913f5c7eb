package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// More replicas than any of the test setups gives a master (miniredis and
// the single server have none, the CI cluster's masters one each).
const tooManyReplicas = 3

// A bad WaitReplicas or WaitTimeout is refused by New, naming the field.
func TestWaitReplicasConfigChecked(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  client.Config
		want string
	}{
		{client.Config{WaitReplicas: -1}, "Config.WaitReplicas is -1"},
		{client.Config{WaitTimeout: time.Second}, "Config.WaitTimeout is 1s but Config.WaitReplicas is 0"},
		{client.Config{WaitReplicas: 1, WaitTimeout: time.Microsecond}, "Config.WaitTimeout is 1µs"},
	} {
		tc.cfg.Logger = quietLog()
		_, err := client.New(ctx, env.RDB, &tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error with %q", tc.cfg, err, tc.want)
		}
	}
}

// A Ring hides which connection ran a write, so WAIT cannot be sent on it:
// New refuses it with WaitReplicas set.
func TestWaitReplicasRefusesRing(t *testing.T) {
	env := testenv.Redis(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": env.Addr}})
	t.Cleanup(func() { _ = ring.Close() })
	_, err := client.New(context.Background(), ring, &client.Config{Logger: quietLog(), WaitReplicas: 1})
	if err == nil || !strings.Contains(err.Error(), "*redis.Ring") {
		t.Fatalf("New on a Ring with WaitReplicas = %v; want an error naming *redis.Ring", err)
	}
}

// With fewer replicas than WaitReplicas, Enqueue and EnqueueMany add the
// tasks and return their handles with an error matching ErrNotReplicated
// that gives the counts.
func TestDurableEnqueueShortOfReplicas(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	c, err := client.New(ctx, env.RDB, &client.Config{Logger: quietLog(), WaitReplicas: tooManyReplicas, WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	checkShort := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, client.ErrNotReplicated) {
			t.Fatalf("%s: err = %v; want ErrNotReplicated", what, err)
		}
		var ne *client.NotReplicatedError
		if !errors.As(err, &ne) {
			t.Fatalf("%s: err = %v; want a *NotReplicatedError", what, err)
		}
		if ne.Want != tooManyReplicas || ne.Acked < 0 || ne.Acked >= tooManyReplicas {
			t.Fatalf("%s: want %d acked %d; want %d asked, 0 to %d confirmed", what, ne.Want, ne.Acked, tooManyReplicas, tooManyReplicas-1)
		}
		if !strings.Contains(err.Error(), "accepted by the master") {
			t.Fatalf("%s: err = %q; want it to say the master accepted the task", what, err)
		}
	}
	h, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q})
	checkShort("Enqueue", err)
	if h == nil {
		t.Fatal("Enqueue returned no handle with ErrNotReplicated")
	}
	if st, err := h.State(ctx); err != nil || st != client.StatePending {
		t.Fatalf("the task of a short Enqueue: state %v, %v; want pending", st, err)
	}
	hs, err := c.EnqueueMany(ctx, []client.Spec{
		{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q}},
		{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q, ID: "durable-c"}},
	})
	checkShort("EnqueueMany", err)
	if len(hs) != 2 || hs[0] == nil || hs[1] == nil {
		t.Fatalf("EnqueueMany returned handles %v with ErrNotReplicated; want 2", hs)
	}
	if n := streamLen(t, env, q); n != 3 {
		t.Fatalf("the stream holds %d entries; want the 3 tasks", n)
	}
	// Enqueueing the id again adds nothing and waits again.
	h2, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "durable-c"})
	checkShort("Enqueue again", err)
	if h2 == nil || !h2.Duplicate() || h2.ID() != hs[1].ID() {
		t.Fatalf("Enqueue of the id again = %v; want the duplicate %s", h2, hs[1].ID())
	}
}

// With a replica, a durable Enqueue returns once the replica has the task:
// the replica holds it when Enqueue returns.
func TestDurableEnqueueReachesReplica(t *testing.T) {
	master := testenv.PrivateRedis(t, "--repl-diskless-sync-delay", "0", "--dir", t.TempDir())
	host, port, _ := strings.Cut(master, ":")
	replica := testenv.PrivateRedis(t, "--replicaof", host, port, "--dir", t.TempDir())
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: master})
	t.Cleanup(func() { _ = rdb.Close() })
	rep := redis.NewClient(&redis.Options{Addr: replica})
	t.Cleanup(func() { _ = rep.Close() })
	testenv.Eventually(t, 20*time.Second, "the replica to sync", func() bool {
		info, err := rep.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	c, err := client.New(ctx, rdb, &client.Config{Logger: quietLog(), WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	q := testenv.Queue(t)
	for i := range 20 {
		h, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q})
		if err != nil {
			t.Fatalf("durable Enqueue %d: %v", i, err)
		}
		_, key, _ := strings.Cut(h.ID(), "/")
		if n, err := rep.XLen(ctx, keys.ForQueue(q).Stream()).Result(); err != nil || n != int64(i+1) {
			t.Fatalf("after durable Enqueue %d (%s) the replica's stream holds %d entries (%v); want %d", i, key, n, err, i+1)
		}
	}
}

// BenchmarkDurableEnqueue compares Enqueue with and without WaitReplicas 1
// on a master with one replica (both private servers on loopback): one
// caller at a time (the latency WAIT adds) and many (the combiner's
// batches share a WAIT). A real Redis only.
func BenchmarkDurableEnqueue(b *testing.B) {
	master := testenv.PrivateRedis(b, "--repl-diskless-sync-delay", "0", "--dir", b.TempDir())
	host, port, _ := strings.Cut(master, ":")
	replica := testenv.PrivateRedis(b, "--replicaof", host, port, "--dir", b.TempDir())
	ctx := context.Background()
	rep := redis.NewClient(&redis.Options{Addr: replica})
	b.Cleanup(func() { _ = rep.Close() })
	testenv.Eventually(b, 20*time.Second, "the replica to sync", func() bool {
		info, err := rep.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for _, mode := range []struct {
		name     string
		replicas int
	}{{"plain", 0}, {"durable", 1}} {
		rdb := redis.NewClient(&redis.Options{Addr: master, PoolSize: 64})
		b.Cleanup(func() { _ = rdb.Close() })
		c, err := client.New(ctx, rdb, &client.Config{Logger: quietLog(), WaitReplicas: mode.replicas})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		q := testenv.Queue(b)
		b.Run(mode.name+"/serial", func(b *testing.B) {
			for b.Loop() {
				if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(mode.name+"/parallel", func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
