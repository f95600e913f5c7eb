package patterns_test

import (
	"context"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

func TestSpreadStartsEvenly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	co, err := coordinator.New(b.env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop(context.Background()) })
	var mu sync.Mutex
	var starts []time.Time
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return a.N * a.N, nil
		})
	})
	ctx := ctxT(t)
	const n, within = 10, 500 * time.Millisecond
	ns := make([]int, n)
	for i := range ns {
		ns[i] = i
	}
	begin := time.Now()
	g, err := patterns.Spread(ctx, b.c, within, squares(b.queue, ns...))
	if err != nil {
		t.Fatal(err)
	}
	res, err := patterns.Results[int](ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res {
		if v != i*i {
			t.Fatalf("result %d: %d", i, v)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(starts, func(a, b int) bool { return starts[a].Before(starts[b]) })
	for i, s := range starts {
		due := time.Duration(i) * within / n
		if d := s.Sub(begin); d < due-5*time.Millisecond || d > due+150*time.Millisecond {
			t.Errorf("start %d at %v, due at %v", i, d, due)
		}
	}
}

// A coordinator SIGKILLed in the middle of a Spread, and another started:
// every member starts once, each near its own slot (no bunching of the
// ones due while no coordinator ran). Real Redis, a Redis database of its
// own (another test's coordinators would serve this queue).
func TestSpreadCoordinatorKilled(t *testing.T) {
	asynctest.RequireReal(t)
	// A database of its own on a single server; in the cluster pass a
	// miniredis of its own (IsolatedRedis).
	env := asynctest.IsolatedRedis(t, isolatedDB)
	b := &bundle{env: env, c: asynctest.Client(t, env), queue: asynctest.Queue(t)}
	// startCoord starts a coordinator process and returns once it runs.
	startCoord := func() *fleetProc {
		procs := startFleet(t, env, b.queue, 1, time.Second, "ASYNC_TEST_SUBPROCESS=coordinator", envFleetDB+"="+strconv.Itoa(env.DB))
		for pid, p := range procs {
			asynctest.Eventually(t, 20*time.Second, "the coordinator process to start", func() bool {
				n, err := env.RDB.Exists(context.Background(), coordUpKey(pid)).Result()
				return err == nil && n == 1
			})
			return p
		}
		return nil
	}
	first := startCoord()
	var mu sync.Mutex
	starts := map[int][]time.Time{}
	started := make(chan int, 100)
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			mu.Lock()
			starts[a.N] = append(starts[a.N], time.Now())
			mu.Unlock()
			started <- a.N
			return a.N * a.N, nil
		})
	})
	ctx := ctxT(t)
	const n, within = 20, 4 * time.Second
	ns := make([]int, n)
	for i := range ns {
		ns[i] = i
	}
	begin := time.Now()
	g, err := patterns.Spread(ctx, b.c, within, squares(b.queue, ns...))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("members did not start")
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	killed := time.Now()
	startCoord()
	up := time.Now()
	if _, err := patterns.Results[int](ctx, g); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		if len(starts[i]) != 1 {
			t.Errorf("member %d started %d times", i, len(starts[i]))
			continue
		}
		due := time.Duration(i) * within / n
		// Generous for a loaded CI machine; the benchmark measures p99.
		// Members due while no coordinator ran may wait for the new one
		// (or a worker's own forwarding) to come up.
		late := due + 250*time.Millisecond
		if at := begin.Add(due); at.After(killed) && at.Before(up) {
			late = up.Sub(begin) + 250*time.Millisecond
		}
		if d := starts[i][0].Sub(begin); d < due-5*time.Millisecond || d > late {
			t.Errorf("member %d started at %v, due at %v (coordinator killed at %v, the new one up at %v)", i, d, due, killed.Sub(begin), up.Sub(begin))
		}
	}
}
