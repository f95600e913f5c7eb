package worker_test

// Task semantics across processes (issue 3): cancelling a task that runs in
// another worker process, registering continuations from a third process
// while the parent completes, continuations of a redelivered parent, and a
// chain of continuations. The tests after those pin three bugs the first
// ones led to (fixed in 76d6c92): a cancel request landing between a failed
// attempt and its record, one left on a dead task, and a heartbeat racing
// the dispatch of a keyed task.
//
// The subprocess roles of this file (xp*Main) run from subprocessMain
// (subprocess_test.go) through extraRoles; they talk to the test through
// Redis lists under xpKey, like the recovery tests' roles do.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Task kinds of this file; the xp prefix keeps them apart from the kinds of
// the other test files of the package.
type xpBlock struct{ N int }

func (xpBlock) Kind() string { return "xp.block" }

type xpParent struct{ N int }

func (xpParent) Kind() string { return "xp.parent" }

type xpCont struct{ N int }

func (xpCont) Kind() string { return "xp.cont" }

type xpChain struct{ I int }

func (xpChain) Kind() string { return "xp.chain" }

// xpParentResult says who ran a parent task.
type xpParentResult struct {
	By string
	N  int
}

// Subprocess roles of this file.
const (
	// roleXPCancel: the xp.block handler signals "started", waits until its
	// ctx ends, signals "report" with context.Cause(ctx) and returns that
	// cause. The worker retries after 5ms, so a retry would show at once as
	// another "started". It runs until killed.
	roleXPCancel = "xp.cancel"
	// roleXPParent: the xp.parent handler signals "started", waits (ignoring
	// its ctx) for an element of the "release" list, then returns a result
	// naming this process and signals "returning". It runs until killed.
	roleXPParent = "xp.parent"
	// roleXPParent1: roleXPParent that, once its first handler returned,
	// stops its worker (which records the outcome, or is fenced out),
	// signals "stopped" and exits 0.
	roleXPParent1 = "xp.parent1"
	// roleXPRegister: no worker; a client that takes registration commands
	// (xpRegCmd, JSON) from the "regcmd" list. For each it registers N
	// continuations on the parent, pushing i to the command's progress list
	// after the i-th, then signals "registered".
	roleXPRegister = "xp.register"
)

// Signal events of this file.
const (
	xpReady      = "ready"
	xpStarted    = "started"
	xpReport     = "report"
	xpReturning  = "returning"
	xpStopped    = "stopped"
	xpRegistered = "registered"
)

// xpSignal is one message from a subprocess of this file.
type xpSignal struct {
	Pid        int
	Task       string
	Attempt    int
	Deliveries int
	Cause      string // context.Cause(ctx) of the handler, if any
	Cancelled  bool   // errors.Is(context.Cause(ctx), worker.ErrCancelled)
	Registered int    // continuations registered by one command
	Running    int    // of those, how many saw the parent not ended yet right after registering
}

// xpRegCmd asks the register role for N continuations of kind xp.cont on
// Parent, in ContQueue, with ids Prefix-0 .. Prefix-(N-1).
type xpRegCmd struct {
	Parent    string
	ContQueue string
	Prefix    string
	N         int
	Progress  string // list the i-th registration's i is pushed to
}

// xpKey is a key of this file's tests on queue (hash-tagged like the queue).
func xpKey(queue, name string) string {
	return "xptest:{q:" + queue + "}:" + name
}

// xpSub is what every role of this file shares: a Redis client, a way to
// signal the test, and a way to give up.
type xpSub struct {
	role  string
	queue string
	rdb   redis.UniversalClient
	pid   int
	log   *slog.Logger
}

func newXPSub(role string) *xpSub {
	s := &xpSub{role: role, queue: os.Getenv(envQueue), pid: os.Getpid(),
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if s.queue == "" || os.Getenv(envAddr) == "" {
		s.fail("bad environment: %s=%q %s=%q", envQueue, s.queue, envAddr, os.Getenv(envAddr))
	}
	s.rdb = testenv.NewClient(os.Getenv(envAddr))
	return s
}

func (s *xpSub) fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "subprocess %s: "+format+"\n", append([]any{s.role}, args...)...)
	os.Exit(3)
}

