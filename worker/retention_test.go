package worker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// A finished task's state and result expire after its retention.
func TestResultRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{Size: 1}, nil })
	})
	ctx := ctxT(t)
	h, _ := b.c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue, Retention: 200 * time.Millisecond})
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if b.env.Mini != nil {
		b.env.Mini.FastForward(time.Second)
	}
	testenv.Eventually(t, 5*time.Second, "the result to expire", func() bool {
		_, err := h.State(ctx)
		return errors.Is(err, client.ErrNotFound)
	})
}

// Outcome on a task that has not run yet is woken when it ends, and the
// queue's watcher count returns to zero afterwards.
func TestOutcomeWokenByCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	h, err := b.c.Enqueue(ctx, UploadArgs{Path: "abc"}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		r   UploadResult
		err error
	}
	got := make(chan res, 1)
	go func() {
		r, err := client.Result[UploadResult](ctx, h)
		got <- res{r, err}
	}()
	watching := keys.ForQueue(b.queue).Hooks()
	testenv.Eventually(t, 5*time.Second, "the waiter to be counted", func() bool {
		return b.env.RDB.ZCard(ctx, watching).Val() == 1
	})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	r := <-got
	if r.err != nil || r.r.Size != 3 {
		t.Fatalf("got %v, %v", r.r, r.err)
	}
	if n := b.env.RDB.ZCard(ctx, watching).Val(); n != 0 {
		t.Fatalf("got %d hooks after the wait; want 0", n)
	}
}

// Outcome does not hang when the end is announced while its subscription is
// down: after the reconnect every waiter reads the state again.
func TestOutcomeSurvivesLostNotification(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	// A client of its own, named, so that only its connections are cut.
	name := "outcome-" + b.queue
	crdb := testenv.NewNamedClient(b.env.Addr, name)
	defer crdb.Close()
	c, err := client.New(context.Background(), crdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	release := make(chan struct{})
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			<-release
			return UploadResult{Size: 9}, nil
		})
	})
	h, _ := c.Enqueue(ctx, UploadArgs{}, &client.EnqueueOpts{Queue: b.queue})
	got := make(chan error, 1)
	go func() {
		_, err := h.Outcome(ctx)
		got <- err
	}()
	hooks := keys.ForQueue(b.queue).Hooks()
	testenv.Eventually(t, 5*time.Second, "the waiter to register", func() bool {
		return b.env.RDB.ZCard(ctx, hooks).Val() == 1
	})
	// Drop the client's pub/sub connection, then let the task end at once,
	// while the client reconnects.
	// On a cluster the subscription lives on one of the nodes: ask each.
	var nodes []*redis.Client
	if cc, ok := b.env.RDB.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		_ = cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
			return nil
		})
	} else {
		nodes = []*redis.Client{b.env.RDB.(*redis.Client)}
	}
	killed := 0
	for _, n := range nodes {
		list, err := n.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " flags=P ") {
				id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
				if err := n.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				killed++
			}
		}
	}
	if killed != 1 {
		t.Fatalf("found %d pub/sub connections of the client; want 1", killed)
	}
	close(release)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Outcome still waiting 10s after the task ended; the end announced during the reconnect was lost")
	}
}

// An Outcome call that gives up does not give a lifetime to the record that
// carries a task's continuations (it once did, and the continuation was lost).
func TestOutcomeGivesNoLifetimeToContinuationRecord(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	h, _ := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue})
	next, err := h.ContinueWith(ctx, NoteArgs{Msg: "after"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, _ = h.Outcome(octx)
	cancel()
	key := h.ID()[len(b.queue)+1:]
	// The record carries the continuation flag: watching must not give it
	// a lifetime.
	if ttl := b.env.RDB.PTTL(ctx, q.Task(key)).Val(); ttl >= 0 {
		t.Fatalf("got TTL %v on the record of a task with a continuation; want none", ttl)
	}
	ran := make(chan struct{}, 1)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) { return UploadResult{}, nil })
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) { ran <- struct{}{}; return struct{}{}, nil })
	})
	if _, err := next.Outcome(ctx); err != nil {
		st, _ := next.State(ctx)
		hooks := b.env.RDB.ZRangeWithScores(ctx, q.Hooks(), 0, -1).Val()
		t.Fatalf("continuation: %v; state %s; hooks %v; conts %v", err, st, hooks, b.env.RDB.LRange(ctx, q.Conts(key), 0, -1).Val())
	}
	<-ran
}

// A continuation a worker ends without a run (its parent did not succeed)
// is kept for the worker's Config.Retention.
func TestSweptContinuationKeptForWorkerRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	h, err := b.c.Enqueue(ctx, UploadArgs{Path: "x"}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	next, err := h.ContinueWith(ctx, NoteArgs{Msg: "after"}, &client.ContinueOpts{OnlyOnSuccess: true, EnqueueOpts: client.EnqueueOpts{Queue: b.queue, ID: "next"}})
	if err != nil {
		t.Fatal(err)
	}
	const retention = time.Hour
	b.worker(t, &worker.Config{Retention: retention}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			return UploadResult{}, worker.Permanent(errors.New("no"))
		})
		worker.Handle(w, func(ctx context.Context, a NoteArgs) (struct{}, error) { return struct{}{}, nil })
	})
	if _, err := next.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("continuation of a dead parent: %v; want cancelled", err)
	}
	if ttl := b.env.RDB.PTTL(ctx, q.Task("next")).Val(); ttl <= 0 || ttl > retention {
		t.Fatalf("cancelled continuation kept for %v; want the worker's retention, %v", ttl, retention)
	}
}
