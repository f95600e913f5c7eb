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
	"github.com/taskfleet/async/worker"
)

type tenantKey struct{}

var errNoTenant = errors.New("no tenant in the ctx")

// tenancyHook stamps each task with the tenant of the ctx that enqueues it,
// and refuses a task enqueued without one.
func tenancyHook(seen *[]string, mu *sync.Mutex) client.EnqueueHook {
	return func(ctx context.Context, t *client.Enqueuing) error {
		mu.Lock()
		*seen = append(*seen, t.Opts.Queue+"/"+t.Kind)
		mu.Unlock()
		tenant, _ := ctx.Value(tenantKey{}).(string)
		if tenant == "" {
			return errNoTenant
		}
		if t.Opts.Meta == nil {
			t.Opts.Meta = map[string]string{}
		}
		t.Opts.Meta["tenant"] = tenant
		return nil
	}
}

// Enqueue hooks run in order on each task before it is checked: they see
// its queue (the default applied), kind and options, and may add metadata,
// which the handler reads; the caller's options are left alone.
func TestEnqueueHookAddsMetadata(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	var order []string
	second := func(ctx context.Context, t *client.Enqueuing) error {
		mu.Lock()
		order = append(order, "second saw tenant "+t.Opts.Meta["tenant"])
		mu.Unlock()
		return nil
	}
	q := testenv.Queue(t)
	c, env := newClient(t, &client.Config{DefaultQueue: q, EnqueueHooks: []client.EnqueueHook{tenancyHook(&seen, &mu), second}})
	metas := make(chan map[string]string, 4)
	testenv.StartWorker(t, env.RDB, q, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a PingArgs) (string, error) {
			metas <- worker.Meta(ctx)
			return a.Msg, nil
		})
	}, false)
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), tenantKey{}, "acme"), 20*time.Second)
	defer cancel()
	opts := &client.EnqueueOpts{Meta: map[string]string{"req": "r1"}}
	h, err := c.Enqueue(ctx, PingArgs{Msg: "hi"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if m := <-metas; len(m) != 2 || m["tenant"] != "acme" || m["req"] != "r1" {
		t.Fatalf("handler saw metadata %v; want tenant acme and req r1", m)
	}
	if len(opts.Meta) != 1 || opts.Queue != "" {
		t.Fatalf("the caller's options changed: %+v", opts)
	}
	hs, err := c.EnqueueMany(ctx, []client.Spec{{Args: PingArgs{Msg: "a"}}, {Args: PingArgs{Msg: "b"}, Opts: &client.EnqueueOpts{Queue: q}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
		if m := <-metas; m["tenant"] != "acme" {
			t.Fatalf("handler saw metadata %v; want tenant acme", m)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := q + "/ping"; len(seen) != 3 || seen[0] != want || seen[1] != want || seen[2] != want {
		t.Fatalf("the hook saw %v; want %s three times", seen, want)
	}
	if len(order) != 3 || order[0] != "second saw tenant acme" {
		t.Fatalf("the second hook saw %v; want it after the first", order)
	}
}

// A hook's refusal refuses the call before anything is sent: Enqueue and
// EnqueueMany (whose other specs are fine) add nothing, and the error
// matches the hook's.
func TestEnqueueHookRefuses(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	q := testenv.Queue(t)
	refuseB := func(ctx context.Context, t *client.Enqueuing) error {
		if p, ok := t.Args.(PingArgs); ok && p.Msg == "b" {
			return errors.New("b is banned")
		}
		return nil
	}
	c, env := newClient(t, &client.Config{EnqueueHooks: []client.EnqueueHook{refuseB, tenancyHook(&seen, &mu)}})
	ctx := context.Background()
	if _, err := c.Enqueue(ctx, PingArgs{}, &client.EnqueueOpts{Queue: q}); !errors.Is(err, errNoTenant) || !strings.Contains(err.Error(), "enqueue hook") {
		t.Fatalf("got %v; want refused by the hook", err)
	}
	tctx := context.WithValue(ctx, tenantKey{}, "acme")
	hs, err := c.EnqueueMany(tctx, []client.Spec{
		{Args: PingArgs{Msg: "a"}, Opts: &client.EnqueueOpts{Queue: q}},
		{Args: PingArgs{Msg: "b"}, Opts: &client.EnqueueOpts{Queue: q}},
	})
	if err == nil || hs != nil || !strings.Contains(err.Error(), "spec 1") || !strings.Contains(err.Error(), "b is banned") {
		t.Fatalf("got %v, %v; want spec 1 refused and no handles", hs, err)
	}
	if n, err := env.RDB.XLen(ctx, keys.ForQueue(q).Stream()).Result(); err != nil || n != 0 {
		t.Fatalf("stream holds %d entries (%v); want none added", n, err)
	}
	if _, err := client.New(ctx, env.RDB, &client.Config{EnqueueHooks: []client.EnqueueHook{nil}}); err == nil || !strings.Contains(err.Error(), "EnqueueHooks[0] is nil") {
		t.Fatalf("nil hook: %v; want refused", err)
	}
}
