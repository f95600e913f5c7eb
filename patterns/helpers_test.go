package patterns_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Square is a member task: it returns N*N, fails permanently when N < 0, and
// blocks until cancelled when Block is set.
type Square struct {
	N     int
	Block bool
}

func (Square) Kind() string { return "square" }

// Sum is a join.
type Sum struct{ Tag string }

func (Sum) Kind() string { return "sum" }

type bundle struct {
	env   *testenv.Env
	c     *client.Client
	queue string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	env := testenv.Redis(t)
	return &bundle{env: env, c: testenv.Client(t, env), queue: testenv.Queue(t)}
}

// worker starts a worker on the test's queue (and extra queues), with
// register adding the handlers.
func (b *bundle) worker(t *testing.T, cfg *worker.Config, register func(w *worker.Worker)) *worker.Worker {
	t.Helper()
	return b.workerOn(t, b.env.RDB, cfg, register)
}

// workerOn is worker on a Redis client of the test's choosing.
func (b *bundle) workerOn(t *testing.T, rdb redis.UniversalClient, cfg *worker.Config, register func(w *worker.Worker)) *worker.Worker {
	t.Helper()
	return testenv.StartWorker(t, rdb, b.queue, cfg, register, true)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func square(ctx context.Context, a Square) (int, error) {
	if a.Block {
		<-ctx.Done()
		return 0, context.Cause(ctx)
	}
	if a.N < 0 {
		return 0, worker.Permanent(errNegative)
	}
	return a.N * a.N, nil
}

type negErr struct{}

func (negErr) Error() string { return "negative" }

var errNegative = negErr{}

func squares(queue string, ns ...int) []client.Spec {
	specs := make([]client.Spec, len(ns))
	for i, n := range ns {
		specs[i] = client.Spec{Args: Square{N: n}, Opts: &client.EnqueueOpts{Queue: queue}}
	}
	return specs
}
