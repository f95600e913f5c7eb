package asynctest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

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
	if err := rdb.Del(ctx, keys.TestKitMarker).Err(); err != nil {
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