func (s *xpSub) signal(event string, sig xpSignal) {
	sig.Pid = s.pid
	b, _ := json.Marshal(sig)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.rdb.RPush(ctx, xpKey(s.queue, event), b).Err(); err != nil {
		s.fail("signal %s: %v", event, err)
	}
}

// worker returns a worker of one slot on the role's queue, with the lease of
// the environment and a 5ms backoff.
func (s *xpSub) worker() *worker.Worker {
	leaseMs, err := strconv.Atoi(os.Getenv(envLease))
	if err != nil || leaseMs <= 0 {
		s.fail("bad %s=%q", envLease, os.Getenv(envLease))
	}
	w, err := worker.New(context.Background(), s.rdb, &worker.Config{
		Queues:       map[string]int{s.queue: 1},
		Lease:        time.Duration(leaseMs) * time.Millisecond,
		Concurrency:  1,
		FetchBatch:   1,
		BlockTimeout: 100 * time.Millisecond,
		Backoff:      func(int) time.Duration { return 5 * time.Millisecond },
		Logger:       s.log,
	})
	if err != nil {
		s.fail("new worker: %v", err)
	}
	return w
}

func (s *xpSub) start(w *worker.Worker) {
	if err := w.Start(context.Background()); err != nil {
		s.fail("start worker: %v", err)
	}
	s.signal(xpReady, xpSignal{})
}

func started(ctx context.Context) xpSignal {
	tk, _ := worker.TaskFromContext(ctx)
	return xpSignal{Task: tk.ID, Attempt: tk.Attempt, Deliveries: tk.Deliveries}
}

func xpCancelMain(role string) {
	s := newXPSub(role)
	w := s.worker()
	worker.Handle(w, func(ctx context.Context, a xpBlock) (struct{}, error) {
		sig := started(ctx)
		s.signal(xpStarted, sig)
		<-ctx.Done()
		cause := context.Cause(ctx)
		sig.Cause = cause.Error()
		sig.Cancelled = errors.Is(cause, worker.ErrCancelled)
		s.signal(xpReport, sig)
		return struct{}{}, cause
	})
	s.start(w)
	select {}
}

func xpParentMain(role string) {
	s := newXPSub(role)
	w := s.worker()
	handled := make(chan struct{}, 1)
	worker.Handle(w, func(ctx context.Context, a xpParent) (xpParentResult, error) {
		sig := started(ctx)
		s.signal(xpStarted, sig)
		// Wait for the test, whatever happens to ctx: a paused process
		// returns its result after its lease ended, to be fenced out.
		bctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.rdb.BLPop(bctx, 30*time.Second, xpKey(s.queue, "release")).Err(); err != nil {
			s.fail("wait for release of %s: %v", sig.Task, err)
		}
		if c := context.Cause(ctx); c != nil {
			sig.Cause = c.Error()
		}
		s.signal(xpReturning, sig)
		select {
		case handled <- struct{}{}:
		default:
		}
		return xpParentResult{By: "sub-" + strconv.Itoa(s.pid), N: a.N}, nil
	})
	s.start(w)
	if role != roleXPParent1 {
		select {}
	}
	<-handled
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		s.fail("stop worker: %v", err)
	}
	s.signal(xpStopped, xpSignal{})
}

