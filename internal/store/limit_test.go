package store_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// BenchmarkParkWaiters parks n tasks on a full limit (limwait.lua, in
// pipelines of 100) and reports the time per park: with a structure
// indexed by task, it does not grow with n. Run it on a real Redis
// (ASYNC_REDIS_ADDR).
func BenchmarkParkWaiters(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			e := testenv.Redis(b)
			ctx := context.Background()
			if err := script.Load(ctx, e.RDB); err != nil {
				b.Fatal(err)
			}
			var spent time.Duration
			for it := range b.N {
				l := keys.ForLimit(fmt.Sprintf("bench-%s-%d", testenv.Queue(b), it))
				if ok, err := store.TakeSlot(ctx, e.RDB, l, 1, "holder", "q/running", 600000); err != nil || !ok {
					b.Fatalf("take the only slot: %v %v", ok, err)
				}
				began := time.Now()
				for from := 0; from < n; from += 100 {
					pipe := e.RDB.Pipeline()
					for i := from; i < from+100; i++ {
						script.LimWait.Run(ctx, pipe, []string{l.Holders(), l.Waiters()}, 1, fmt.Sprintf("q/w%06d", i), 600000)
					}
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
				spent += time.Since(began)
				_ = e.RDB.Del(ctx, l.Holders(), l.Waiters())
			}
			b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*n), "ns/park")
		})
	}
}

// Waiters are woken longest waiting first; a park sent again keeps one
// registration and its place; a task that takes a slot is no longer woken.
func TestLimitWaitersOrderResendAndTake(t *testing.T) {
	t.Parallel()
	rdb, _ := env(t)
	ctx := context.Background()
	l := keys.ForLimit("test-" + testenv.Queue(t))
	take := func(holder, id string) bool {
		t.Helper()
		ok, err := store.TakeSlot(ctx, rdb, l, 1, holder, id, 600000)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	give := func(holders ...string) []string {
		t.Helper()
		ids, err := store.GiveSlots(ctx, rdb, l, 1, holders...)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if !take("h1", "q/run") {
		t.Fatal("the free slot was not taken")
	}
	for _, id := range []string{"q/a", "q/b", "q/c", "q/b"} { // q/b parked twice
		if free, err := store.AwaitSlot(ctx, rdb, l, 1, id, 600000); err != nil || free {
			t.Fatalf("AwaitSlot(%s) = %v, %v; want registered", id, free, err)
		}
	}
	if take("h2", "q/c") {
		t.Fatal("a slot of a full limit was taken")
	}
	if ids := give("h1"); !slices.Equal(ids, []string{"q/a"}) {
		t.Errorf("the freed slot woke %v; want [q/a], the first parked", ids)
	}
	if !take("h3", "q/b") { // q/b came back by itself and takes the slot
		t.Fatal("the free slot was not taken")
	}
	if ids := give("h3"); !slices.Equal(ids, []string{"q/c"}) {
		t.Errorf("the freed slot woke %v; want [q/c] (q/b holds no place any more, and was registered once)", ids)
	}
	if ids := give(); len(ids) != 0 {
		t.Errorf("with no waiter left, a release woke %v", ids)
	}
}

// Parking n tasks behind a full limit costs O(n log n) in all, not O(n²):
// the limit scripts run no command that walks the whole waiting line (on
// a list of n waiters, LREM or LPOS reads all n to find one). Counted in
// Redis' own command statistics, which miniredis lacks, on a redis-server
// of the test's own (other tests' scripts run LPOS on a shared one).
func TestLimitParkScansNoLine(t *testing.T) {
	addr := testenv.PrivateRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	l := keys.ForLimit("test-" + testenv.Queue(t))
	if !mustTake(t, rdb, l, "h1", "q/run") {
		t.Fatal("the free slot was not taken")
	}
	// The commands that find a member of a list by reading it.
	scans := []string{"lrem", "lpos"}
	before := commandCalls(t, rdb, l.Waiters())
	const n = 2000
	for from := 0; from < n; from += 100 {
		pipe := rdb.Pipeline()
		for i := from; i < from+100; i++ {
			script.LimWait.Run(ctx, pipe, []string{l.Holders(), l.Waiters()}, 1, fmt.Sprintf("q/w%06d", i), 600000)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 10 {
		mustTake(t, rdb, l, "h2", fmt.Sprintf("q/w%06d", i))
	}
	after := commandCalls(t, rdb, l.Waiters())
	for _, c := range scans {
		if d := after[c] - before[c]; d > 0 {
			t.Errorf("parking %d tasks and taking slots ran %s %d times; want 0 (it reads the whole line)", n, c, d)
		}
	}
	if got := rdb.ZCard(ctx, l.Waiters()).Val(); got != n {
		t.Errorf("%d waiters registered; want %d", got, n)
	}
}

func mustTake(t *testing.T, rdb redis.UniversalClient, l keys.Limit, holder, id string) bool {
	t.Helper()
	ok, err := store.TakeSlot(context.Background(), rdb, l, 1, holder, id, 600000)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// commandCalls reads the call counts of Redis' command statistics, of the
// node that serves key.
func commandCalls(t *testing.T, rdb redis.UniversalClient, key string) map[string]int64 {
	t.Helper()
	var info string
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		node, e := cc.MasterForKey(context.Background(), key)
		if e != nil {
			t.Fatal(e)
		}
		info, err = node.Info(context.Background(), "commandstats").Result()
	} else {
		info, err = rdb.Info(context.Background(), "commandstats").Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}
