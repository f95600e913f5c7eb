package worker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// holdPauseRead is a go-redis hook that, once armed, holds the next
// pipeline reading a pause flag (a worker's read of its pause flags) until
// release is closed; blocked is closed when it holds it. shardFlags is
// closed when a read of a shard's pause flag has returned.
type holdPauseRead struct {
	mu         sync.Mutex
	armed      bool
	blocked    chan struct{}
	release    chan struct{}
	shardFlags chan struct{}
	shardOnce  sync.Once
}

func (h *holdPauseRead) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.blocked, h.release = true, make(chan struct{}), make(chan struct{})
	h.shardFlags, h.shardOnce = make(chan struct{}), sync.Once{}
}

func (h *holdPauseRead) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *holdPauseRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}

func (h *holdPauseRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		reads, shards := false, false
		for _, c := range cmds {
			a := c.Args()
			if len(a) == 2 && strings.EqualFold(fmt.Sprint(a[0]), "exists") && strings.HasSuffix(fmt.Sprint(a[1]), ":paused") {
				reads = true
				shards = shards || strings.ContainsRune(fmt.Sprint(a[1]), keys.ShardSep)
			}
		}
		h.mu.Lock()
		hold := reads && h.armed
		if hold {
			h.armed = false
		}
		blocked, release, shardFlags := h.blocked, h.release, h.shardFlags
		h.mu.Unlock()
		if hold {
			close(blocked)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err := next(ctx, cmds)
		if shards && shardFlags != nil {
			h.shardOnce.Do(func() { close(shardFlags) })
		}
		return err
	}
}

// pauseRig is a worker of b.queue on a client with a holdPauseRead hook,
// set up as Start does but with no loop running (worker.RigStart).
func pauseRig(t *testing.T, b *bundle) (*worker.Worker, *holdPauseRead) {
	t.Helper()
	hook := &holdPauseRead{}
	rdb := testenv.NewClient(b.env.Addr)
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	w, err := worker.New(ctxT(t), rdb, &worker.Config{Queues: map[string]int{b.queue: 1}})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := worker.RigStart(ctxT(t), w)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return w, hook
}

// A read of the pause flags under way while the worker takes up the
// shards of its paused queue does not leave those shards unpaused: the
// read began with the queue alone, and ends after the shards joined.
func TestShardsJoinPausedDuringPauseRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	w, hook := pauseRig(t, b)
	if err := inspect.New(b.env.RDB).Pause(ctx, b.queue); err != nil {
		t.Fatal(err)
	}
	if err := worker.RigReadPaused(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got := worker.RigPaused(w); !slices.Equal(got, []string{b.queue}) {
		t.Fatalf("paused %v, want [%s]", got, b.queue)
	}
	names := declare(t, b, 2)
	hook.arm()
	read := make(chan error, 1)
	go func() { read <- worker.RigReadPaused(ctx, w) }()
	select {
	case <-hook.blocked:
	case <-ctx.Done():
		t.Fatal("the read of the pause flags did not start")
	}
	// The shards join while the read is held: addShards runs to its end,
	// or, should it wait for the read under way to end (one lock for
	// both), the read is released once addShards has read the shards'
	// own flags, its last call to Redis.
	added := make(chan error, 1)
	go func() { added <- worker.RigAddShards(ctx, w) }()
	var addErr error
	done := false
	select {
	case addErr = <-added:
		done = true
	case <-hook.shardFlags:
	case <-ctx.Done():
		t.Fatal("the shards did not join")
	}
	close(hook.release)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if !done {
		addErr = <-added
	}
	if addErr != nil {
		t.Fatal(addErr)
	}
	want := slices.Sorted(slices.Values(append([]string{b.queue}, names...)))
	if got := worker.RigServed(w); !slices.Equal(got, want) {
		t.Fatalf("serving %v, want %v", got, want)
	}
	if got := worker.RigPaused(w); !slices.Equal(got, want) {
		t.Fatalf("paused %v once the read under way as the shards joined ended, want %v (the queue and its shards)", got, want)
	}
}

// A shard paused on its own before the worker knew of it starts paused,
// not at the next read of the pause flags.
func TestShardsJoinPausedOnTheirOwn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	w, _ := pauseRig(t, b)
	names := declare(t, b, 3)
	if err := store.SetPaused(ctx, b.env.RDB, keys.ForQueue(names[1]), true); err != nil {
		t.Fatal(err)
	}
	if err := worker.RigAddShards(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got := worker.RigServed(w); len(got) != 4 {
		t.Fatalf("serving %v, want the queue and its 3 shards", got)
	}
	if got := worker.RigPaused(w); !slices.Equal(got, names[1:2]) {
		t.Fatalf("paused %v as the shards joined, want %v", got, names[1:2])
	}
	if err := worker.RigReadPaused(ctx, w); err != nil {
		t.Fatal(err)
	}
	if got := worker.RigPaused(w); !slices.Equal(got, names[1:2]) {
		t.Fatalf("paused %v after a read of the flags, want %v", got, names[1:2])
	}
}