func xpRegisterMain(role string) {
	s := newXPSub(role)
	c, err := client.New(context.Background(), s.rdb, &client.Config{Logger: s.log})
	if err != nil {
		s.fail("new client: %v", err)
	}
	s.signal(xpReady, xpSignal{})
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		v, err := s.rdb.BLPop(ctx, time.Minute, xpKey(s.queue, "regcmd")).Result()
		cancel()
		if err != nil {
			s.fail("wait for a command: %v", err)
		}
		var cmd xpRegCmd
		if err := json.Unmarshal([]byte(v[1]), &cmd); err != nil {
			s.fail("decode command %q: %v", v[1], err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		h, err := c.Task(cmd.Parent)
		if err != nil {
			s.fail("task %s: %v", cmd.Parent, err)
		}
		sig := xpSignal{Task: cmd.Parent}
		for i := 0; i < cmd.N; i++ {
			id := cmd.Prefix + "-" + strconv.Itoa(i)
			if _, err := h.ContinueWith(ctx, xpCont{N: i}, &client.ContinueOpts{
				EnqueueOpts: client.EnqueueOpts{Queue: cmd.ContQueue, ID: id, MaxAttempts: 3},
			}); err != nil {
				s.fail("continue %s with %s: %v", cmd.Parent, id, err)
			}
			sig.Registered++
			if err := s.rdb.RPush(ctx, cmd.Progress, i+1).Err(); err != nil {
				s.fail("progress: %v", err)
			}
			if st, err := h.State(ctx); err == nil && !st.Final() {
				sig.Running++
			}
		}
		cancel()
		s.signal(xpRegistered, sig)
	}
}

// Test side.

// xpEnv is one test's view of this file's signals.
type xpEnv struct {
	t     *testing.T
	b     *bundle
	extra []string // keys to delete at the end
}

func newXPEnv(t *testing.T, b *bundle) *xpEnv {
	e := &xpEnv{t: t, b: b}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ks := append([]string{}, e.extra...)
		for _, ev := range []string{xpReady, xpStarted, xpReport, xpReturning, xpStopped, xpRegistered, "release", "regcmd", "count", "seen"} {
			ks = append(ks, xpKey(b.queue, ev))
		}
		_ = b.env.RDB.Del(ctx, ks...).Err()
	})
	return e
}

func (e *xpEnv) key(name string) string { return xpKey(e.b.queue, name) }

// tryWait waits (BLPOP) up to timeout for the next event signal; ok is false
// when none came.
func (e *xpEnv) tryWait(event string, timeout time.Duration) (xpSignal, bool) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	var v []string
	var err error
	if timeout < time.Second {
		// go-redis rounds a BLPOP timeout up to 1s; Redis itself takes
		// fractions of a second.
		v, err = e.b.env.RDB.Do(ctx, "BLPOP", e.key(event), strconv.FormatFloat(timeout.Seconds(), 'f', 3, 64)).StringSlice()
	} else {
		v, err = e.b.env.RDB.BLPop(ctx, timeout, e.key(event)).Result()
	}
	if errors.Is(err, redis.Nil) {
		return xpSignal{}, false
	}
	if err != nil {
		e.t.Fatalf("wait for %q signal: %v", event, err)
	}
	var s xpSignal
	if err := json.Unmarshal([]byte(v[1]), &s); err != nil {
		e.t.Fatalf("decode %q signal %q: %v", event, v[1], err)
	}
	return s, true
}

func (e *xpEnv) wait(event string, timeout time.Duration) xpSignal {
	e.t.Helper()
	s, ok := e.tryWait(event, timeout)
	if !ok {
		e.t.Fatalf("no %q signal from a subprocess within %v", event, timeout)
	}
	return s
}

func (e *xpEnv) push(name string, v any) {
	e.t.Helper()
	if err := e.b.env.RDB.RPush(context.Background(), e.key(name), v).Err(); err != nil {
		e.t.Fatalf("push to %s: %v", name, err)
	}
}

// contHandler registers the xp.cont handler that counts its runs per task
// id in the "count" hash and keeps what it saw of its parent in "seen".
func (e *xpEnv) contHandler(w *worker.Worker) {
	rdb := e.b.env.RDB
	count, seen := e.key("count"), e.key("seen")
	worker.Handle(w, func(ctx context.Context, a xpCont) (xpParentResult, error) {
		tk, _ := worker.TaskFromContext(ctx)
		pr, err := worker.ParentResult[xpParentResult](ctx)
		what := fmt.Sprintf("%s/%d", pr.By, pr.N)
		if err != nil {
			what = "error: " + err.Error()
		}
		if err := rdb.HIncrBy(ctx, count, tk.ID, 1).Err(); err != nil {
			return xpParentResult{}, err
		}
		if err := rdb.HSet(ctx, seen, tk.ID, what).Err(); err != nil {
			return xpParentResult{}, err
		}
		return pr, nil
	})
}

