package patterns_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
)

// resendScript makes the client it hooks run every call of one script
// twice, as go-redis does when the first reply is lost: the first run's
// reply is dropped, the caller reads the second's.
type resendScript struct{ sha string }

func (resendScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (resendScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h resendScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "evalsha" && len(a) > 1 && a[1] == h.sha {
			if err := next(ctx, cmd); err != nil {
				return err // not run (NOSCRIPT): go-redis falls back to EVAL
			}
		}
		return next(ctx, cmd)
	}
}

// resendClient is a client of env's Redis whose calls of script s are each
// run twice.
func resendClient(t *testing.T, env *testenv.Env, s *redis.Script) *client.Client {
	t.Helper()
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	if err := script.Load(context.Background(), rdb); err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(resendScript{sha: s.Hash()})
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A Flush whose take (parttake.lua) is resent starts the items it took: the
// resend finds them taken by its first run and answers so.
func TestPartitionerFlushResent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	c := resendClient(t, b.env, script.PartTake)
	name := "rs" + testenv.Queue(t)[:8]
	pt, err := patterns.NewPartitioner[int](c, name, keyOf, &patterns.PartitionerOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	items := []int{1, 2, 3, 8, 9, 15}
	if err := pt.Append(ctx, items...); err != nil {
		t.Fatal(err)
	}
	spec := func(key string, its []int) client.Spec {
		return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	p, err := pt.Flush(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatal("Flush found nothing to flush; the items were taken by its first run")
	}
	if got := p.Keys(); len(got) != 3 { // k1 (1, 8, 15), k2 (2, 9), k3 (3)
		t.Fatalf("partitions %v, want k1 k2 k3", got)
	}
	q := keys.ForQueue(b.queue)
	if n, err := b.env.RDB.ZCard(ctx, q.PartitionerSnaps(name)).Result(); err != nil || n != 0 {
		t.Fatalf("%d snapshots pending after the flush (%v)", n, err)
	}
	if n, err := pt.Len(ctx); err != nil || n != 0 {
		t.Fatalf("%d items wait for a flush (%v)", n, err)
	}
}

// proxiedClient returns a client through a fault proxy in front of a
// Redis for t (on the cluster pass a miniredis of its own: the proxy
// serves one address), and the proxy.
func proxiedClient(t *testing.T) (*client.Client, *testenv.FaultProxy, redis.UniversalClient) {
	t.Helper()
	env := testenv.Redis(t)
	if os.Getenv(testenv.EnvCluster) != "" {
		env = testenv.IsolatedRedis(t, isolatedDB) // not flushed there
	}
	p := testenv.NewFaultProxy(t, env.Addr)
	opt := p.Options(env)
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, p, env.RDB
}

// naming matches the writing commands that name key (a script's keys
// included).
func naming(key string) testenv.Match {
	return func(c testenv.Command) bool { return testenv.IsWrite(c) && slices.Contains(c.Args, key) }
}

// An Append whose reply was lost, once or twice, and that go-redis resent
// appends its items once.
func TestPartitionerAppendResent(t *testing.T) {
	t.Parallel()
	for _, drops := range []int{1, 2} {
		t.Run(strconv.Itoa(drops), func(t *testing.T) {
			t.Parallel()
			c, p, _ := proxiedClient(t)
			ctx := ctxT(t)
			queue := testenv.Queue(t)
			name := "ra" + queue[len(queue)-8:]
			pt, err := patterns.NewPartitioner[int](c, name, keyOf, &patterns.PartitionerOpts{Queue: queue})
			if err != nil {
				t.Fatal(err)
			}
			p.DropReply(naming(keys.ForQueue(queue).Partitioner(name)), 1, drops)
			if err := pt.Append(ctx, 1, 2, 3); err != nil {
				t.Fatalf("Append: %v", err)
			}
			if got := p.Dropped(); got != drops {
				t.Fatalf("%d replies dropped, want %d", got, drops)
			}
			if n, err := pt.Len(ctx); err != nil || n != 3 {
				t.Fatalf("%d items wait for a flush (%v), want the 3 appended", n, err)
			}
		})
	}
}

// A Flush whose last call (dropping the snapshot it started) lost its
// reply once or twice finishes as a clean one: it reports the group it
// started and leaves no snapshot pending. When the reply is lost on every
// try, it still reports the group it started, with the error.
func TestPartitionerFlushDoneResent(t *testing.T) {
	t.Parallel()
	for _, drops := range []int{1, 2, 4} { // the client tries 4 times
		t.Run(strconv.Itoa(drops), func(t *testing.T) {
			t.Parallel()
			c, p, direct := proxiedClient(t)
			ctx := ctxT(t)
			queue := testenv.Queue(t)
			name := "rf" + queue[len(queue)-8:]
			pt, err := patterns.NewPartitioner[int](c, name, keyOf, &patterns.PartitionerOpts{Queue: queue})
			if err != nil {
				t.Fatal(err)
			}
			if err := pt.Append(ctx, 1, 2, 3, 8, 9, 15); err != nil {
				t.Fatal(err)
			}
			q := keys.ForQueue(queue)
			// The first write naming the pending set is the take.
			p.DropReply(naming(q.PartitionerSnaps(name)), 2, drops)
			spec := func(key string, its []int) client.Spec {
				return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: queue}}
			}
			g, err := pt.Flush(ctx, spec, nil)
			if got := p.Dropped(); got != drops {
				t.Fatalf("%d replies dropped, want %d", got, drops)
			}
			if g == nil {
				t.Fatalf("Flush reported no group (error: %v); it started one", err)
			}
			if got := g.Keys(); len(got) != 3 { // k1 (1, 8, 15), k2 (2, 9), k3 (3)
				t.Fatalf("partitions %v, want k1 k2 k3", got)
			}
			if drops == 4 {
				if err == nil {
					t.Fatal("Flush: no error, though no reply of its last call came back")
				}
				return
			}
			if err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if n, err := direct.ZCard(ctx, q.PartitionerSnaps(name)).Result(); err != nil || n != 0 {
				t.Fatalf("%d snapshots pending after the flush (%v)", n, err)
			}
		})
	}
}
