package main

// The task-semantics phases: parent end → continuation handler
// start, cancel propagation to a running handler (worker in this process and
// in a subprocess), and a chain of continuations.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// contParent is the parent task of the continuation measurement.
type contParent struct {
	I int `msgpack:"i"`
}

func (contParent) Kind() string { return "bench_parent" }

// contChild is the continuation of a contParent.
type contChild struct {
	I int `msgpack:"i"`
}

func (contChild) Kind() string { return "bench_cont" }

// blocker runs until its ctx is cancelled.
type blocker struct {
	I int `msgpack:"i"`
}

func (blocker) Kind() string { return "bench_block" }

// chainLink is one task of the chain.
type chainLink struct {
	I int `msgpack:"i"`
}

func (chainLink) Kind() string { return "bench_link" }

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is the monotonic clock in ns since monoBase: the in-process
// timestamps of these phases (immune to wall-clock steps).
func monoNow() int64 { return int64(time.Since(monoBase)) }

// dist is a latency distribution.
type dist struct {
	P50, P90, P99, Max time.Duration
	N                  int
}

func distOf(ns []int64) dist {
	if len(ns) == 0 {
		return dist{}
	}
	s := append([]int64(nil), ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	pct := func(p float64) time.Duration { return time.Duration(s[int(p*float64(len(s)-1))]) }
	return dist{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: time.Duration(s[len(s)-1]), N: len(s)}
}

// semInfo is what a task-semantics phase measured besides the counters.
type semInfo struct {
	Dist     dist          // the latency of the phase (chain: handler start → next handler start)
	Call     dist          // cancel: the Cancel call itself
	Total    time.Duration // chain: worker Start → the last handle's Outcome returned
	First    time.Duration // chain: worker Start → the first task's handler start
	Register time.Duration // chain: registering the links (not in Total)
	Links    int           // chain: continuations after the first task
	Rate     int           // cont: samples per second at most
	Warmup   int           // samples run before the measured ones
	Problems []string      // wrong behaviour seen (reported, not fatal)
}

func (s *semInfo) problem(format string, a ...any) {
	if len(s.Problems) < 20 {
		s.Problems = append(s.Problems, fmt.Sprintf(format, a...))
	}
}

func (e *env) stopWorker(w *worker.Worker) {
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		fmt.Fprintf(e.progress, "  worker stop: %v\n", err)
	}
}