// runs returns how often the continuation id ran and what it saw.
func (e *xpEnv) runs(ctx context.Context, id string) (int, string) {
	e.t.Helper()
	n, err := e.b.env.RDB.HGet(ctx, e.key("count"), id).Int()
	if err != nil && !errors.Is(err, redis.Nil) {
		e.t.Fatal(err)
	}
	s, err := e.b.env.RDB.HGet(ctx, e.key("seen"), id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		e.t.Fatal(err)
	}
	return n, s
}

// outboxLen is the length of queue's continuation outbox.
func (e *xpEnv) outboxLen(ctx context.Context, queue string) int64 {
	e.t.Helper()
	n, err := e.b.env.RDB.XLen(ctx, keys.ForQueue(queue).Outbox()).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCancelRunningTaskInAnotherProcess(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	b := setup(t)
	e := newXPEnv(t, b)
	ctx := ctxFor(t, 60*time.Second)

	// A long lease: the heartbeat fallback (every Lease/4) could not meet
	// the bound below, only the control channel can.
	sub := startSubWorker(t, b, roleXPCancel, subConfig{Lease: 8 * time.Second})
	e.wait(xpReady, 15*time.Second)

	const rounds = 10
	var lat, afterRet []time.Duration
	var hs []*client.Handle
	for i := 0; i < rounds; i++ {
		h, err := b.c.Enqueue(ctx, xpBlock{N: i}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 5})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		st := e.wait(xpStarted, 15*time.Second)
		if st.Pid != sub.pid() || st.Task != h.ID() || st.Attempt != 1 {
			t.Fatalf("round %d: started signal %+v; want pid %d, task %s, attempt 1", i, st, sub.pid(), h.ID())
		}

		before := time.Now()
		state, err := h.Cancel(ctx)
		returned := time.Now()
		if err != nil {
			t.Fatalf("round %d: Cancel: %v", i, err)
		}
		rep := e.wait(xpReport, 5*time.Second)
		got := time.Since(before)
		lat = append(lat, got)
		afterRet = append(afterRet, time.Since(returned))
		if state != client.StateRunning {
			t.Fatalf("round %d: Cancel of a running task returned %q; want %q", i, state, client.StateRunning)
		}
		if rep.Task != h.ID() || rep.Pid != sub.pid() {
			t.Fatalf("round %d: report %+v; want task %s from pid %d", i, rep, h.ID(), sub.pid())
		}
		if !rep.Cancelled {
			t.Fatalf("round %d: the handler's ctx ended with cause %q; want worker.ErrCancelled", i, rep.Cause)
		}
		if got > 500*time.Millisecond {
			t.Fatalf("round %d: %v from Cancel to the subprocess' report; want < 500ms (goal 50ms)", i, got)
		}

		_, err = h.Outcome(ctx)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, client.ErrCancelled) {
			t.Fatalf("round %d: Outcome error %v; want one matching context.Canceled and client.ErrCancelled", i, err)
		}
		var te *client.TaskError
		if !errors.As(err, &te) || te.State != client.StateCancelled {
			t.Fatalf("round %d: Outcome error %#v; want a *client.TaskError in state cancelled", i, err)
		}
		in, err := h.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if in.State != client.StateCancelled || in.Attempt != 1 {
			t.Fatalf("round %d: Info state %q attempt %d; want cancelled after attempt 1", i, in.State, in.Attempt)
		}
	}

	// Not retried: the subprocess retries a failed attempt after 5ms, so a
	// retry would start well within this window.
	if st, ok := e.tryWait(xpStarted, 300*time.Millisecond); ok {
		t.Fatalf("a cancelled task started again: %+v", st)
	}
	for _, h := range hs {
		in, err := h.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if in.State != client.StateCancelled || in.Attempt != 1 {
			t.Fatalf("task %s: state %q attempt %d at the end; want cancelled after attempt 1", h.ID(), in.State, in.Attempt)
		}
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	t.Logf("cancel -> handler report across processes, %d rounds: min %v p50 %v max %v (all: %v); from Cancel's return: %v",
		rounds, sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1], lat, afterRet)
}

