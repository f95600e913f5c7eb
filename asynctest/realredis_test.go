package asynctest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// ownedURL is the Redis the ownership tests run fleets on: the one
// EnvRedisURL names, or else a miniredis of the test's (the kit treats a
// URL to it as it treats a real Redis).
func ownedURL(t *testing.T) string {
	if u := os.Getenv(EnvRedisURL); u != "" {
		return u
	}
	m := miniredis.RunT(t)
	return "redis://" + m.Addr() + "/0"
}

func rawClient(t *testing.T, url string) *redis.Client {
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// A database holding keys the kit did not write is refused, named in the
// message, and left as it was. (Not in parallel: on a real Redis it takes
// the database the other tests' fleets share, and gives it back marked.)
func TestFleetRefusesForeignDatabase(t *testing.T) {
	url := ownedURL(t)
	rdb := rawClient(t, url)
	ctx := context.Background()
	const holder = "TestFleetRefusesForeignDatabase"
	if ok, other, err := store.TakeTestKitLock(ctx, rdb, keys.TestKitLock, holder, lockTTL); err != nil || !ok {
		t.Fatalf("take the lock: %v %v (held by %s)", ok, err, other)
	}
	// Empty first (the kit's database, whose lock the test holds): keys
	// an earlier fleet left would be listed before the foreign one.
	if err := rdb.Eval(ctx, "for _, k in ipairs(redis.call('KEYS', '*')) do if k ~= KEYS[1] then redis.call('DEL', k) end end return 0", []string{keys.TestKitLock}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "someone:data", "precious", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := store.ReleaseTestKitLock(ctx, rdb, keys.TestKitLock, holder); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Give the database back to the kit.
		_ = rdb.Del(ctx, "someone:data").Err()
		_ = rdb.Set(ctx, keys.TestKitMarker, "asynctest", 0).Err()
	})
	tb := newFakeTB(t, t.Name())
	tb.run(func(tb testing.TB) { NewFleet(tb, nil, &Options{redisURL: url}) })
	errs := tb.failures()
	if len(errs) == 0 || !strings.Contains(errs[0], "refusing database") || !strings.Contains(errs[0], "someone:data") ||
		!strings.Contains(errs[0], "the database holds keys the test kit did not write") {
		t.Fatalf("failures %q, want the database refused, naming a key", errs)
	}
	if v, err := rdb.Get(ctx, "someone:data").Result(); err != nil || v != "precious" {
		t.Fatalf("the foreign key is %q, %v after the refusal", v, err)
	}
	if n, err := rdb.Exists(ctx, keys.TestKitLock).Result(); err != nil || n != 0 {
		t.Fatalf("the refused fleet left the lock: %d, %v", n, err)
	}
}

// Two fleets on one database: the second waits for the first's lock, and
// starts on an emptied database once the first released it. (Each runs
// under a fakeTB of its own, the second on a goroutine: parallel subtests
// would wait for a free slot of -parallel, held by the tests waiting for
// the database.)
func TestFleetsShareDatabaseInTurn(t *testing.T) {
	t.Parallel()
	url := ownedURL(t)
	var mu sync.Mutex
	var events []string
	event := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	firstUp := make(chan string, 1)       // the first fleet's id, once it owns the database
	secondWaits := make(chan struct{}, 1) // the second found the first's lock
	first, second := newFakeTB(t, "first"), newFakeTB(t, "second")
	done := make(chan struct{})
	go func() {
		defer close(done)
		second.run(func(tb testing.TB) {
			id, ok := <-firstUp
			if !ok {
				return
			}
			f := NewFleet(tb, nil, &Options{redisURL: url, onLockWait: func(holder string) {
				// (On a real Redis, other tests' fleets take turns too.)
				if strings.HasPrefix(holder, id+" ") {
					event("second waits")
					secondWaits <- struct{}{}
				}
			}})
			event("second owns")
			if n, _ := f.Redis().Exists(context.Background(), "first:key").Result(); n != 0 {
				tb.Error("the second fleet found the first's key: the database was not emptied")
			}
		})
	}()
	first.run(func(tb testing.TB) {
		defer close(firstUp)
		f := NewFleet(tb, nil, &Options{redisURL: url})
		event("first owns")
		if err := f.Redis().Set(context.Background(), "first:key", "1", 0).Err(); err != nil {
			tb.Fatal(err)
		}
		firstUp <- f.id
		<-secondWaits
		if n, _ := f.Redis().Exists(context.Background(), "first:key").Result(); n != 1 {
			tb.Error("the first fleet's key is gone while it owns the database")
		}
		event("first ends")
	})
	<-done
	if errs := append(first.failures(), second.failures()...); len(errs) > 0 {
		t.Errorf("failures: %q", errs)
	}
	if got := fmt.Sprint(events); got != "[first owns second waits first ends second owns]" {
		t.Errorf("events %s", got)
	}
}

