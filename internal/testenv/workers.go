package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/worker"
)

// Client returns a client on env's Redis, closed at the end of t.
func Client(t testing.TB, env *Env) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// StartWorker starts a worker on rdb with test defaults (queue when
// cfg.Queues is unset, 50 ms blocking reads, 5 ms retry backoff), register
// adding its handlers. It is stopped at the end of t: with StopAndCancel
// when cancel is set (handlers that block until cancelled), else with Stop.
func StartWorker(t testing.TB, rdb redis.UniversalClient, queue string, cfg *worker.Config, register func(w *worker.Worker), cancel bool) *worker.Worker {
	t.Helper()
	if cfg == nil {
		cfg = &worker.Config{}
	}
	if cfg.Queues == nil {
		cfg.Queues = map[string]int{queue: 1}
	}
	if cfg.BlockTimeout == 0 {
		cfg.BlockTimeout = 50 * time.Millisecond
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(int) time.Duration { return 5 * time.Millisecond }
	}
	w, err := worker.New(context.Background(), rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	register(w)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		stop := w.Stop
		if cancel {
			stop = w.StopAndCancel
		}
		if err := stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return w
}

// StartCoordinators starts n coordinators on env's Redis, each on a client
// of its own (as separate processes would be), stopped at the end of t.
func StartCoordinators(t testing.TB, env *Env, n int) []*coordinator.Coordinator {
	t.Helper()
	var cos []*coordinator.Coordinator
	for i := 0; i < n; i++ {
		rdb := NewEnvClient(env)
		co, err := coordinator.New(context.Background(), rdb, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := co.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := co.Stop(ctx); err != nil {
				t.Error(err)
			}
			_ = rdb.Close()
		})
		cos = append(cos, co)
	}
	return cos
}