func TestContinuationRegisteredFromThirdProcessWhileParentCompletes(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	b := setup(t)
	e := newXPEnv(t, b)
	ctx := ctxFor(t, 90*time.Second)
	contQ := b.queue + "-c"
	const n = 20

	a := startSubWorker(t, b, roleXPParent, subConfig{Lease: 5 * time.Second})
	reg := startSubWorker(t, b, roleXPRegister, subConfig{Lease: 5 * time.Second})
	ready := map[int]bool{}
	for len(ready) < 2 {
		ready[e.wait(xpReady, 15*time.Second).Pid] = true
	}
	if !ready[a.pid()] || !ready[reg.pid()] {
		t.Fatalf("ready signals from %v; want pids %d and %d", ready, a.pid(), reg.pid())
	}
	b.worker(t, &worker.Config{Queues: map[string]int{contQ: 1}}, e.contHandler)

	// The parent is released once the third process has registered this
	// many continuations (0: as the command is sent), so that its end
	// lands at a different point of the registrations each round.
	releaseAt := []int{0, 1, 5, 10, n - 1}
	for round, at := range releaseAt {
		h, err := b.c.Enqueue(ctx, xpParent{N: round}, &client.EnqueueOpts{Queue: b.queue})
		if err != nil {
			t.Fatal(err)
		}
		if st := e.wait(xpStarted, 15*time.Second); st.Task != h.ID() || st.Pid != a.pid() {
			t.Fatalf("round %d: started %+v; want task %s in pid %d", round, st, h.ID(), a.pid())
		}
		prefix := "r" + strconv.Itoa(round)
		progress := e.key("progress-" + prefix)
		e.extra = append(e.extra, progress)
		cmd, _ := json.Marshal(xpRegCmd{Parent: h.ID(), ContQueue: contQ, Prefix: prefix, N: n, Progress: progress})
		e.push("regcmd", cmd)
		for done := 0; done < at; {
			v, err := b.env.RDB.BLPop(ctx, 15*time.Second, progress).Result()
			if err != nil {
				t.Fatalf("round %d: wait for registration %d: %v", round, done+1, err)
			}
			done, _ = strconv.Atoi(v[1])
		}
		e.push("release", "go")
		if st := e.wait(xpReturning, 15*time.Second); st.Task != h.ID() {
			t.Fatalf("round %d: the handler of %s returned; want %s", round, st.Task, h.ID())
		}
		rs := e.wait(xpRegistered, 30*time.Second)
		if rs.Task != h.ID() || rs.Registered != n {
			t.Fatalf("round %d: registered signal %+v; want %d on %s", round, rs, n, h.ID())
		}
		pres, err := client.Result[xpParentResult](ctx, h)
		if err != nil {
			t.Fatalf("round %d: parent outcome: %v", round, err)
		}
		want := xpParentResult{By: "sub-" + strconv.Itoa(a.pid()), N: round}
		if pres != want {
			t.Fatalf("round %d: parent result %+v; want %+v", round, pres, want)
		}
		for i := 0; i < n; i++ {
			id := contQ + "/" + prefix + "-" + strconv.Itoa(i)
			ch, err := b.c.Task(id)
			if err != nil {
				t.Fatal(err)
			}
			octx, cancel := context.WithTimeout(ctx, 15*time.Second)
			got, err := client.Result[xpParentResult](octx, ch)
			cancel()
			if err != nil {
				in, _ := ch.Info(ctx)
				t.Fatalf("round %d (parent released after %d registrations): continuation %s: %v (info %+v)", round, at, id, err, in)
			}
			if got != want {
				t.Fatalf("round %d: continuation %s returned %+v; want its parent's %+v", round, id, got, want)
			}
			if c, seen := e.runs(ctx, id); c != 1 || seen != fmt.Sprintf("%s/%d", want.By, want.N) {
				t.Fatalf("round %d: continuation %s ran %d times, seeing %q; want once, seeing %s/%d", round, id, c, seen, want.By, want.N)
			}
		}
		t.Logf("round %d: parent released after %d registrations; %d of %d registrations saw the parent not ended yet",
			round, at, rs.Running, n)
	}

	// Nothing ran twice later, nothing waits in an outbox, and nothing else ran.
	testenv.Eventually(t, 5*time.Second, "empty outboxes", func() bool {
		return e.outboxLen(ctx, b.queue) == 0 && e.outboxLen(ctx, contQ) == 0
	})
	counts, err := b.env.RDB.HGetAll(ctx, e.key("count")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != n*len(releaseAt) {
		t.Fatalf("%d continuations ran; want %d", len(counts), n*len(releaseAt))
	}
	for id, c := range counts {
		if c != "1" {
			t.Fatalf("continuation %s ran %s times; want once", id, c)
		}
	}
}

func TestRedeliveredParentFiresContinuationsOnce(t *testing.T) {
	t.Parallel()
	testenv.RequireReal(t)
	for _, mode := range []string{"kill", "pause"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			e := newXPEnv(t, b)
			ctx := ctxFor(t, 60*time.Second)
			contQ := b.queue + "-c"
			const lease = time.Second

			h, err := b.c.Enqueue(ctx, xpParent{N: 7}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 3})
			if err != nil {
				t.Fatal(err)
			}
			next, err := h.ContinueWith(ctx, xpCont{N: 1}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: contQ, ID: "next"}})
			if err != nil {
				t.Fatal(err)
			}
			if st, err := next.State(ctx); err != nil || st != client.StateWaiting {
				t.Fatalf("continuation state %q, %v; want waiting", st, err)
			}

			a := startSubWorker(t, b, roleXPParent1, subConfig{Lease: lease})
			if st := e.wait(xpStarted, 15*time.Second); st.Pid != a.pid() || st.Task != h.ID() || st.Deliveries != 1 {
				t.Fatalf("started %+v; want task %s in pid %d, delivery 1", st, h.ID(), a.pid())
			}
			if mode == "kill" {
				a.signal(syscall.SIGKILL)
				if code := a.waitExit(10 * time.Second); code != -1 {
					t.Fatalf("worker subprocess exited with code %d; want killed by a signal", code)
				}
			} else {
				// Stopped until resumed below; if the test fails first,
				// startSubWorker's cleanup kills it, which ends a stopped
				// process too.
				a.signal(syscall.SIGSTOP)
				a.waitStopped()
				// Released while paused: the handler returns as soon as
				// the process runs again, long after its lease ended.
				e.push("release", "go")
			}

			var parentRuns sync.Map
			b.worker(t, &worker.Config{Lease: lease, Queues: map[string]int{b.queue: 1, contQ: 1}}, func(w *worker.Worker) {
				worker.Handle(w, func(ctx context.Context, a xpParent) (xpParentResult, error) {
					tk, _ := worker.TaskFromContext(ctx)
					parentRuns.Store(tk.Deliveries, true)
					return xpParentResult{By: "test", N: a.N}, nil
				})
				e.contHandler(w)
			})
			want := xpParentResult{By: "test", N: 7}
			if res, err := client.Result[xpParentResult](ctx, h); err != nil || res != want {
				t.Fatalf("parent outcome %+v, %v; want %+v", res, err, want)
			}
			if res, err := client.Result[xpParentResult](ctx, next); err != nil || res != want {
				t.Fatalf("continuation outcome %+v, %v; want its parent's %+v", res, err, want)
			}
			if c, seen := e.runs(ctx, next.ID()); c != 1 || seen != "test/7" {
				t.Fatalf("the continuation ran %d times, seeing %q; want once, seeing test/7", c, seen)
			}

			if mode == "pause" {
				a.signal(syscall.SIGCONT)
				rt := e.wait(xpReturning, 15*time.Second)
				if rt.Pid != a.pid() || rt.Task != h.ID() || rt.Deliveries != 1 {
					t.Fatalf("returning %+v; want task %s, delivery 1, from pid %d", rt, h.ID(), a.pid())
				}
				// Its worker stopped: the result it returned was handed to
				// Redis (and fenced out) or dropped before the process said so.
				e.wait(xpStopped, 15*time.Second)
				if code := a.waitExit(10 * time.Second); code != 0 {
					t.Fatalf("resumed worker subprocess exited with code %d; want 0", code)
				}
				t.Logf("the paused handler returned with ctx cause %q", rt.Cause)
			}

			testenv.Eventually(t, 5*time.Second, "empty outboxes", func() bool {
				return e.outboxLen(ctx, b.queue) == 0 && e.outboxLen(ctx, contQ) == 0
			})
			if res, err := client.Result[xpParentResult](ctx, h); err != nil || res != want {
				t.Fatalf("parent outcome at the end %+v, %v; want still %+v", res, err, want)
			}
			checkSucceeded(t, ctx, h, 1)
			checkSucceeded(t, ctx, next, 1)
			if c, seen := e.runs(ctx, next.ID()); c != 1 || seen != "test/7" {
				t.Fatalf("at the end the continuation ran %d times, seeing %q; want once, seeing test/7", c, seen)
			}
			n := 0
			parentRuns.Range(func(k, _ any) bool {
				n++
				if k.(int) != 2 {
					t.Errorf("the in-test worker ran the parent on delivery %d; want 2", k)
				}
				return true
			})
			if n != 1 {
				t.Fatalf("the in-test worker ran the parent on %d deliveries; want 1", n)
			}
		})
	}
}

