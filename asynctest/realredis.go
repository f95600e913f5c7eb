package asynctest

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	// lockWait bounds how long a fleet waits for the database's lock.
	lockWait = 2 * time.Minute
)

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
	deadline := time.Now().Add(lockWait)
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
			told = other
			if f.opts.onLockWait != nil {
				f.opts.onLockWait(other)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("asynctest: %s is held by another fleet, %s, for over %v: give each test process its own database, or wait for it to end", where, other, lockWait)
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
	close(o.stop)
	<-o.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.ReleaseTestKitLock(ctx, o.rdb, keys.TestKitLock, o.holder); err != nil {
		f.t.Errorf("asynctest: %v", err)
	}
}
