package patterns_test

// Groups across worker processes on real Redis. The test binary re-executes
// itself with ASYNC_TEST_SUBPROCESS=fleet; the subprocess runs one worker
// whose "slot" handler records in Redis which members run at once.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// Slot is a member that records its run: it adds its task id to a running
// set and keeps the largest size seen, works WorkMs, and removes itself.
// With Hold set, its first delivery announces itself and blocks (the test
// kills that process).
type Slot struct {
	N      int
	WorkMs int
	Hold   bool
	Record bool // append the Redis times of the tokens taken so far (see fleetMain) to the starts list
}

func (Slot) Kind() string { return "slot" }

const (
	envFleetAddr  = "FLEET_REDIS_ADDR"
	envFleetQueue = "FLEET_QUEUE"
	envFleetLease = "FLEET_LEASE_MS"
	envFleetLimit = "FLEET_KIND_LIMIT" // Config.KindLimits["slot"], when set
	envFleetRate  = "FLEET_RATE"       // "<rate per second>,<burst>": Config.RateLimits for keys "acc:..."
	envFleetDB    = "FLEET_DB"         // database number (coordinator role)
)

// fleetKeys are the recording keys of a queue's test.
func fleetKeys(queue string) (running, maxKey, holding string) {
	p := "fleettest:{q:" + queue + "}:"
	return p + "running", p + "max", p + "holding"
}

func startsKey(queue string) string { return "fleettest:{q:" + queue + "}:starts" }