// A second fleet of the same test (or of a subtest of the test that holds
// the first) on a real Redis would wait for the first for ever: it fails at
// once, saying why.
func TestSecondFleetOfTestFailsAtOnce(t *testing.T) {
	t.Parallel()
	url := ownedURL(t)
	for _, name := range []string{"same", "sub"} {
		tb, inner := newFakeTB(t, "twofleets"), newFakeTB(t, "twofleets")
		if name == "sub" {
			inner = newFakeTB(t, "twofleets/sub")
		}
		start := time.Now()
		second := false
		tb.run(func(tb testing.TB) {
			NewFleet(tb, nil, &Options{redisURL: url})
			inner.run(func(tb testing.TB) {
				NewFleet(tb, nil, &Options{redisURL: url, lockWait: 30 * time.Second})
				second = true
			})
		})
		errs := append(tb.failures(), inner.failures()...)
		if second || len(errs) != 1 || !strings.Contains(errs[0], "held by another fleet of this test") {
			t.Errorf("%s: second fleet made %v, failures %q; want one failure naming the fleet of this test", name, second, errs)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s: the second fleet failed after %v, not at once", name, d)
		}
	}
}

// A fleet's wait for the database starts again whenever the holder changes:
// two holders in turn, each for less than the bound but together for more,
// do not fail it. It logs whom it waits for. (On a miniredis of its own, so
// that the holders are the test's.)
func TestLockWaitRestartsPerHolder(t *testing.T) {
	t.Parallel()
	url := "redis://" + miniredis.RunT(t).Addr() + "/0"
	rdb := rawClient(t, url)
	ctx := context.Background()
	const bound = 2 * time.Second
	hold := bound * 2 / 3
	if ok, _, err := store.TakeTestKitLock(ctx, rdb, keys.TestKitLock, "holder-x", time.Minute); !ok || err != nil {
		t.Fatalf("take the lock: %v, %v", ok, err)
	}
	seen := make(chan string, 4)
	tb := newFakeTB(t, "waiter")
	var owned time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.run(func(tb testing.TB) {
			NewFleet(tb, nil, &Options{redisURL: url, lockWait: bound, onLockWait: func(h string) { seen <- h }})
			owned = time.Now()
		})
	}()
	if h := <-seen; h != "holder-x" {
		t.Fatalf("waits for %q, want holder-x", h)
	}
	start := time.Now()
	<-time.After(hold) // x keeps the database for two thirds of the bound
	// y takes over from x at once (the waiter cannot slip in between).
	if err := rdb.Set(ctx, keys.TestKitLock, "holder-y", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if h := <-seen; h != "holder-y" {
		t.Fatalf("waits for %q, want holder-y", h)
	}
	<-time.After(hold)
	if err := store.ReleaseTestKitLock(ctx, rdb, keys.TestKitLock, "holder-y"); err != nil {
		t.Fatal(err)
	}
	<-done
	if errs := tb.failures(); len(errs) != 0 {
		t.Fatalf("the waiter failed: %q", errs)
	}
	if d := owned.Sub(start); d < bound {
		t.Errorf("the waiter owned the database %v after the first holder's wait began; want after both holders, over %v", d, bound)
	}
	var logs []string
	for _, l := range tb.logs() {
		if strings.Contains(l, "waiting for it") {
			logs = append(logs, l)
		}
	}
	if len(logs) != 2 || !strings.Contains(logs[0], "holder-x") || !strings.Contains(logs[1], "holder-y") {
		t.Errorf("logs %q; want one naming each holder waited for, once", logs)
	}
}