// recv waits for one value of ch, up to d.
func recv[T any](ctx context.Context, ch <-chan T, d time.Duration) (T, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	var zero T
	select {
	case v := <-ch:
		return v, nil
	case <-t.C:
		return zero, fmt.Errorf("nothing after %v", d)
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// contRun measures parent end → continuation handler start. One worker in
// this process serves the parents' queue and the continuations' queue. Each
// sample: Enqueue a parent (its handler waits on a gate), register a
// continuation with ContinueWith into the other queue, open the gate; the
// parent's handler takes the time just before it returns, the continuation's
// handler at its start. Samples run one at a time (the next starts once the
// previous continuation started), at most rate per second.
func (e *env) contRun(ctx context.Context, n, warm, rate int, profiled bool) (*result, error) {
	rdb := e.newRedis()
	defer rdb.Close()
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	qp, qc := e.queue("parent"), e.queue("cont")
	defer e.reset(ctx, qc)
	defer e.reset(ctx, qp)

	wrdb := e.newRedis()
	defer wrdb.Close()
	w, err := worker.New(context.Background(), wrdb, &worker.Config{
		Queues:       map[string]int{qp: 1, qc: 1},
		BlockTimeout: blockTimeout,
		Logger:       e.logger,
	})
	if err != nil {
		return nil, err
	}
	total := warm + n
	gates := make([]chan struct{}, total)
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	ends := make([]atomic.Int64, total)   // parent handler return
	starts := make([]atomic.Int64, total) // continuation handler start
	runs := make([]atomic.Int32, total)
	childDone := make(chan int, total+16)
	var verify atomic.Bool
	var mu sync.Mutex
	si := &semInfo{Rate: rate, Warmup: warm}
	worker.Handle(w, func(ctx context.Context, a contParent) (int, error) {
		select {
		case <-gates[a.I]:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		ends[a.I].Store(monoNow())
		return a.I, nil
	})
	worker.Handle(w, func(ctx context.Context, a contChild) (struct{}, error) {
		t := monoNow()
		if runs[a.I].Add(1) == 1 {
			starts[a.I].Store(t)
		}
		if verify.Load() {
			// Warm-up only: the continuation sees its parent's typed result.
			got, err := worker.ParentResult[int](ctx)
			if err != nil || got != a.I {
				mu.Lock()
				si.problem("continuation %d: worker.ParentResult = %d, %v; want %d", a.I, got, err, a.I)
				mu.Unlock()
			}
		}
		select {
		case childDone <- a.I:
		default:
		}
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer e.stopWorker(w)
	time.Sleep(100 * time.Millisecond) // the fetch loop is blocked in XREADGROUP

	popts := &client.EnqueueOpts{Queue: qp}
	copts := &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: qc}}
	sample := func(i int) error {
		h, err := c.Enqueue(ctx, contParent{I: i}, popts)
		if err != nil {
			return err
		}
		if _, err := h.ContinueWith(ctx, contChild{I: i}, copts); err != nil {
			return err
		}
		close(gates[i])
		got, err := recv(ctx, childDone, 10*time.Second)
		if err != nil {
			return fmt.Errorf("continuation %d did not start: %w", i, err)
		}
		if got != i {
			return fmt.Errorf("continuation %d started while waiting for %d", got, i)
		}
		return nil
	}
	run := func(from, to int) error {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		for i := from; i < to; i++ {
			<-t.C
			if err := sample(i); err != nil {
				return err
			}
		}
		return nil
	}
	verify.Store(true)
	if err := run(0, warm); err != nil {
		return nil, err
	}
	time.Sleep(20 * time.Millisecond)
	verify.Store(false)
	if _, err := e.waitAcked(ctx, qc, own{}); err != nil {
		return nil, err
	}
	r, err := e.measure(ctx, "Continuation latency", 1, profName(profiled, "continuation"), func() (own, error) {
		if err := run(warm, total); err != nil {
			return nil, err
		}
		mine := own{}
		if _, err := e.waitAcked(ctx, qp, mine); err != nil {
			return nil, err
		}
		return e.waitAcked(ctx, qc, mine)
	})
	if err != nil {
		return nil, err
	}
	time.Sleep(50 * time.Millisecond) // a doubled activation would run by now
	lat := make([]int64, 0, n)
	for i := 0; i < total; i++ {
		if k := runs[i].Load(); k != 1 {
			si.problem("continuation %d ran %d times", i, k)
		}
		if i >= warm {
			lat = append(lat, starts[i].Load()-ends[i].Load())
		}
	}
	si.Dist = distOf(lat)
	r2 := finishPer(r, n)
	r2.Sem = si
	r2.Settings = fmt.Sprintf("%d samples (after %d warm-up), one at a time, at most %d/s; one worker in this process serving the parent and continuation queues (defaults, BlockTimeout %v)",
		n, warm, rate, blockTimeout)
	return r2, nil
}

// cancelObs is what a blocker's handler saw when its ctx ended.
type cancelObs struct {
	I     int
	T     int64 // monotonic (this process) or wall-clock ns (subprocess)
	OK    bool  // context.Cause was worker.ErrCancelled
	Cause string
}

// cancelTarget is a worker running blockers: in this process or in a
// subprocess.
type cancelTarget struct {
	started <-chan int
	obs     <-chan cancelObs
	now     func() int64 // the clock the handler's T is on
	stop    func()
}

// localCancelWorker starts a worker in this process serving q with the
// blocker handler.
func (e *env) localCancelWorker(ctx context.Context, q string) (*cancelTarget, error) {
	wrdb := e.newRedis()
	w, err := worker.New(context.Background(), wrdb, &worker.Config{Queues: map[string]int{q: 1}, BlockTimeout: blockTimeout, Logger: e.logger})
	if err != nil {
		wrdb.Close()
		return nil, err
	}
	started := make(chan int, 64)
	obs := make(chan cancelObs, 64)
	worker.Handle(w, func(ctx context.Context, a blocker) (struct{}, error) {
		started <- a.I
		<-ctx.Done()
		t := monoNow()
		cause := context.Cause(ctx)
		obs <- cancelObs{I: a.I, T: t, OK: errors.Is(cause, worker.ErrCancelled), Cause: fmt.Sprint(cause)}
		return struct{}{}, ctx.Err()
	})
	if err := w.Start(ctx); err != nil {
		wrdb.Close()
		return nil, err
	}
	return &cancelTarget{started: started, obs: obs, now: monoNow, stop: func() {
		e.stopWorker(w)
		wrdb.Close()
	}}, nil
}

// cancelWorkerFlag runs the bench binary as the subprocess worker of the
// cancel phase.
const cancelWorkerFlag = "cancel-worker"

// subCancelWorker starts the bench binary itself as a worker process
// serving q (see runCancelWorker); its timestamps are wall-clock ns.
func (e *env) subCancelWorker(ctx context.Context, q string) (*cancelTarget, error) {
	cmd, stdin, stdout, err := e.startSelf(cancelWorkerFlag, q)
	if err != nil {
		return nil, err
	}
	childPid.Store(int64(cmd.Process.Pid))
	exited := make(chan struct{})
	ready := make(chan struct{})
	started := make(chan int, 64)
	obs := make(chan cancelObs, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 1 && f[0] == "ready":
				close(ready)
			case len(f) == 2 && f[0] == "started":
				i, _ := strconv.Atoi(f[1])
				started <- i
			case len(f) >= 4 && f[0] == "done":
				i, _ := strconv.Atoi(f[1])
				t, _ := strconv.ParseInt(f[2], 10, 64)
				obs <- cancelObs{I: i, T: t, OK: f[3] == "1", Cause: strings.Join(f[4:], " ")}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		childPid.Store(0)
		_ = stdin.Close() // the worker stops and exits at EOF
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-ready:
	case <-exited:
		childPid.Store(0)
		return nil, errors.New("the worker subprocess exited at start")
	case <-time.After(15 * time.Second):
		stop()
		return nil, errors.New("the worker subprocess was not ready after 15 s")
	}
	return &cancelTarget{started: started, obs: obs, now: func() int64 { return time.Now().UnixNano() }, stop: stop}, nil
}

// runCancelWorker is the subprocess side: a worker serving queue with the
// blocker handler, reporting on stdout "ready", "started I" and
// "done I WALLNS OK CAUSE"; it stops at EOF on stdin.
func runCancelWorker(addr, queue string) int {
	if addr == "" {
		fmt.Fprintln(os.Stderr, "bench worker: --redis is required")
		return 2
	}
	e := &env{addr: addr, progress: os.Stderr}
	rdb := e.newRedis()
	defer rdb.Close()
	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{queue: 1}, BlockTimeout: blockTimeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		return 1
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
	}
	worker.Handle(w, func(ctx context.Context, a blocker) (struct{}, error) {
		say("started %d", a.I)
		<-ctx.Done()
		t := time.Now().UnixNano()
		cause := context.Cause(ctx)
		ok := 0
		if errors.Is(cause, worker.ErrCancelled) {
			ok = 1
		}
		say("done %d %d %d %v", a.I, t, ok, cause)
		return struct{}{}, ctx.Err()
	})
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		return 1
	}
	say("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	e.stopWorker(w)
	return 0
}

// cancelRun measures cancel propagation: for each sample a blocker is
// enqueued; once its handler runs, the time is taken just before
// h.Cancel, and the handler takes it when its ctx is done (and checks that
// context.Cause is worker.ErrCancelled). One sample at a time.
func (e *env) cancelRun(ctx context.Context, n, warm int, sub bool) (*result, error) {
	c, q, closeSession, err := e.session(ctx, "cancel")
	if err != nil {
		return nil, err
	}
	defer closeSession()
	var tg *cancelTarget
	if sub {
		tg, err = e.subCancelWorker(ctx, q)
	} else {
		tg, err = e.localCancelWorker(ctx, q)
	}
	if err != nil {
		return nil, err
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			tg.stop()
		}
	}
	defer stop()
	time.Sleep(100 * time.Millisecond)

	si := &semInfo{Warmup: warm}
	opts := &client.EnqueueOpts{Queue: q}
	total := warm + n
	lat := make([]int64, 0, n)
	calls := make([]int64, 0, n)
	hs := make([]*client.Handle, 0, total)
	sample := func(i int) error {
		h, err := c.Enqueue(ctx, blocker{I: i}, opts)
		if err != nil {
			return err
		}
		hs = append(hs, h)
		got, err := recv(ctx, tg.started, 10*time.Second)
		if err != nil {
			return fmt.Errorf("blocker %d did not start: %w", i, err)
		}
		if got != i {
			return fmt.Errorf("blocker %d started while waiting for %d", got, i)
		}
		t0 := tg.now()
		c0 := monoNow()
		st, err := h.Cancel(ctx)
		c1 := monoNow()
		if err != nil {
			return fmt.Errorf("cancel %d: %w", i, err)
		}
		if st != client.StateRunning {
			si.problem("Cancel of running task %d returned state %q, want %q", i, st, client.StateRunning)
		}
		o, err := recv(ctx, tg.obs, 10*time.Second)
		if err != nil {
			return fmt.Errorf("the handler of %d did not see its ctx cancelled: %w", i, err)
		}
		if o.I != i {
			return fmt.Errorf("handler %d ended while waiting for %d", o.I, i)
		}
		if !o.OK {
			si.problem("task %d: context.Cause = %s, want worker.ErrCancelled", i, o.Cause)
		}
		if i >= warm {
			lat = append(lat, o.T-t0)
			calls = append(calls, c1-c0)
		}
		return nil
	}
	for i := 0; i < warm; i++ {
		if err := sample(i); err != nil {
			return nil, err
		}
	}
	if _, err := e.waitAcked(ctx, q, own{}); err != nil {
		return nil, err
	}
	name := "Cancel propagation, worker in this process"
	if sub {
		name = "Cancel propagation, worker in a subprocess"
	}
	r, err := e.measure(ctx, name, 1, "", func() (own, error) {
		for i := warm; i < total; i++ {
			if err := sample(i); err != nil {
				return nil, err
			}
		}
		return e.waitAcked(ctx, q, own{})
	})
	if err != nil {
		return nil, err
	}
	stop()
	// Every task ended cancelled, on its first attempt, not retried.
	for _, h := range hs {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.Outcome(octx)
		cancel()
		var te *client.TaskError
		switch {
		case err == nil:
			si.problem("task %s succeeded after Cancel", h.ID())
		case !errors.Is(err, context.Canceled) || !errors.Is(err, client.ErrCancelled):
			si.problem("task %s: Outcome = %v, want context.Canceled and ErrCancelled", h.ID(), err)
		case errors.As(err, &te) && te.Attempt != 1:
			si.problem("task %s ended cancelled after attempt %d, want 1", h.ID(), te.Attempt)
		}
	}
	si.Dist, si.Call = distOf(lat), distOf(calls)
	r2 := finishPer(r, n)
	r2.Sem = si
	where := "one worker in this process (monotonic clock)"
	if sub {
		where = "one worker in a subprocess (the bench binary itself), timestamps from the wall clock on both sides of the same machine; Go CPU includes the subprocess"
	}
	r2.Settings = fmt.Sprintf("%d samples (after %d warm-up), one at a time; %s", n, warm, where)
	return r2, nil
}

// chainRun measures a chain of n continuations: t0 is enqueued into a
// queue no worker serves yet, n links are registered, each with ContinueWith
// on the handle the previous call returned (all into the same queue), then
// a worker starts; the time runs from its Start to the last handle's Outcome
// returning.
func (e *env) chainRun(ctx context.Context, n int, profiled bool) (*result, error) {
	c, q, closeSession, err := e.session(ctx, "chain")
	if err != nil {
		return nil, err
	}
	defer closeSession()
	si := &semInfo{Links: n}

	h, err := c.Enqueue(ctx, chainLink{I: 0}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		return nil, err
	}
	copts := &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: q}}
	reg := time.Now()
	for i := 1; i <= n; i++ {
		if h, err = h.ContinueWith(ctx, chainLink{I: i}, copts); err != nil {
			return nil, fmt.Errorf("register link %d: %w", i, err)
		}
	}
	si.Register = time.Since(reg)
	last := h

	wrdb := e.newRedis()
	defer wrdb.Close()
	w, err := worker.New(context.Background(), wrdb, &worker.Config{Queues: map[string]int{q: 1}, BlockTimeout: blockTimeout, Logger: e.logger})
	if err != nil {
		return nil, err
	}
	starts := make([]atomic.Int64, n+1)
	runs := make([]atomic.Int32, n+1)
	var order []int
	var mu sync.Mutex
	worker.Handle(w, func(ctx context.Context, a chainLink) (int, error) {
		t := monoNow()
		if runs[a.I].Add(1) == 1 {
			starts[a.I].Store(t)
		}
		mu.Lock()
		order = append(order, a.I)
		mu.Unlock()
		return a.I, nil
	})
	defer e.stopWorker(w)

	type res struct {
		v   int
		err error
		t   int64
	}
	done := make(chan res, 1)
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() {
		v, err := client.Result[int](octx, last)
		done <- res{v, err, monoNow()}
	}()
	time.Sleep(50 * time.Millisecond) // Outcome is waiting
	var t0 int64
	var out res
	r, err := e.measure(ctx, "Chain", 1, profName(profiled, "chain"), func() (own, error) {
		t0 = monoNow()
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		out = <-done
		if out.err != nil {
			return nil, fmt.Errorf("outcome of the last link: %w", out.err)
		}
		return e.waitAcked(ctx, q, own{})
	})
	if err != nil {
		return nil, err
	}
	si.Total = time.Duration(out.t - t0)
	si.First = time.Duration(starts[0].Load() - t0)
	if out.v != n {
		si.problem("the last handle's result is %d, want %d", out.v, n)
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	for i, v := range order {
		if v != i {
			si.problem("handler call %d ran link %d (out of order or doubled)", i, v)
			break
		}
	}
	if len(order) != n+1 {
		si.problem("handlers ran %d times for %d tasks", len(order), n+1)
	}
	mu.Unlock()
	hops := make([]int64, n)
	for i := range hops {
		hops[i] = starts[i+1].Load() - starts[i].Load()
	}
	si.Dist = distOf(hops)
	r2 := finishPer(r, n)
	r2.Sem = si
	r2.Settings = fmt.Sprintf("t0 and %d links in one queue, one worker in this process (defaults, BlockTimeout %v); registering the links took %v (not included)",
		n, blockTimeout, si.Register.Round(time.Millisecond))
	return r2, nil
}

// childPid is the pid of a worker subprocess whose CPU counts as the
// bench's own (goCPU), 0 when none runs.
var childPid atomic.Int64

// procCPU returns the user + system CPU time of process pid from
// /proc/PID/stat.
func procCPU(pid int64) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.FormatInt(pid, 10) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s) // f[0] is field 3 (state); utime, stime are fields 14, 15
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}