// enterScript adds a member to the running set and raises the maximum.
var enterScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n`)

func init() {
	testenv.SetSubprocessMain(fleetMain)
}

func fleetMain(role string) {
	if role == "coordinator" {
		coordinatorMain()
		return
	}
	if f := batchRoles[role]; f != nil {
		f()
		return
	}
	if role != "fleet" {
		fmt.Fprintln(os.Stderr, "unknown role", role)
		os.Exit(3)
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(4)
	}()
	time.AfterFunc(2*time.Minute, func() { os.Exit(5) })
	queue := os.Getenv(envFleetQueue)
	leaseMs, _ := strconv.Atoi(os.Getenv(envFleetLease))
	rdb := testenv.NewClient(os.Getenv(envFleetAddr))
	running, maxKey, holding := fleetKeys(queue)
	var tokens *testenv.TokenLog
	cfg := &worker.Config{
		Queues:       map[string]int{queue: 1},
		Concurrency:  8,
		Lease:        time.Duration(leaseMs) * time.Millisecond,
		BlockTimeout: 100 * time.Millisecond,
	}
	if n, _ := strconv.Atoi(os.Getenv(envFleetLimit)); n > 0 {
		cfg.KindLimits = map[string]int{"slot": n}
	}
	if v := os.Getenv(envFleetRate); v != "" {
		var rate, burst int
		if _, err := fmt.Sscanf(v, "%d,%d", &rate, &burst); err != nil {
			fmt.Fprintln(os.Stderr, envFleetRate, err)
			os.Exit(3)
		}
		cfg.RateLimits = []worker.RateLimit{{KeyPrefix: "acc:", Limit: ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst}}}
		cfg.Concurrency = 64
		tokens = testenv.RecordTokens(rdb)
	}
	w, err := worker.New(context.Background(), rdb, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	worker.Handle(w, func(ctx context.Context, a Slot) (int, error) {
		tk, _ := worker.TaskFromContext(ctx)
		if a.Record {
			// The tokens this process took up to now, its own among them:
			// "early,late" per token, "refund,early,late" per refund.
			var vals []any
			for _, tk := range tokens.Drain() {
				v := fmt.Sprintf("%d,%d", tk.Early, tk.Late)
				if tk.Err != nil {
					v = "unknown: " + tk.Err.Error()
				} else if tk.Refund {
					v = "refund," + v
				}
				vals = append(vals, v)
			}
			if len(vals) == 0 {
				return a.N, nil
			}
			return a.N, rdb.RPush(ctx, startsKey(queue), vals...).Err()
		}
		me := strconv.Itoa(os.Getpid()) + "|" + tk.ID // this attempt, in this process
		if err := enterScript.Run(ctx, rdb, []string{running, maxKey}, me).Err(); err != nil {
			return 0, err
		}
		// Only the first run holds (a park, e.g. by a limit, starts the
		// delivery count again, so that cannot tell).
		if a.Hold {
			if first, err := rdb.SetNX(ctx, holding+":once", 1, time.Minute).Result(); err == nil && first {
				rdb.RPush(ctx, holding, strconv.Itoa(os.Getpid())+" "+tk.ID)
				select {} // the test kills us
			}
		}
		if err := work(ctx, time.Duration(a.WorkMs)*time.Millisecond); err != nil {
			return 0, err
		}
		if err := rdb.SRem(ctx, running, me).Err(); err != nil {
			return 0, err
		}
		return a.N, nil
	})
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	select {}
}

func coordUpKey(pid int) string { return "fleettest:coordinator-up:" + strconv.Itoa(pid) }

// coordinatorMain runs one coordinator until killed.
func coordinatorMain() {
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(4)
	}()
	time.AfterFunc(2*time.Minute, func() { os.Exit(5) })
	db, _ := strconv.Atoi(os.Getenv(envFleetDB))
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(envFleetAddr), DB: db})
	co, err := coordinator.New(context.Background(), rdb, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if err := co.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	// The test waits for this key to know we are up.
	if err := rdb.Set(context.Background(), coordUpKey(os.Getpid()), 1, time.Minute).Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	select {}
}

type fleetProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startFleet starts n worker processes on queue.
func startFleet(t *testing.T, env *testenv.Env, queue string, n int, lease time.Duration, extraEnv ...string) map[int]*fleetProc {
	t.Helper()
	procs := map[int]*fleetProc{}
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ASYNC_TEST_SUBPROCESS=fleet",
			envFleetAddr+"="+env.Addr, envFleetQueue+"="+queue,
			envFleetLease+"="+strconv.FormatInt(lease.Milliseconds(), 10))
		cmd.Env = append(cmd.Env, extraEnv...)
		var out lockedBuf
		cmd.Stdout, cmd.Stderr = &out, &out
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &fleetProc{cmd: cmd, exited: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(p.exited) }()
		procs[cmd.Process.Pid] = p
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-p.exited
			_ = stdin.Close()
			if t.Failed() {
				t.Logf("worker process %d:\n%s", cmd.Process.Pid, out.String())
			}
		})
	}
	return procs
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// forgetProcess takes the attempts of a killed process out of the running
// set: it runs nothing any more (its slots free as their leases end).
func forgetProcess(t *testing.T, rdb redis.UniversalClient, queue string, pid int) {
	t.Helper()
	running, _, _ := fleetKeys(queue)
	ms, err := rdb.SMembers(context.Background(), running).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m, strconv.Itoa(pid)+"|") {
			if err := rdb.SRem(context.Background(), running, m).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func slots(queue string, n, workMs int) []client.Spec {
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: Slot{N: i, WorkMs: workMs}, Opts: &client.EnqueueOpts{Queue: queue}}
	}
	return specs
}

func cleanFleetKeys(t *testing.T, rdb redis.UniversalClient, queue string) {
	running, maxKey, holding := fleetKeys(queue)
	t.Cleanup(func() { _ = rdb.Del(context.Background(), running, maxKey, holding, holding+":once").Err() })
}

func TestInvokeAllAcrossProcesses(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	cleanFleetKeys(t, b.env.RDB, b.queue)
	startFleet(t, b.env, b.queue, 3, 5*time.Second)
	ctx := ctxT(t)
	g, err := patterns.InvokeAll(ctx, b.c, slots(b.queue, 60, 20), 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := patterns.Results[int](ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range res {
		if v != i {
			t.Fatalf("result %d is %d", i, v)
		}
	}
	_, maxKey, _ := fleetKeys(b.queue)
	m, err := b.env.RDB.Get(ctx, maxKey).Int()
	if err != nil || m != 4 {
		t.Errorf("most members running at once across 3 processes: %d (%v), want 4", m, err)
	}
}

// A worker process killed while it holds a slot: its member runs again once
// the lease ended, the limit holds throughout, and the group finishes.
func TestInvokeAllSlotReturnsAfterKill(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	cleanFleetKeys(t, b.env.RDB, b.queue)
	lease := time.Second
	procs := startFleet(t, b.env, b.queue, 3, lease)
	ctx := ctxT(t)
	specs := slots(b.queue, 30, 20)
	specs[2].Args = Slot{N: 2, WorkMs: 20, Hold: true}
	g, err := patterns.InvokeAll(ctx, b.c, specs, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, maxKey, holding := fleetKeys(b.queue)
	v, err := b.env.RDB.BLPop(ctx, 20*time.Second, holding).Result()
	if err != nil {
		t.Fatalf("no member held its slot: %v", err)
	}
	pidStr, _, _ := strings.Cut(v[1], " ")
	pid, _ := strconv.Atoi(pidStr)
	p := procs[pid]
	if p == nil {
		t.Fatalf("holding pid %d is not ours", pid)
	}
	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	forgetProcess(t, b.env.RDB, b.queue, pid)
	res, err := patterns.Results[int](ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if res[2] != 2 {
		t.Errorf("the killed member's result: %d", res[2])
	}
	if d := time.Since(killed); d < lease/2 {
		t.Errorf("group ended %v after the kill, before the lease could end", d)
	}
	hs, err := g.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := hs[2].Info(ctx)
	if err != nil || info.Attempt != 1 {
		t.Logf("info %+v, %v", info, err)
	}
	m, err := b.env.RDB.Get(ctx, maxKey).Int()
	if err != nil || m > 4 {
		t.Errorf("most members running at once: %d (%v), want at most 4", m, err)
	}
}

// dropHeartbeats fails every heartbeat a worker sends, so its leases lapse
// as if it were stuck.
type dropHeartbeats struct{}

func (dropHeartbeats) DialHook(next redis.DialHook) redis.DialHook { return next }
func (dropHeartbeats) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (dropHeartbeats) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) > 1 {
			body, _ := args[1].(string)
			if body == script.Heartbeat.Hash() || strings.Contains(body, "heartbeat.lua") {
				err := errors.New("heartbeat dropped by the test")
				cmd.SetErr(err)
				return err
			}
		}
		return next(ctx, cmd)
	}
}

// A fleet-wide kind limit across 3 worker processes: never exceeded, reached,
// and the slot of a process killed while it held one returns after its
// lease (its task runs again and every task finishes).
func TestKindLimitAcrossProcessesSurvivesKill(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	cleanFleetKeys(t, b.env.RDB, b.queue)
	lease := time.Second
	procs := startFleet(t, b.env, b.queue, 3, lease, envFleetLimit+"=3")
	ctx := ctxT(t)
	specs := slots(b.queue, 40, 20)
	specs[5].Args = Slot{N: 5, WorkMs: 20, Hold: true}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	_, maxKey, holding := fleetKeys(b.queue)
	v, err := b.env.RDB.BLPop(ctx, 20*time.Second, holding).Result()
	if err != nil {
		t.Fatalf("no task held its slot: %v", err)
	}
	pidStr, _, _ := strings.Cut(v[1], " ")
	pid, _ := strconv.Atoi(pidStr)
	p := procs[pid]
	if p == nil {
		t.Fatalf("holding pid %d is not ours", pid)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	forgetProcess(t, b.env.RDB, b.queue, pid)
	for i, h := range hs {
		if got, err := client.Result[int](ctx, h); err != nil || got != i {
			t.Fatalf("task %d: %d, %v", i, got, err)
		}
	}
	m, err := b.env.RDB.Get(ctx, maxKey).Int()
	if err != nil || m != 3 {
		t.Errorf("most limited tasks running at once across 3 processes: %d (%v), want 3", m, err)
	}
}

// A join runs exactly once when a member is delivered twice: the first
// attempt outlives its lease (its heartbeats fail), another attempt runs and
// succeeds, and the stuck one's late success is refused.
func TestJoinOnceUnderRedelivery(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	js := newJoins()
	secondDone := make(chan struct{})
	var firstResult error
	firstReturned := make(chan struct{})
	rdb := testenv.NewClient(b.env.Addr)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(dropHeartbeats{})
	b.workerOn(t, rdb, &worker.Config{Lease: 300 * time.Millisecond, Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Square) (int, error) {
			tk, _ := worker.TaskFromContext(ctx)
			if a.N == 3 && tk.Deliveries == 1 {
				<-secondDone // stuck past the lease, deaf to ctx
				defer close(firstReturned)
				firstResult = context.Cause(ctx)
				return 9, nil
			}
			if a.N == 3 {
				defer close(secondDone)
			}
			return a.N * a.N, nil
		})
		worker.Handle(w, js.handler)
	})
	ctx := ctxT(t)
	g, err := patterns.ForkJoin(ctx, b.c, squares(b.queue, 1, 2, 3), &client.Spec{Args: Sum{Tag: "r"}, Opts: &client.EnqueueOpts{Queue: b.queue}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	js.wait(t, ctx, "r")
	<-firstReturned
	if !errors.Is(firstResult, worker.ErrLeaseLost) {
		t.Errorf("the stuck attempt's ctx cause: %v", firstResult)
	}
	// Let the late completion be tried, then check nothing doubled.
	hs, err := g.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := hs[2]
	testenv.Eventually(t, 5*time.Second, "member settled", func() bool {
		n, _ := b.env.RDB.XPending(ctx, "async:{q:"+b.queue+"}:stream", "workers").Result()
		return n != nil && n.Count == 0
	})
	if v, err := client.Result[int](ctx, h); err != nil || v != 9 {
		t.Errorf("member: %d, %v", v, err)
	}
	p, _ := g.Progress(ctx)
	if p.Succeeded != 3 || p.Failed != 0 {
		t.Errorf("progress %+v", p)
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.runs["r"] != 1 {
		t.Errorf("join ran %d times", js.runs["r"])
	}
}

// Noop is a member that does nothing.
type Noop struct{}

func (Noop) Kind() string { return "noop" }

func TestForkJoinHundredThousand(t *testing.T) {
	testenv.RequireReal(t)
	b := setup(t)
	js := newJoins()
	for i := 0; i < 2; i++ {
		b.worker(t, &worker.Config{Concurrency: 200}, func(w *worker.Worker) {
			worker.Handle(w, func(context.Context, Noop) (struct{}, error) { return struct{}{}, nil })
			worker.Handle(w, func(ctx context.Context, a Sum) (int, error) {
				outs, err := patterns.JoinOutcomes(ctx)
				if err != nil {
					return 0, err
				}
				js.mu.Lock()
				js.runs[a.Tag]++
				js.mu.Unlock()
				js.done <- a.Tag
				return len(outs), nil
			})
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 100_000
	specs := make([]client.Spec, n)
	opts := &client.EnqueueOpts{Queue: b.queue, Retention: 10 * time.Minute}
	for i := range specs {
		specs[i] = client.Spec{Args: Noop{}, Opts: opts}
	}
	start := time.Now()
	g, err := patterns.ForkJoin(ctx, b.c, specs, &client.Spec{Args: Sum{Tag: "big"}, Opts: opts}, &patterns.GroupOpts{Retention: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	enq := time.Since(start)
	js.wait(t, ctx, "big")
	t.Logf("100k members: enqueued in %v, join started after %v", enq, time.Since(start))
	p, err := g.Progress(ctx)
	if err != nil || p.Total != n || p.Succeeded != n || p.State != patterns.GroupSucceeded {
		t.Fatalf("progress %+v, %v", p, err)
	}
	jh, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seen, err := client.Result[int](ctx, jh); err != nil || seen != n {
		t.Errorf("join read %d outcomes, %v", seen, err)
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.runs["big"] != 1 {
		t.Errorf("join ran %d times", js.runs["big"])
	}
}

// A rate of 200/s (burst 20) over one key, taken by 4 worker processes: no
// 100 ms holds more than 20 plus the burst, nor the first 10 s more than
// 2,000 plus the burst. The times are the tokens', by Redis' clock: each
// worker process logs its ratelimit calls bracketed by two readings of
// Redis' clock (testenv.RecordTokens), and a window counts the tokens
// certainly inside it. How many tokens the first 10 s held is reported: the
// limiter promises at most the rate, and how close a fleet comes to it
// depends on how fast its processes ask, which a busy machine slows.
func TestRateLimitAccuracyAcrossProcesses(t *testing.T) {
	testenv.RequireReal(t)
	b := setup(t)
	const rate, burst = 200, 20
	sk := startsKey(b.queue)
	t.Cleanup(func() { _ = b.env.RDB.Del(context.Background(), sk).Err() })
	startFleet(t, b.env, b.queue, 4, 5*time.Second, fmt.Sprintf("%s=%d,%d", envFleetRate, rate, burst))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 2300 // 11.4 s of tokens
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: Slot{N: i, Record: true}, Opts: &client.EnqueueOpts{Queue: b.queue, RateKey: "acc:" + b.queue}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	vals, err := b.env.RDB.LRange(ctx, sk, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	type token struct{ early, late int64 }
	var tokens []token
	for _, v := range vals {
		var tk token
		if _, err := fmt.Sscanf(v, "%d,%d", &tk.early, &tk.late); err != nil {
			t.Fatalf("token %q: want one taken at a known time (no refunds here): %v", v, err)
		}
		tokens = append(tokens, tk)
	}
	if len(tokens) != n {
		t.Fatalf("%d tokens logged for %d tasks", len(tokens), n)
	}
	sort.Slice(tokens, func(a, b int) bool { return tokens[a].early < tokens[b].early })
	// inside counts the tokens certainly taken within [from, from+us].
	inside := func(i int, us int64) int {
		c := 0
		for j := i; j < len(tokens) && tokens[j].early <= tokens[i].early+us; j++ {
			if tokens[j].late <= tokens[i].early+us {
				c++
			}
		}
		return c
	}
	t0 := tokens[0].early
	if got, bound := inside(0, 10_000_000), 10*rate+burst; got > bound {
		t.Errorf("%d tokens certainly within the first 10 s, want at most %d", got, bound)
	}
	in10 := sort.Search(len(tokens), func(i int) bool { return tokens[i].early > t0+10_000_000 })
	worst, at := 0, 0
	for i := range tokens {
		if c := inside(i, 100_000); c > worst {
			worst, at = c, i
		}
	}
	if bound := rate/10 + burst; worst > bound {
		t.Errorf("%d tokens certainly within the 100 ms from %d µs after the first, want at most %d", worst, tokens[at].early-t0, bound)
	}
	t.Logf("tokens in the first 10 s: %d (the rate allows %d), busiest 100 ms: %d (bound %d)", in10, 10*rate+burst, worst, rate/10+burst)
}