func TestChainOf100Continuations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxFor(t, 60*time.Second)
	const n = 100

	var (
		mu    sync.Mutex
		order []int
		bad   []string
	)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a xpChain) (int, error) {
			if a.I > 0 {
				prev, err := worker.ParentResult[int](ctx)
				if err != nil || prev != a.I-1 {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("link %d saw parent result %d, %v", a.I, prev, err))
					mu.Unlock()
				}
			}
			mu.Lock()
			order = append(order, a.I)
			mu.Unlock()
			return a.I, nil
		})
	})

	start := time.Now()
	h, err := b.c.Enqueue(ctx, xpChain{I: 0}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		h, err = h.ContinueWith(ctx, xpChain{I: i}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: b.queue}})
		if err != nil {
			t.Fatalf("link %d: %v", i, err)
		}
	}
	last, err := client.Result[int](ctx, h)
	if err != nil {
		t.Fatalf("outcome of the last link: %v", err)
	}
	took := time.Since(start)
	if last != n {
		t.Fatalf("the last link's result is %d; want %d", last, n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("links saw the wrong parent outcome: %v", bad)
	}
	if len(order) != n+1 {
		t.Fatalf("%d links ran; want %d: %v", len(order), n+1, order)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("link %d ran in position %d; want the links in order 0..%d: %v", v, i, n, order)
		}
	}
	t.Logf("chain of %d continuations after its first task: %v", n, took)
}

