package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

type PingArgs struct {
	Msg  string
	Blob []byte
}

func (PingArgs) Kind() string { return "ping" }

type badKind struct{}

func (badKind) Kind() string { return "bad:kind" }

func newClient(t *testing.T, cfg *client.Config) (*client.Client, *testenv.Env) {
	t.Helper()
	env := testenv.Redis(t)
	c, err := client.New(context.Background(), env.RDB, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, env
}

func TestBadInputRefusedBeforeRedis(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, &client.Config{MaxPayloadBytes: 100})
	ctx := context.Background()
	q := testenv.Queue(t)
	tests := []struct {
		name string
		args client.Args
		opts *client.EnqueueOpts
		want error
		msg  string
	}{
		{"queue with colon", PingArgs{}, &client.EnqueueOpts{Queue: "a:b"}, client.ErrInvalidName, "queue"},
		{"queue with braces", PingArgs{}, &client.EnqueueOpts{Queue: "{x}"}, client.ErrInvalidName, "queue"},
		{"queue too long", PingArgs{}, &client.EnqueueOpts{Queue: strings.Repeat("q", 129)}, client.ErrInvalidName, "129 bytes"},
		{"kind", badKind{}, &client.EnqueueOpts{Queue: q}, client.ErrInvalidName, "kind"},
		{"id shaped like entry id", PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "123-4"}, client.ErrInvalidName, "generated id"},
		{"id with slash", PingArgs{}, &client.EnqueueOpts{Queue: q, ID: "a/b"}, client.ErrInvalidName, "task id"},
		{"payload", PingArgs{Blob: make([]byte, 200)}, &client.EnqueueOpts{Queue: q}, client.ErrPayloadTooLarge, "limit 100"},
	}
	for _, tt := range tests {
		_, err := c.Enqueue(ctx, tt.args, tt.opts)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: got %v; want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q, MaxAttempts: -1}); err == nil || !strings.Contains(err.Error(), "MaxAttempts") {
		t.Errorf("got %v; want an error naming MaxAttempts", err)
	}
	if _, err := c.Enqueue(ctx, nil, nil); err == nil {
		t.Error("nil args accepted")
	}
	// EnqueueMany refuses the whole slice when one spec is bad.
	_, err := c.EnqueueMany(ctx, []client.Spec{{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q}}, {Args: badKind{}}})
	if !errors.Is(err, client.ErrInvalidName) || !strings.Contains(err.Error(), "spec 1") {
		t.Errorf("got %v; want spec 1 named", err)
	}
	if n, _ := env.RDB.Exists(ctx, keys.ForQueue(q).Stream()).Result(); n != 0 {
		t.Errorf("bad input reached Redis: stream exists")
	}
	if _, err := client.New(context.Background(), env.RDB, &client.Config{DefaultQueue: "no spaces"}); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("got %v; want invalid default queue refused", err)
	}
	if _, err := c.Task("noslash"); !errors.Is(err, client.ErrInvalidName) {
		t.Errorf("got %v; want a bad task id refused", err)
	}
}

func TestIdempotentID(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, nil)
	ctx := context.Background()
	q := testenv.Queue(t)
	h1, err := c.Enqueue(ctx, PingArgs{Msg: "1"}, &client.EnqueueOpts{Queue: q, ID: "file-1"})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := c.Enqueue(ctx, PingArgs{Msg: "2"}, &client.EnqueueOpts{Queue: q, ID: "file-1"})
	if err != nil {
		t.Fatal(err)
	}
	if h1.ID() != q+"/file-1" || h2.ID() != h1.ID() || h1.Duplicate() || !h2.Duplicate() {
		t.Fatalf("got ids %s %s dup %v %v", h1.ID(), h2.ID(), h1.Duplicate(), h2.Duplicate())
	}
	hs, err := c.EnqueueMany(ctx, []client.Spec{
		{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q, ID: "file-1"}},
		{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q, ID: "file-2"}},
		{Args: PingArgs{}, Opts: &client.EnqueueOpts{Queue: q, ID: "file-2"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !hs[0].Duplicate() || hs[1].Duplicate() || !hs[2].Duplicate() {
		t.Fatalf("got duplicates %v %v %v; want true false true", hs[0].Duplicate(), hs[1].Duplicate(), hs[2].Duplicate())
	}
	if n := env.RDB.XLen(ctx, keys.ForQueue(q).Stream()).Val(); n != 2 {
		t.Fatalf("got %d stream entries; want 2", n)
	}
	in, err := h1.Info(ctx)
	if err != nil || in.State != client.StatePending || in.Kind != "ping" || in.MaxAttempts != 25 {
		t.Fatalf("got %+v, %v", in, err)
	}
}

func TestEnqueueManyOrderAndQueues(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, nil)
	ctx := context.Background()
	qa, qb := testenv.Queue(t)+"a", testenv.Queue(t)+"b"
	var specs []client.Spec
	for i := 0; i < 1203; i++ {
		q := qa
		if i%3 == 0 {
			q = qb
		}
		specs = append(specs, client.Spec{Args: PingArgs{Msg: string(rune('a' + i%26))}, Opts: &client.EnqueueOpts{Queue: q}})
	}
	hs, err := c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, h := range hs {
		want := qa
		if i%3 == 0 {
			want = qb
		}
		if h.Queue() != want || seen[h.ID()] {
			t.Fatalf("handle %d: queue %s id %s", i, h.Queue(), h.ID())
		}
		seen[h.ID()] = true
	}
	if got := env.RDB.XLen(ctx, keys.ForQueue(qa).Stream()).Val() + env.RDB.XLen(ctx, keys.ForQueue(qb).Stream()).Val(); got != 1203 {
		t.Fatalf("got %d entries; want 1203", got)
	}
	in, err := hs[5].Info(ctx)
	if err != nil || in.State != client.StatePending {
		t.Fatalf("got %+v, %v", in, err)
	}
}

func TestConcurrentEnqueueCoalesced(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, nil)
	q := testenv.Queue(t)
	var wg sync.WaitGroup
	ids := make(chan string, 1600)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				h, err := c.Enqueue(context.Background(), PingArgs{}, &client.EnqueueOpts{Queue: q})
				if err != nil {
					t.Error(err)
					return
				}
				ids <- h.ID()
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %s returned twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 1600 || env.RDB.XLen(context.Background(), keys.ForQueue(q).Stream()).Val() != 1600 {
		t.Fatalf("got %d ids", len(seen))
	}
}

func TestEnqueueCallerCancelled(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled ctx either fails the call or lets it through; it never hangs.
	_, _ = c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: testenv.Queue(t)})
}

func TestOutcomeNotFoundAndCtx(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t, nil)
	q := testenv.Queue(t)
	h, err := c.Task(q + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("got %v; want ErrNotFound", err)
	}
	h2, _ := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q})
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := h2.Outcome(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v; want DeadlineExceeded (no worker)", err)
	}
}
