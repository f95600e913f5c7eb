package engine

import (
	"context"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// holdRegistryRead holds the first pipelined read of the shard registry,
// after it got its answer, until release is closed.
type holdRegistryRead struct {
	once    sync.Once
	read    chan struct{} // closed once the held read has its answer
	release chan struct{}
	wrote   chan struct{} // closed once an HSETNX into the registry returned
	wonce   sync.Once
}

func (h *holdRegistryRead) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdRegistryRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if a := cmd.Args(); len(a) >= 2 && cmd.Name() == "hsetnx" && a[1] == keys.ShardRegistry {
			h.wonce.Do(func() { close(h.wrote) })
		}
		return err
	}
}
func (h *holdRegistryRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if a := c.Args(); len(a) >= 2 && c.Name() == "hget" && a[1] == keys.ShardRegistry {
				first := false
				h.once.Do(func() { first = true })
				if first {
					close(h.read)
					<-h.release
				}
			}
		}
		return err
	}
}

// A registry read begun before DeclareShards ("not sharded") and stored
// after it does not undo the declaration in the engine's cache (found by
// a review): the declaring call reads again after it, and reads are
// stored in the order they were sent.
func TestDeclareShardsNotUndoneByStaleRead(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	h := &holdRegistryRead{read: make(chan struct{}), release: make(chan struct{}), wrote: make(chan struct{})}
	rdb.AddHook(h)
	e := &Engine{rdb: rdb, cfg: Config{}.WithDefaults()}
	ctx := context.Background()

	first := make(chan string)
	go func() { // a producer's first Enqueue to "uploads"
		pl, err := e.place(ctx, "uploads", "", "user:1")
		q := pl.queue
		if err != nil {
			t.Error(err)
		}
		first <- q
	}()
	<-h.read // its read answered "not sharded", not stored yet
	declared := make(chan []string)
	go func() {
		names, err := e.DeclareShards(ctx, "uploads", 4, false, store.ShardChange{})
		if err != nil {
			t.Error(err)
		}
		declared <- names
	}()
	<-h.wrote // the declaration is in the registry
	close(h.release)
	if q := <-first; q != "uploads" {
		t.Fatalf("the read begun before the declaration placed on %s", q)
	}
	names := <-declared
	pl, err := e.place(ctx, "uploads", "", "user:1")
	q := pl.queue
	if err != nil {
		t.Fatal(err)
	}
	if want := names[ShardOf("user:1", 4)]; q != want {
		t.Fatalf("after DeclareShards returned: %s, want %s", q, want)
	}
}