// beforeComplete is a go-redis hook that runs fn (once) just before the
// first complete.lua call of the client it is added to: a cancel request
// then lands between a handler's return and the recording of its outcome.
type beforeComplete struct {
	mu sync.Mutex
	fn func()
}

func (h *beforeComplete) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeComplete) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *beforeComplete) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) >= 2 {
			body, _ := args[1].(string)
			switch strings.ToLower(cmd.Name()) {
			case "evalsha":
				if body != script.Complete.Hash() {
					return next(ctx, cmd)
				}
			case "eval":
				if !strings.Contains(body, "complete.lua") {
					return next(ctx, cmd)
				}
			default:
				return next(ctx, cmd)
			}
			h.mu.Lock()
			fn := h.fn
			h.fn = nil
			h.mu.Unlock()
			if fn != nil {
				fn()
			}
		}
		return next(ctx, cmd)
	}
}

// cancelBeforeFirstRecord starts a worker on b's queue, on a Redis client of
// its own whose first outcome recording is preceded by Cancel of the task
// with id; the state Cancel returned arrives on the channel.
func cancelBeforeFirstRecord(t *testing.T, b *bundle, id string, register func(w *worker.Worker)) <-chan client.State {
	t.Helper()
	got := make(chan client.State, 1)
	hook := &beforeComplete{fn: func() {
		h, err := b.c.Task(id)
		if err != nil {
			panic(err)
		}
		st, err := h.Cancel(context.Background())
		if err != nil {
			st = client.State("error: " + err.Error())
		}
		got <- st
	}}
	wrdb := testenv.NewClient(b.env.Addr)
	wrdb.AddHook(hook)
	t.Cleanup(func() { _ = wrdb.Close() })
	b.workerOn(t, wrdb, &worker.Config{Lease: 400 * time.Millisecond}, register)
	return got
}

