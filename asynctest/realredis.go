package asynctest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// On a real Redis a fleet owns its database: coordinators serve every
// queue of their Redis, and a fleet's waits and leak checks assume nothing
// else runs there.
const (
	lockTTL   = 10 * time.Second // the lock outlives a fleet that died by this much
	lockRenew = 2 * time.Second
	// lockWait bounds how long a fleet waits for the database's lock
	// while one holder keeps it (the wait starts again when the holder
	// changes).
	lockWait = 2 * time.Minute
)

// heldHere names the fleets of this process that hold a database's lock
// (by the lock's holder string), with the name of their test: a fleet that
// finds its database held by a fleet of its own test (or of a test it runs
// in) would wait for it for ever, as that fleet ends only after it.
var heldHere sync.Map // holder -> test name

// blocks reports whether a fleet of the test named holderTest holding a
// lock keeps the test named test from ever getting it: the same test, or a
// test that test runs in (its cleanups run after test's).
func blocks(holderTest, test string) bool {
	return holderTest == test || strings.HasPrefix(test, holderTest+"/")
}

// ownership is a fleet's hold on its database.
type ownership struct {
	rdb    *redis.Client
	holder string
	stop   chan struct{}
	done   chan struct{}
}

// ownDB takes the database's lock (waiting while another fleet holds it),
// then empties the database, refusing one that holds someone's data.
func (f *Fleet) ownDB(ctx context.Context) *ownership {
	t := f.t
	t.Helper()
	host, _ := os.Hostname()
	o := &ownership{rdb: f.newRDB(nil).Client, stop: make(chan struct{}), done: make(chan struct{}),
		holder: fmt.Sprintf("%s (pid %d on %s)", f.id, os.Getpid(), host)}
	where := fmt.Sprintf("database %d of %s", f.ropts.DB, f.ropts.Addr)
	wait := lockWait
	if f.opts.lockWait > 0 {
		wait = f.opts.lockWait
	}
	var deadline time.Time
	told := ""
	for {
		ok, other, err := store.TakeTestKitLock(ctx, o.rdb, keys.TestKitLock, o.holder, lockTTL)
		if err != nil {
			t.Fatalf("asynctest: %s: %v", where, err)
		}
		if ok {
			break
		}
		if other != "" && other != told {
			// A new holder: the wait starts again (only a holder that
			// keeps the database for over lockWait is a problem).
			told = other
			deadline = time.Now().Add(wait)
			if name, ok := heldHere.Load(other); ok && blocks(name.(string), t.Name()) {
				t.Fatalf("asynctest: %s is held by another fleet of this test (%s), which ends only after it: on a real Redis (%s) a test runs one fleet at a time; make one fleet and use Fleet.NewClient or StartWorkers for more processes", where, other, EnvRedisURL)
			}
			t.Logf("asynctest: %s is held by another fleet, %s: waiting for it (up to %v)", where, other, wait)
			if f.opts.onLockWait != nil {
				f.opts.onLockWait(other)
			}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			t.Fatalf("asynctest: %s is held by another fleet, %s, for over %v: give each test process its own database, or wait for it to end", where, other, wait)
		}
		time.Sleep(20 * time.Millisecond) // polls another process' lock
	}
	if err := store.ClaimTestKitDB(ctx, o.rdb); err != nil {
		_ = store.ReleaseTestKitLock(ctx, o.rdb, keys.TestKitLock, o.holder)
		if errors.Is(err, store.ErrForeignData) {
			t.Fatalf("asynctest: refusing %s named by %s: %v; the kit empties the database it runs in, so give it one of its own (an empty one)", where, EnvRedisURL, err)
		}
		t.Fatalf("asynctest: %s: %v", where, err)
	}
	heldHere.Store(o.holder, t.Name())
	go o.renew(f)
	return o
}

// renew renews the lock until release.
func (o *ownership) renew(f *Fleet) {
	defer close(o.done)
	tk := time.NewTicker(lockRenew)
	defer tk.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-tk.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lockRenew)
		ok, other, err := store.TakeTestKitLock(ctx, o.rdb, keys.TestKitLock, o.holder, lockTTL)
		cancel()
		if err == nil && !ok && other != "" {
			f.t.Errorf("asynctest: the fleet lost its database to %s (the lock expired: was the process stopped for %v?)", other, lockTTL)
			return
		}
	}
}

// release stops the renewals and deletes the lock.
func (o *ownership) release(f *Fleet) {
	f.t.Helper()
	close(o.stop)
	<-o.done
	defer heldHere.Delete(o.holder)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.ReleaseTestKitLock(ctx, o.rdb, keys.TestKitLock, o.holder); err != nil {
		f.t.Errorf("asynctest: %v", err)
	}
}
