package patterns_test

import (
	"context"
	"crypto/sha1"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Spread's members are due evenly over the window, by Redis' clock, and none
// enters the stream before its due time. The times are Redis': the due
// times the client hands enqueue.lua, read off the wire, and the stream
// entry ids of the members (when they were moved in). How late a member
// enters after its due time is reported, not bounded: on a busy machine the
// coordinator's wake-up waits for a CPU, and the library promises no
// latency.
func TestSpreadStartsEvenly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rdb := testenv.NewEnvClient(b.env)
	t.Cleanup(func() { _ = rdb.Close() })
	dues := &dueLog{due: map[string]int64{}}
	rdb.AddHook(dues)
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	co, err := coordinator.New(context.Background(), b.env.RDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = co.Stop(context.Background()) })
	var mu sync.Mutex
	runs := map[int]int{}
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			mu.Lock()
			runs[a.N]++
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
	g, err := patterns.Spread(ctx, c, squares(b.queue, ns...), within, nil)
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
	for i := range n {
		if runs[i] != 1 {
			t.Errorf("member %d ran %d times", i, runs[i])
		}
	}
	late := checkSpread(t, b, g, within, dues)
	t.Logf("latest entry into the stream: %v after its due time", slices.Max(late))
}

// checkSpread checks a Spread group's members against its promise, by Redis'
// clock: member i is due within/n·i after member 0 (dues holds the due times
// the client sent) and entered the stream no earlier than that. It returns
// how long after its due time each member entered.
func checkSpread(t *testing.T, b *bundle, g *patterns.Group, within time.Duration, dues *dueLog) []time.Duration {
	t.Helper()
	ctx := ctxT(t)
	members, err := g.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := len(members)
	var first int64
	late := make([]time.Duration, n)
	for i, m := range members {
		key := strings.TrimPrefix(m.ID(), b.queue+"/")
		st, err := store.State(ctx, b.env.RDB, keys.ForQueue(b.queue), key, "")
		if err != nil {
			t.Fatal(err)
		}
		entered, err := strconv.ParseInt(strings.SplitN(st.EntryID, "-", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("member %d: entry id %q: %v", i, st.EntryID, err)
		}
		due, ok := dues.get(key)
		if !ok {
			t.Fatalf("member %d (%s) was not enqueued with a due time", i, key)
		}
		if i == 0 {
			first = due
		}
		// Each due time is rounded down to the millisecond on its own.
		if want := first + (time.Duration(i) * within / time.Duration(n)).Milliseconds(); due < want-1 || due > want+1 {
			t.Errorf("member %d is due at %d, %d ms after the first, want %d ms", i, due, due-first, want-first)
		}
		if entered < due {
			t.Errorf("member %d entered the stream at %d, %d ms before its due time", i, entered, due-entered)
		}
		late[i] = time.Duration(entered-due) * time.Millisecond
	}
	return late
}

// dueLog is a go-redis hook that records the due time of each keyed task
// that enqueue.lua is asked to add, by task key.
type dueLog struct {
	mu  sync.Mutex
	due map[string]int64
}

func (l *dueLog) get(key string) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.due[key]
	return d, ok
}

func (l *dueLog) note(cmd redis.Cmder) {
	args := cmd.Args()
	if len(args) < 3 || !strings.EqualFold(fmt.Sprint(args[0]), "evalsha") || fmt.Sprint(args[1]) != script.Enqueue.Hash() {
		if len(args) < 3 || !strings.EqualFold(fmt.Sprint(args[0]), "eval") || fmt.Sprintf("%x", sha1.Sum([]byte(fmt.Sprint(args[1])))) != script.Enqueue.Hash() {
			return
		}
	}
	nk, _ := strconv.Atoi(fmt.Sprint(args[2]))
	argv := args[3+nk:]
	// ARGV[3] n, then six values per task: key, envelope, group, hold,
	// due, partition key.
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 3; i+6 <= len(argv); i += 6 {
		if key := fmt.Sprint(argv[i]); key != "" {
			d, _ := strconv.ParseInt(fmt.Sprint(argv[i+4]), 10, 64)
			l.due[key] = d
		}
	}
}

func (l *dueLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *dueLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.note(cmd)
		return next(ctx, cmd)
	}
}

func (l *dueLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			l.note(c)
		}
		return next(ctx, cmds)
	}
}

// A coordinator SIGKILLed in the middle of a Spread, and another started:
// every member starts once, each near its own slot (no bunching of the
// ones due while no coordinator ran). Real Redis, a Redis database of its
// own (another test's coordinators would serve this queue).
func TestSpreadCoordinatorKilled(t *testing.T) {
	testenv.RequireReal(t)
	// A database of its own on a single server; in the cluster pass a
	// miniredis of its own (IsolatedRedis).
	env := testenv.IsolatedRedis(t, isolatedDB)
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	dues := &dueLog{due: map[string]int64{}}
	rdb.AddHook(dues)
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	b := &bundle{env: env, c: c, queue: testenv.Queue(t)}
	// startCoord starts a coordinator process and returns once it runs.
	startCoord := func() *fleetProc {
		procs := startFleet(t, env, b.queue, 1, time.Second, "ASYNC_TEST_SUBPROCESS=coordinator", envFleetDB+"="+strconv.Itoa(env.DB))
		for pid, p := range procs {
			testenv.Eventually(t, 20*time.Second, "the coordinator process to start", func() bool {
				n, err := env.RDB.Exists(context.Background(), coordUpKey(pid)).Result()
				return err == nil && n == 1
			})
			return p
		}
		return nil
	}
	first := startCoord()
	var mu sync.Mutex
	starts := map[int]int{}
	started := make(chan int, 100)
	b.worker(t, &worker.Config{Concurrency: 8}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			mu.Lock()
			starts[a.N]++
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
	g, err := patterns.Spread(ctx, b.c, squares(b.queue, ns...), within, nil)
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
		if starts[i] != 1 {
			t.Errorf("member %d started %d times", i, starts[i])
		}
	}
	// On schedule: the members' due times stand, and none entered the
	// stream early, the ones due while no coordinator ran included. How late
	// they entered is reported (the library promises no latency on a busy
	// machine).
	late := checkSpread(t, b, g, within, dues)
	t.Logf("coordinator killed at %v, the new one up at %v; entries after their due times: %v", killed.Sub(begin), up.Sub(begin), late)
}