// A cancel request that arrives after a handler returned an error but before
// its outcome is recorded turns the retry into a cancellation (complete.lua);
// the task must still report the attempt it ran. Both backends.
func TestCancelBetweenFailedAttemptAndItsRecordKeepsAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxFor(t, 30*time.Second)
	id := keys.TaskID(b.queue, "t1")
	var runs atomic.Int32
	cancelled := cancelBeforeFirstRecord(t, b, id, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a xpBlock) (struct{}, error) {
			runs.Add(1)
			return struct{}{}, errors.New("boom")
		})
	})
	h, err := b.c.Enqueue(ctx, xpBlock{}, &client.EnqueueOpts{Queue: b.queue, ID: "t1", MaxAttempts: 5})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	if st := <-cancelled; st != client.StateRunning {
		t.Fatalf("Cancel between the attempt and its record returned %q; want %q", st, client.StateRunning)
	}
	if !errors.Is(err, client.ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Outcome: %v; want the task cancelled", err)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the handler ran %d times; want once (cancelled, not retried)", n)
	}
	var te *client.TaskError
	if !errors.As(err, &te) || te.Attempt != 1 {
		t.Errorf("Outcome error %v; want a *client.TaskError of attempt 1", err)
	}
	in, err := h.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.State != client.StateCancelled || in.Attempt != 1 {
		t.Errorf("Info: state %q attempt %d; want cancelled after attempt 1", in.State, in.Attempt)
	}
}

// A cancel request that arrives as the last attempt fails leaves the task
// dead; retried from the dead-letter store, it must not be cancelled by that
// old request. Both backends.
func TestRetriedDeadTaskNotCancelledByEarlierRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxFor(t, 30*time.Second)
	id := keys.TaskID(b.queue, "t1")
	var runs atomic.Int32
	causes := make(chan error, 4)
	cancelled := cancelBeforeFirstRecord(t, b, id, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a xpBlock) (struct{}, error) {
			if runs.Add(1) == 1 {
				return struct{}{}, errors.New("boom")
			}
			// The retried run: long enough for several heartbeats
			// (every 100ms), each of which reports a cancel request.
			timer := time.NewTimer(time.Second)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				causes <- context.Cause(ctx)
				return struct{}{}, context.Cause(ctx)
			case <-timer.C:
				return struct{}{}, nil
			}
		})
	})
	h, err := b.c.Enqueue(ctx, xpBlock{}, &client.EnqueueOpts{Queue: b.queue, ID: "t1", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.Outcome(ctx)
	if st := <-cancelled; st != client.StateRunning {
		t.Fatalf("Cancel between the attempt and its record returned %q; want %q", st, client.StateRunning)
	}
	if !errors.Is(err, client.ErrDead) {
		// The library let the cancel win: nothing is left to retry.
		t.Logf("the last attempt's failure met the cancel request: %v", err)
		return
	}
	if _, err := b.c.RetryDead(ctx, h.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		select {
		case c := <-causes:
			t.Fatalf("the retried task, not cancelled since, ended %v; its handler's ctx was cancelled with cause %v", err, c)
		default:
			t.Fatalf("the retried task, not cancelled since, ended %v", err)
		}
	}
}

// Heartbeats run while tasks with ids of their own are dispatched: under
// -race this shows whether the dispatcher finishes a job before the
// heartbeat loop can see it. Both backends. Not parallel: the race detector
// fails every test running when it reports, and reports one race once, so
// running alone keeps a report here and off the other tests.
func TestHeartbeatWhileDispatchingKeyedTasks(t *testing.T) {
	b := setup(t)
	ctx := ctxFor(t, 30*time.Second)
	// The shortest lease: a heartbeat every 12.5ms.
	b.worker(t, &worker.Config{Lease: 50 * time.Millisecond, Concurrency: 50, FetchBatch: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a xpBlock) (int, error) {
			timer := time.NewTimer(20 * time.Millisecond)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			case <-timer.C:
				return a.N, nil
			}
		})
	})
	const n = 500
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: xpBlock{N: i}, Opts: &client.EnqueueOpts{Queue: b.queue, ID: "k" + strconv.Itoa(i)}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if got, err := client.Result[int](ctx, h); err != nil || got != i {
			t.Fatalf("task %s: %d, %v; want %d", h.ID(), got, err, i)
		}
	}
}
