package asynctest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// runFleet is a Fleet with only what Run needs: t, a client whose
// enqueues are recorded, and the recorder. On a real Redis its default
// queue is the test's own.
func runFleet(t testing.TB, cfg *client.Config) *Fleet {
	t.Helper()
	env := testenv.Redis(t)
	rec := &recorder{}
	var c client.Config
	if cfg != nil {
		c = *cfg
	}
	c.EnqueuedHooks = append(c.EnqueuedHooks, rec.hook)
	if c.DefaultQueue == "" {
		c.DefaultQueue = testenv.Queue(t)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.New(ctx, env.RDB, &c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return &Fleet{t: t, rdb: env.RDB, mini: env.Mini, client: cl, rec: rec}
}

func runEngine(f *Fleet) *engine.Engine {
	e, _ := engine.Of[*client.Handle](f.client)
	return e
}

type runGreet struct {
	Name   string
	hidden string // unexported: the msgpack round trip drops it
	Skip   string `msgpack:"-"`
}

func (runGreet) Kind() string { return "greet" }

// runSeen is what a handler saw in its ctx.
type runSeen struct {
	task      worker.Task
	ok        bool
	meta      map[string]string
	tp, ts    string
	deadline  time.Time
	hasDl     bool
	args      runGreet
	joinGroup string
	isJoin    bool
	parentOK  bool
}

func runLook(ctx context.Context, a runGreet) runSeen {
	var s runSeen
	s.task, s.ok = worker.TaskFromContext(ctx)
	s.meta = worker.Meta(ctx)
	s.tp, s.ts = worker.TraceContext(ctx)
	s.deadline, s.hasDl = ctx.Deadline()
	s.args = a
	s.joinGroup, s.isJoin = patterns.JoinGroup(ctx)
	_, s.parentOK, _ = worker.Parent(ctx)
	return s
}

const (
	runTraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	runTraceState  = "vendor=abc"
)

func TestRunGivesTheHandlerItsTask(t *testing.T) {
	f := runFleet(t, nil)
	var s runSeen
	opts := &RunOpts{
		ID:           "reports/task-7",
		Attempt:      3,
		MaxAttempts:  5,
		Deliveries:   2,
		PartitionKey: "tenant-9",
		Meta:         map[string]string{"tenant": "acme", "user": "u1"},
		TraceParent:  runTraceParent,
		TraceState:   runTraceState,
	}
	res := Run(f, func(ctx context.Context, a runGreet) (string, error) {
		s = runLook(ctx, a)
		return "hello " + a.Name, nil
	}, runGreet{Name: "ada", hidden: "h", Skip: "s"}, opts)
	if res.Err != nil || res.Value != "hello ada" {
		t.Fatalf("Run = %q, %v; want %q, nil", res.Value, res.Err, "hello ada")
	}
	want := worker.Task{ID: "reports/task-7", Queue: "reports", Kind: "greet", Attempt: 3, MaxAttempts: 5, Deliveries: 2, PartitionKey: "tenant-9"}
	if !s.ok || s.task != want {
		t.Fatalf("TaskFromContext = %+v, %v; want %+v", s.task, s.ok, want)
	}
	if res.Task != want {
		t.Fatalf("RunResult.Task = %+v; want %+v", res.Task, want)
	}
	if !maps.Equal(s.meta, opts.Meta) {
		t.Fatalf("Meta = %v; want %v", s.meta, opts.Meta)
	}
	if s.tp != runTraceParent || s.ts != runTraceState {
		t.Fatalf("TraceContext = %q, %q; want %q, %q", s.tp, s.ts, runTraceParent, runTraceState)
	}
	if s.hasDl {
		t.Fatalf("ctx has a deadline %v; none was given", s.deadline)
	}
	if s.isJoin || s.parentOK {
		t.Fatalf("JoinGroup %v, Parent ok %v: the task continues nothing", s.isJoin, s.parentOK)
	}
	// The args made the round trip a task's make.
	if s.args != (runGreet{Name: "ada"}) {
		t.Fatalf("args = %+v; want the fields msgpack drops empty: %+v", s.args, runGreet{Name: "ada"})
	}
}

func TestRunDefaults(t *testing.T) {
	f := runFleet(t, &client.Config{DefaultMaxAttempts: 7})
	var s runSeen
	res := Run(f, func(ctx context.Context, a runGreet) (struct{}, error) {
		s = runLook(ctx, a)
		return struct{}{}, nil
	}, runGreet{}, nil)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	q, key, err := keys.SplitTaskID(s.task.ID)
	if err != nil {
		t.Fatalf("task id %q: %v", s.task.ID, err)
	}
	queue := runEngine(f).QueueOf(nil)
	if q != queue || s.task.Queue != queue || key == "" {
		t.Fatalf("task %+v; want a fresh id in the default queue %q", s.task, queue)
	}
	if s.task.Attempt != 1 || s.task.MaxAttempts != 7 || s.task.Deliveries != 1 || s.task.Kind != "greet" {
		t.Fatalf("task %+v; want attempt 1 of the client's 7, delivered once, kind greet", s.task)
	}
	if s.meta != nil || s.tp != "" {
		t.Fatalf("Meta %v, TraceContext %q; want none", s.meta, s.tp)
	}
	again := Run(f, func(ctx context.Context, a runGreet) (struct{}, error) { return struct{}{}, nil }, runGreet{}, nil)
	if again.Task.ID == s.task.ID {
		t.Fatalf("two runs share the id %q", s.task.ID)
	}
	// The queue alone: an id in it.
	inQ := Run(f, func(ctx context.Context, a runGreet) (struct{}, error) { return struct{}{}, nil }, runGreet{}, &RunOpts{Queue: "mail"})
	if !strings.HasPrefix(inQ.Task.ID, "mail/") || inQ.Task.Queue != "mail" {
		t.Fatalf("task %+v; want one in queue mail", inQ.Task)
	}
}

func TestRunDeadlineAndTimeout(t *testing.T) {
	f := runFleet(t, nil)
	type got struct {
		dl    time.Time
		ok    bool
		ms    int64
		err   error
		cause error
	}
	probe := func(opts *RunOpts, wait bool) (got, *RunResult[struct{}]) {
		var g got
		res := Run(f, func(ctx context.Context, a runGreet) (struct{}, error) {
			g.dl, g.ok = ctx.Deadline()
			in, _ := engine.TaskOf(ctx)
			g.ms = in.DeadlineMs
			if wait {
				<-ctx.Done()
				g.err, g.cause = ctx.Err(), context.Cause(ctx)
				return struct{}{}, ctx.Err()
			}
			return struct{}{}, nil
		}, runGreet{}, opts)
		return g, res
	}

	// The task's deadline: the ctx ends then, and children inherit it in
	// Redis time, as an enqueue converts it.
	dl := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	g, _ := probe(&RunOpts{Deadline: dl}, false)
	if !g.ok || !g.dl.Equal(dl) {
		t.Fatalf("ctx deadline %v (%v); want the task's %v", g.dl, g.ok, dl)
	}
	if want := runEngine(f).RedisMs(context.Background(), dl); g.ms != want {
		t.Fatalf("TaskInfo.DeadlineMs %d; want %d (the deadline in Redis time)", g.ms, want)
	}

	// A deadline that passes: the cause a worker tells as the task's end.
	g, res := probe(&RunOpts{Deadline: time.Now().Add(20 * time.Millisecond)}, true)
	if !errors.Is(g.err, context.DeadlineExceeded) || g.cause == nil || g.cause.Error() != "task deadline exceeded" {
		t.Fatalf("ctx ended with %v, cause %v; want DeadlineExceeded, cause task deadline exceeded", g.err, g.cause)
	}
	if !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("Run error %v; want the handler's", res.Err)
	}

	// The attempt's timeout: the ctx ends after it; children do not
	// inherit it.
	before := time.Now()
	g, _ = probe(&RunOpts{Timeout: 20 * time.Millisecond}, true)
	after := time.Now()
	if !g.ok || g.dl.Before(before.Add(20*time.Millisecond)) || g.dl.After(after.Add(20*time.Millisecond)) {
		t.Fatalf("ctx deadline %v; want 20ms after the run's start, in [%v, %v]", g.dl, before.Add(20*time.Millisecond), after.Add(20*time.Millisecond))
	}
	if g.ms != 0 {
		t.Fatalf("TaskInfo.DeadlineMs %d; a timeout is not the task's deadline", g.ms)
	}
	if g.cause == nil || g.cause.Error() != "attempt timed out" {
		t.Fatalf("ctx cause %v; want the worker's attempt timed out", g.cause)
	}

	// Both: the earlier ends the ctx.
	dl = time.Now().Add(time.Hour)
	g, _ = probe(&RunOpts{Deadline: dl, Timeout: time.Minute}, false)
	if !g.dl.Before(dl) {
		t.Fatalf("ctx deadline %v; want the timeout's, before the task's %v", g.dl, dl)
	}

	// A ctx the test gives ends the handler's.
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	g, _ = probe(&RunOpts{Context: parent}, true)
	if !errors.Is(g.err, context.Canceled) {
		t.Fatalf("ctx ended with %v; want the given ctx's Canceled", g.err)
	}
}

type runSum struct{ Tag string }

func (runSum) Kind() string { return "sum" }

type runTotal struct{ N int }

func TestRunParent(t *testing.T) {
	f := runFleet(t, nil)
	type got struct {
		p   *client.ParentOutcome
		ok  bool
		err error
		res runTotal
		rer error
	}
	run := func(end End) got {
		var g got
		Run(f, func(ctx context.Context, a runSum) (struct{}, error) {
			g.p, g.ok, g.err = worker.Parent(ctx)
			g.res, g.rer = worker.ParentResult[runTotal](ctx)
			return struct{}{}, nil
		}, runSum{}, &RunOpts{Parent: &end})
		return g
	}

	g := run(Succeeded(runTotal{N: 42}))
	if !g.ok || g.err != nil || g.p.State != client.StateSucceeded || g.p.Err != nil {
		t.Fatalf("Parent = %+v, %v, %v; want a succeeded parent", g.p, g.ok, g.err)
	}
	if _, _, err := keys.SplitTaskID(g.p.ID); err != nil {
		t.Fatalf("parent id %q: %v", g.p.ID, err)
	}
	if g.rer != nil || g.res.N != 42 {
		t.Fatalf("ParentResult = %+v, %v; want {42}", g.res, g.rer)
	}
	var back runTotal
	if err := codec.Unmarshal(g.p.Result, &back); err != nil || back.N != 42 {
		t.Fatalf("ParentOutcome.Result decodes to %+v, %v", back, err)
	}

	end := Dead("boom")
	end.ID, end.Attempt = "billing/charge-1", 3
	g = run(end)
	var te *client.TaskError
	if !g.ok || g.err != nil || g.p.ID != "billing/charge-1" || g.p.State != client.StateDead || !errors.As(g.p.Err, &te) {
		t.Fatalf("Parent = %+v, %v, %v; want the dead billing/charge-1", g.p, g.ok, g.err)
	}
	if want := (client.TaskError{ID: "billing/charge-1", State: client.StateDead, Attempt: 3, Message: "boom"}); *te != want {
		t.Fatalf("TaskError %+v; want %+v", *te, want)
	}
	if !errors.Is(g.rer, client.ErrDead) || !errors.As(g.rer, &te) || te.Message != "boom" {
		t.Fatalf("ParentResult error %v; want the parent's, errors.Is ErrDead", g.rer)
	}

	g = run(Cancelled())
	if g.p.State != client.StateCancelled || !errors.Is(g.p.Err, client.ErrCancelled) || !errors.Is(g.rer, client.ErrCancelled) {
		t.Fatalf("Parent %+v, ParentResult error %v; want cancelled, errors.Is ErrCancelled", g.p, g.rer)
	}

	// A result that does not decode into ParentResult's type: its error.
	g = run(Succeeded("not a struct"))
	if g.rer == nil || !strings.Contains(g.rer.Error(), "decode result of") {
		t.Fatalf("ParentResult[runTotal] of a string: %v; want a decode error", g.rer)
	}
}

// A join's member results.
func TestRunJoin(t *testing.T) {
	f := runFleet(t, nil)
	var (
		outs    []patterns.Outcome
		err     error
		results []int
		rerr    error
		gid     string
		isJoin  bool
		perr    error
	)
	res := Run(f, func(ctx context.Context, a runSum) (int, error) {
		outs, err = patterns.JoinOutcomes(ctx)
		results, rerr = patterns.JoinResults[int](ctx)
		gid, isJoin = patterns.JoinGroup(ctx)
		_, _, perr = worker.Parent(ctx)
		sum := 0
		for _, r := range results {
			sum += r
		}
		return sum, nil
	}, runSum{}, &RunOpts{
		Queue: "math",
		Join: []End{
			Succeeded(3),
			Dead("negative"),
			Cancelled(),
			GroupEnded(client.StateDead, GroupEnd{Failed: 1, Total: 2, First: "math/x.1"}),
			GroupEnded(client.StateSucceeded, GroupEnd{Total: 2}),
			Succeeded(4),
		},
	})
	if res.Err != nil || res.Value != 7 {
		t.Fatalf("Run = %d, %v; want 7", res.Value, res.Err)
	}
	if !isJoin || !keys.IsGroupID(gid) || !strings.HasPrefix(gid, "group:math/") {
		t.Fatalf("JoinGroup = %q, %v; want a group id in math", gid, isJoin)
	}
	if perr == nil || !strings.Contains(perr.Error(), "patterns.JoinOutcomes") {
		t.Fatalf("worker.Parent in a join: %v; want the pointer to JoinOutcomes", perr)
	}
	if len(outs) != 6 {
		t.Fatalf("JoinOutcomes gave %d outcomes; want 6", len(outs))
	}
	_, own, _ := keys.SplitGroupID(gid)
	for i, o := range outs {
		want := keys.TaskID("math", fmt.Sprintf("%s.%d", own, i))
		if i == 3 || i == 4 {
			want = keys.GroupID("math", fmt.Sprintf("%s.%d", own, i))
		}
		if o.ID != want {
			t.Fatalf("member %d id %q; want %q", i, o.ID, want)
		}
	}
	states := []client.State{client.StateSucceeded, client.StateDead, client.StateCancelled, client.StateDead, client.StateSucceeded, client.StateSucceeded}
	for i, o := range outs {
		if o.State != states[i] {
			t.Fatalf("member %d state %q; want %q", i, o.State, states[i])
		}
	}
	if v, err := patterns.ResultOf[int](outs[0]); err != nil || v != 3 {
		t.Fatalf("ResultOf member 0 = %d, %v; want 3", v, err)
	}
	if _, err := patterns.ResultOf[int](outs[1]); !errors.Is(err, client.ErrDead) {
		t.Fatalf("ResultOf member 1: %v; want errors.Is ErrDead", err)
	}
	if _, err := patterns.ResultOf[int](outs[2]); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("ResultOf member 2: %v; want errors.Is ErrCancelled", err)
	}
	var ge *patterns.GroupError
	if !errors.As(outs[3].Err, &ge) || *ge != (patterns.GroupError{ID: outs[3].ID, State: patterns.GroupFailed, Failed: 1, Total: 2, First: "math/x.1"}) {
		t.Fatalf("member 3 error %v; want its GroupError", outs[3].Err)
	}
	if outs[4].Err != nil {
		t.Fatalf("member 4 (a group that succeeded) error %v", outs[4].Err)
	}
	// The error joins the members'.
	for _, i := range []int{1, 2, 3} {
		if !errors.Is(err, outs[i].Err) {
			t.Fatalf("JoinOutcomes error %v; want member %d's joined", err, i)
		}
	}
	if !errors.Is(rerr, client.ErrDead) || !errors.Is(rerr, client.ErrCancelled) || !errors.As(rerr, &ge) {
		t.Fatalf("JoinResults error %v; want the members' joined", rerr)
	}
	if want := []int{3, 0, 0, 0, 0, 4}; fmt.Sprint(results) != fmt.Sprint(want) {
		t.Fatalf("JoinResults = %v; want %v", results, want)
	}

	// An empty group's join, and a given group id.
	res2 := Run(f, func(ctx context.Context, a runSum) (int, error) {
		outs, err = patterns.JoinOutcomes(ctx)
		gid, _ = patterns.JoinGroup(ctx)
		return len(outs), err
	}, runSum{}, &RunOpts{Join: []End{}, JoinID: "group:math/g1"})
	if res2.Err != nil || res2.Value != 0 || outs == nil || gid != "group:math/g1" {
		t.Fatalf("empty join: %d outcomes (%v), %v, group %q", res2.Value, outs, res2.Err, gid)
	}
}

// runPicky's args never decode, as a type changed between the enqueue and the
// worker's build.
type runPicky struct{ N int }

func (runPicky) Kind() string { return "picky" }

func (p *runPicky) DecodeMsgpack(*msgpack.Decoder) error { return errors.New("picky refuses") }

// runOpaque never encodes.
type runOpaque struct{}

func (runOpaque) EncodeMsgpack(*msgpack.Encoder) error { return errors.New("opaque refuses") }

func TestRunErrorsAsAWorkersHandler(t *testing.T) {
	f := runFleet(t, nil)
	called := false
	res := Run(f, func(ctx context.Context, a runPicky) (int, error) {
		called = true
		return 1, nil
	}, runPicky{N: 1}, nil)
	var perm *worker.PermanentError
	if called || !errors.As(res.Err, &perm) || !strings.Contains(res.Err.Error(), "decode picky args into asynctest.runPicky: ") || !strings.Contains(res.Err.Error(), "picky refuses") {
		t.Fatalf("args that do not decode: called %v, error %v; want the worker's permanent decode error, the handler not called", called, res.Err)
	}

	res2 := Run(f, func(ctx context.Context, a runGreet) (runOpaque, error) { return runOpaque{}, nil }, runGreet{}, nil)
	if !errors.As(res2.Err, &perm) || !strings.Contains(res2.Err.Error(), "encode greet result asynctest.runOpaque: ") {
		t.Fatalf("a result that does not encode: %v; want the worker's permanent encode error", res2.Err)
	}

	res3 := Run(f, func(ctx context.Context, a runGreet) (int, error) { panic("oops") }, runGreet{}, nil)
	var pe *worker.PanicError
	if !errors.As(res3.Err, &pe) || pe.Value != "oops" || !strings.Contains(pe.Stack, "run_test.go") {
		t.Fatalf("a panic: %v; want a *worker.PanicError with its value and stack", res3.Err)
	}

	boom := errors.New("boom")
	res4 := Run(f, func(ctx context.Context, a runGreet) (int, error) { return 5, boom }, runGreet{}, nil)
	if res4.Err != boom || res4.Value != 0 {
		t.Fatalf("an error: %d, %v; want the handler's error itself and no value", res4.Value, res4.Err)
	}

	// The result makes the round trip a caller's client.Result makes.
	type out struct {
		Keep string
		drop string
	}
	res5 := Run(f, func(ctx context.Context, a runGreet) (out, error) { return out{Keep: "k", drop: "d"}, nil }, runGreet{}, nil)
	if res5.Err != nil || res5.Value != (out{Keep: "k"}) {
		t.Fatalf("result %+v, %v; want the unexported field dropped", res5.Value, res5.Err)
	}
}

type runLine struct{ N int }

func (runLine) Kind() string { return "line" }

func TestRunBatch(t *testing.T) {
	f := runFleet(t, nil)
	double := func(ctx context.Context, items []runLine) ([]int, error) {
		out := make([]int, len(items))
		for i, it := range items {
			out[i] = 2 * it.N
		}
		return out, nil
	}
	var task worker.Task
	res := RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) {
		task, _ = worker.TaskFromContext(ctx)
		return double(ctx, items)
	}, []runLine{{1}, {2}, {3}}, &RunOpts{Queue: "lines"})
	if res.Err != nil || res.Failed != nil || fmt.Sprint(res.Results) != "[2 4 6]" {
		t.Fatalf("all succeed: %v, failed %v, %v", res.Results, res.Failed, res.Err)
	}
	if task != res.Task || task.Kind != "line" || task.Queue != "lines" || !strings.HasPrefix(task.ID, "lines/"+keys.BatchKeyPrefix) {
		t.Fatalf("batch task %+v (RunResult %+v); want a batch of kind line in lines", task, res.Task)
	}

	bad := errors.New("bad line")
	res = RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) {
		out, _ := double(ctx, items)
		return out, worker.BatchErrors{1: bad}
	}, []runLine{{1}, {2}, {3}}, nil)
	if res.Err != nil || len(res.Failed) != 1 || res.Failed[1] != bad || fmt.Sprint(res.Results) != "[2 0 6]" {
		t.Fatalf("BatchErrors: %v, failed %v, %v; want item 1 failed", res.Results, res.Failed, res.Err)
	}

	// BatchErrors with too few results: the items without one fail.
	res = RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) {
		return []int{2}, worker.BatchErrors{1: bad}
	}, []runLine{{1}, {2}, {3}}, nil)
	if res.Err != nil || len(res.Failed) != 2 || res.Failed[1] != bad || res.Failed[2] == nil ||
		res.Failed[2].Error() != "line batch handler returned no result for item 2" || fmt.Sprint(res.Results) != "[2 0 0]" {
		t.Fatalf("BatchErrors and a missing result: %v, failed %v, %v", res.Results, res.Failed, res.Err)
	}

	whole := errors.New("database down")
	res = RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) { return nil, whole }, []runLine{{1}, {2}}, nil)
	if res.Err != whole || res.Results != nil || res.Failed != nil {
		t.Fatalf("a whole-batch error: %v, failed %v, %v; want the error alone", res.Results, res.Failed, res.Err)
	}

	res = RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) { return []int{1}, nil }, []runLine{{1}, {2}}, nil)
	if res.Err == nil || res.Err.Error() != "line batch handler returned 1 results for 2 items" || res.Results != nil {
		t.Fatalf("a wrong count: %v, %v; want the worker's error", res.Results, res.Err)
	}

	res = RunBatch(f, func(ctx context.Context, items []runLine) ([]int, error) { panic("batch oops") }, []runLine{{1}}, nil)
	var pe *worker.PanicError
	if !errors.As(res.Err, &pe) || pe.Value != "batch oops" {
		t.Fatalf("a panic: %v; want a *worker.PanicError", res.Err)
	}

	// An item that does not decode is left out of fn's slice and fails.
	var got int
	resP := RunBatch(f, func(ctx context.Context, items []runPicky) ([]int, error) {
		got = len(items)
		return nil, nil
	}, []runPicky{{1}}, nil)
	if got != 0 || resP.Failed[0] == nil || !strings.Contains(resP.Failed[0].Error(), "decode picky item into asynctest.runPicky") {
		t.Fatalf("an item that does not decode: fn got %d items, failed %v", got, resP.Failed)
	}

	// A result that does not encode fails its item.
	resO := RunBatch(f, func(ctx context.Context, items []runLine) ([]runOpaque, error) {
		return make([]runOpaque, len(items)), nil
	}, []runLine{{1}}, nil)
	if resO.Err != nil || resO.Failed[0] == nil || !strings.Contains(resO.Failed[0].Error(), "encode line result asynctest.runOpaque") {
		t.Fatalf("a result that does not encode: failed %v, %v", resO.Failed, resO.Err)
	}
}

type runMail struct{ To string }

func (runMail) Kind() string { return "mail" }

// runEnvelope reads the envelope of the pending task id from Redis.
func runEnvelope(t *testing.T, f *Fleet, id string) *codec.Envelope {
	t.Helper()
	r, err := engine.RefOf(id)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := runEngine(f).Read(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.Envelope) == 0 {
		t.Fatalf("task %s (%s) has no envelope in Redis", id, ts.State)
	}
	env, err := codec.DecodeEnvelope(ts.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestRunChildren(t *testing.T) {
	f := runFleet(t, nil)
	outbox := testenv.Queue(t) + "-out"
	dl := time.Now().Add(time.Hour)
	var deadlineMs int64
	// The same calls, from the handler and (below) from a test.
	enqueue := func(ctx context.Context, c *client.Client) error {
		if _, err := c.Enqueue(ctx, runMail{To: "a"}, &client.EnqueueOpts{ID: "mail-a", Meta: map[string]string{"user": "u2"}}); err != nil {
			return err
		}
		if _, err := c.EnqueueMany(ctx, []client.Spec{{Args: runMail{To: "b"}, Opts: &client.EnqueueOpts{ID: "mail-b", Queue: outbox}}}); err != nil {
			return err
		}
		// Not from the handler's ctx: not a child.
		_, err := c.Enqueue(context.Background(), runMail{To: "c"}, nil)
		return err
	}
	res := Run(f, func(ctx context.Context, a runGreet) (int, error) {
		in, _ := engine.TaskOf(ctx)
		deadlineMs = in.DeadlineMs
		return 2, enqueue(ctx, f.Client())
	}, runGreet{}, &RunOpts{Meta: map[string]string{"tenant": "acme", "user": "u1"}, TraceParent: runTraceParent, Deadline: dl})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(res.Children) != 2 {
		t.Fatalf("Children = %+v; want the 2 tasks enqueued with the handler's ctx", res.Children)
	}
	wantQ := []string{res.Task.Queue, outbox}
	for i, c := range res.Children {
		if c.Parent != res.Task.ID || c.Kind != "mail" || c.Queue != wantQ[i] || c.ID != keys.TaskID(wantQ[i], "mail-"+string(rune('a'+i))) {
			t.Fatalf("child %d = %+v; want mail-%c in %s, child of %s", i, c, 'a'+i, wantQ[i], res.Task.ID)
		}
	}
	if a, ok := res.Children[0].Args.(runMail); !ok || a.To != "a" {
		t.Fatalf("child 0 args %#v", res.Children[0].Args)
	}
	if len(f.Enqueued()) != 3 {
		t.Fatalf("the fleet recorded %d tasks; want 3", len(f.Enqueued()))
	}

	// In Redis, as a worker's handler makes them: the children name their
	// parent and inherit its metadata (under their own), trace and deadline.
	for i, c := range res.Children {
		env := runEnvelope(t, f, c.ID)
		if env.Parent != res.Task.ID || env.DeadlineMs != deadlineMs || deadlineMs == 0 {
			t.Fatalf("child %d envelope: parent %q, deadline %d; want %q, %d", i, env.Parent, env.DeadlineMs, res.Task.ID, deadlineMs)
		}
		want := map[string]string{"tenant": "acme", "user": "u1"}
		if i == 0 {
			want["user"] = "u2"
		}
		got := map[string]string{}
		for j := 0; j+1 < len(env.Meta); j += 2 {
			got[env.Meta[j]] = env.Meta[j+1]
		}
		if !maps.Equal(got, want) {
			t.Fatalf("child %d metadata %v; want %v", i, got, want)
		}
		if len(env.TraceParent) != len(runTraceParent) || env.TraceParent[3:35] != runTraceParent[3:35] {
			t.Fatalf("child %d traceparent %q; want the trace of %q", i, env.TraceParent, runTraceParent)
		}
	}

	// What the run leaves besides its children: their parent's set of
	// kids (for Cancel), which lives 7 days after its last addition as a
	// real task's does; nothing without a TTL.
	q, key, _ := keys.SplitTaskID(res.Task.ID)
	kids := keys.ForQueue(q).Kids(key)
	ctx := context.Background()
	ids, err := f.rdb.SMembers(ctx, kids).Result()
	if err != nil || len(ids) != 2 {
		t.Fatalf("kids set %s = %v, %v; want the 2 children", kids, ids, err)
	}
	ttl, err := f.rdb.PTTL(ctx, kids).Result()
	if err != nil || ttl <= 0 || ttl > 7*24*time.Hour {
		t.Fatalf("kids set %s TTL %v, %v; want at most 7 days", kids, ttl, err)
	}
	if f.Real() {
		return
	}
	// On miniredis the whole database is the test's: every key without a
	// TTL is one a plain enqueue of the same tasks writes too.
	noTTL := func() map[string]bool {
		out := map[string]bool{}
		for _, k := range f.mini.Keys() {
			if f.mini.TTL(k) == 0 {
				out[k] = true
			}
		}
		return out
	}
	before := noTTL()
	f.mini.FlushAll()
	// New clients, as the fleet's were when the run began (a process
	// registers a queue once per Redis client).
	rdb := redis.NewClient(&redis.Options{Addr: f.mini.Addr()})
	defer rdb.Close()
	plainClient, err := client.New(ctx, rdb, &client.Config{DefaultQueue: res.Task.Queue, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer plainClient.Close()
	if err := enqueue(ctx, plainClient); err != nil {
		t.Fatal(err)
	}
	plain := noTTL()
	for k := range before {
		if !plain[k] {
			t.Fatalf("the run left %s without a TTL; a plain enqueue of the same tasks does not (plain: %v)", k, plain)
		}
	}
}

// runMisuse runs fn with a test double that catches Fatalf, and returns the
// message ("" when fn did not fail).
func runMisuse(t *testing.T, f *Fleet, fn func(f *Fleet)) string {
	t.Helper()
	ft := &runFatalT{TB: t}
	old := f.t
	f.t = ft
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.t = old
	return ft.msg
}

// runFatalT is a testing.TB whose Fatalf records the message and stops the
// goroutine, as testing's does.
type runFatalT struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *runFatalT) Helper() {}

func (f *runFatalT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *runFatalT) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *runFatalT) Errorf(format string, args ...any) { f.Fatalf(format, args...) }

func TestRunMisuse(t *testing.T) {
	f := runFleet(t, nil)
	nop := func(ctx context.Context, a runGreet) (int, error) { return 0, nil }
	end := func(e End) *End { return &e }
	for _, c := range []struct {
		name string
		opts *RunOpts
		want string
	}{
		{"unknown state", &RunOpts{Parent: &End{State: client.StateRunning}}, `asynctest.Run greet: RunOpts.Parent.State is "running": an End is succeeded, dead or cancelled`},
		{"both", &RunOpts{Parent: end(Succeeded(1)), Join: []End{Succeeded(1)}}, "RunOpts.Parent and RunOpts.Join are both set"},
		{"meta key", &RunOpts{Meta: map[string]string{"": "v"}}, `asynctest.Run greet: RunOpts.Meta entry "": keys must be 1 to 128 bytes`},
		{"trace", &RunOpts{TraceParent: "00-xyz"}, `RunOpts.TraceParent "00-xyz" is not a W3C traceparent`},
		{"id", &RunOpts{ID: "no-queue"}, `RunOpts.ID: task id "no-queue" has no queue part`},
		{"id queue", &RunOpts{ID: "a/b", Queue: "c"}, `RunOpts.ID "a/b" is not in RunOpts.Queue "c"`},
		{"queue", &RunOpts{Queue: "bad queue"}, "RunOpts.Queue: queue name"},
		{"attempt", &RunOpts{Attempt: 4, MaxAttempts: 3}, "RunOpts.Attempt is 4, must be 1 to MaxAttempts (3)"},
		{"max attempts", &RunOpts{MaxAttempts: -1}, "RunOpts.MaxAttempts is -1"},
		{"timeout", &RunOpts{Timeout: time.Microsecond}, "RunOpts.Timeout is 1µs"},
		{"partition", &RunOpts{PartitionKey: strings.Repeat("p", 300)}, "RunOpts.PartitionKey: "},
		{"result on dead", &RunOpts{Join: []End{{State: client.StateDead, Result: 1}}}, "RunOpts.Join[0].Result is set on a dead end"},
		{"err on succeeded", &RunOpts{Parent: &End{State: client.StateSucceeded, Err: "x"}}, "RunOpts.Parent.Err is set on a succeeded end"},
		{"parent group", &RunOpts{Parent: end(GroupEnded(client.StateSucceeded, GroupEnd{}))}, "RunOpts.Parent.Group is set"},
		{"parent id", &RunOpts{Parent: &End{ID: "group:q/g", State: client.StateDead}}, "RunOpts.Parent.ID: task id"},
		{"group id", &RunOpts{Join: []End{{ID: "q/t", State: client.StateDead, Group: &GroupEnd{}}}}, `RunOpts.Join[0].ID "q/t" is not a group id`},
		{"group counts", &RunOpts{Join: []End{GroupEnded(client.StateDead, GroupEnd{Failed: 3, Total: 2})}}, "RunOpts.Join[0].Group: Failed 3 of Total 2"},
		{"group succeeded failed", &RunOpts{Join: []End{GroupEnded(client.StateSucceeded, GroupEnd{Failed: 1, Total: 2})}}, "RunOpts.Join[0].Group.Failed is 1 on a group that succeeded"},
		{"join id", &RunOpts{JoinID: "group:q/g"}, "RunOpts.JoinID is set without RunOpts.Join"},
		{"join id form", &RunOpts{Join: []End{}, JoinID: "q/g"}, "RunOpts.JoinID: group id"},
		{"attempt end", &RunOpts{Parent: &End{State: client.StateDead, Attempt: -2}}, "RunOpts.Parent.Attempt is -2"},
		{"result encode", &RunOpts{Parent: end(Succeeded(runOpaque{}))}, "RunOpts.Parent.Result: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			called := false
			msg := runMisuse(t, f, func(f *Fleet) {
				Run(f, func(ctx context.Context, a runGreet) (int, error) {
					called = true
					return nop(ctx, a)
				}, runGreet{}, c.opts)
			})
			if !strings.Contains(msg, c.want) || called {
				t.Fatalf("Fatalf %q (handler called: %v); want one with %q, the handler not called", msg, called, c.want)
			}
		})
	}

	// Args that a client refuses to enqueue.
	msg := runMisuse(t, f, func(f *Fleet) {
		Run(f, func(ctx context.Context, a runUnsendable) (int, error) { return 0, nil }, runUnsendable{}, nil)
	})
	if !strings.Contains(msg, "asynctest.Run unsendable: args: ") {
		t.Fatalf("Fatalf %q; want the args named", msg)
	}

	// RunBatch's own.
	line := func(ctx context.Context, items []runLine) ([]int, error) { return nil, nil }
	for _, c := range []struct {
		items []runLine
		opts  *RunOpts
		want  string
	}{
		{nil, nil, "asynctest.RunBatch line: no items"},
		{[]runLine{{1}}, &RunOpts{Parent: &End{State: client.StateDead}}, "RunOpts.Parent and RunOpts.Join are for tasks, not batches"},
		{[]runLine{{1}}, &RunOpts{Meta: map[string]string{"k": strings.Repeat("v", 5000)}}, "asynctest.RunBatch line: RunOpts.Meta entry"},
	} {
		if msg := runMisuse(t, f, func(f *Fleet) { RunBatch(f, line, c.items, c.opts) }); !strings.Contains(msg, c.want) {
			t.Fatalf("RunBatch Fatalf %q; want %q", msg, c.want)
		}
	}
	if msg := runMisuse(t, f, func(f *Fleet) {
		RunBatch(f, func(ctx context.Context, items []runUnsendable) ([]int, error) { return nil, nil }, []runUnsendable{{}}, nil)
	}); !strings.Contains(msg, "asynctest.RunBatch unsendable: items[0]: ") {
		t.Fatalf("RunBatch Fatalf %q; want the item named", msg)
	}
}

// runUnsendable's args never encode.
type runUnsendable struct{}

func (runUnsendable) Kind() string { return "unsendable" }

func (runUnsendable) EncodeMsgpack(*msgpack.Encoder) error { return errors.New("unsendable") }

// runCalc is a task a worker runs for the comparisons below: runTotal{N}, or a
// permanent failure "boom" when N < 0.
type runCalc struct{ N int }

func (runCalc) Kind() string { return "calc" }

func runCalcHandler(ctx context.Context, a runCalc) (runTotal, error) {
	if a.N < 0 {
		return runTotal{}, worker.Permanent(errors.New("boom"))
	}
	return runTotal{N: a.N}, nil
}

// runContinued is what a continuation's or a join's handler reads of what it
// continues.
type runContinued struct {
	parent    *client.ParentOutcome
	parentOK  bool
	parentErr error
	resultErr string
	outs      []patterns.Outcome
	outsErr   string
	group     string
}

func readRunContinued(ctx context.Context) runContinued {
	var c runContinued
	c.parent, c.parentOK, c.parentErr = worker.Parent(ctx)
	if _, err := worker.ParentResult[runTotal](ctx); err != nil {
		c.resultErr = err.Error()
	}
	if g, ok := patterns.JoinGroup(ctx); ok {
		c.group = g
		var err error
		c.outs, err = patterns.JoinOutcomes(ctx)
		if err != nil {
			c.outsErr = err.Error()
		}
		c.parentErr = nil // it points at JoinOutcomes either way
	}
	return c
}

// A continuation and a join run alone see what they see in a worker, given
// the same ends.
func TestRunMatchesAWorker(t *testing.T) {
	f := runFleet(t, nil)
	queue := runEngine(f).QueueOf(nil)
	var mu sync.Mutex
	seenBy := map[string]chan runContinued{}
	wait := func(tag string) chan runContinued {
		mu.Lock()
		defer mu.Unlock()
		if seenBy[tag] == nil {
			seenBy[tag] = make(chan runContinued, 1)
		}
		return seenBy[tag]
	}
	testenv.StartWorker(t, f.rdb, queue, &worker.Config{Logger: slog.New(slog.DiscardHandler)}, func(w *worker.Worker) {
		worker.Handle(w, runCalcHandler)
		worker.Handle(w, func(ctx context.Context, a runSum) (struct{}, error) {
			wait(a.Tag) <- readRunContinued(ctx)
			return struct{}{}, nil
		})
	}, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inWorker := func(tag string) runContinued {
		t.Helper()
		select {
		case c := <-wait(tag):
			return c
		case <-ctx.Done():
			t.Fatalf("the worker did not run %s", tag)
			return runContinued{}
		}
	}
	alone := func(opts *RunOpts) runContinued {
		var c runContinued
		res := Run(f, func(ctx context.Context, a runSum) (struct{}, error) {
			c = readRunContinued(ctx)
			return struct{}{}, nil
		}, runSum{}, opts)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		return c
	}
	same := func(what string, w, a runContinued) {
		t.Helper()
		if fmt.Sprintf("%#v", w.parentErr) != fmt.Sprintf("%#v", a.parentErr) {
			t.Fatalf("%s: Parent error in a worker %v, alone %v", what, w.parentErr, a.parentErr)
		}
		w.parentErr, a.parentErr = nil, nil
		if !runEqual(w, a) {
			t.Fatalf("%s: in a worker\n%+v\nalone\n%+v", what, describeRun(w), describeRun(a))
		}
	}

	// Continuations of a task that succeeded, died, was cancelled.
	for _, c := range []struct {
		tag  string
		n    int
		end  End
		stop bool
	}{
		{"ok", 4, Succeeded(runTotal{N: 4}), false},
		{"dead", -1, Dead("permanent: boom"), false},
		{"cancelled", 1, Cancelled(), true},
	} {
		opts := &client.EnqueueOpts{}
		if c.stop {
			opts.Delay = time.Hour
		}
		h, err := f.Client().Enqueue(ctx, runCalc{N: c.n}, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.ContinueWith(ctx, runSum{Tag: c.tag}, nil); err != nil {
			t.Fatal(err)
		}
		if c.stop {
			if _, err := h.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
		}
		w := inWorker(c.tag)
		end := c.end
		end.ID = h.ID()
		same("continuation of a task "+c.tag, w, alone(&RunOpts{Parent: &end}))
	}

	// A join of members that succeeded and died, and of nested groups
	// that failed and succeeded.
	_, err := patterns.ForkJoin(ctx, f.Client(), []client.Spec{
		{Args: runCalc{N: 2}},
		{Args: runCalc{N: -1}},
		patterns.Sub([]client.Spec{{Args: runCalc{N: 5}}, {Args: runCalc{N: -2}}}, nil, nil),
		patterns.Sub([]client.Spec{{Args: runCalc{N: 6}}}, nil, nil),
		{Args: runCalc{N: 3}},
	}, &client.Spec{Args: runSum{Tag: "join"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := inWorker("join")
	if len(w.outs) != 5 {
		t.Fatalf("the worker's join saw %d members", len(w.outs))
	}
	var ge *patterns.GroupError
	if !errors.As(w.outs[2].Err, &ge) {
		t.Fatalf("the worker's join saw nested group %s end with %v", w.outs[2].ID, w.outs[2].Err)
	}
	ends := []End{
		Succeeded(runTotal{N: 2}),
		Dead("permanent: boom"),
		GroupEnded(client.StateDead, GroupEnd{Failed: 1, Total: 2, First: ge.First}),
		GroupEnded(client.StateSucceeded, GroupEnd{Total: 1}),
		Succeeded(runTotal{N: 3}),
	}
	for i := range ends {
		ends[i].ID = w.outs[i].ID
	}
	same("join", w, alone(&RunOpts{Join: ends, JoinID: w.group}))
}

func runEqual(a, b runContinued) bool { return reflect.DeepEqual(a, b) }

func describeRun(c runContinued) string {
	s := fmt.Sprintf("parent %+v ok %v result error %q group %q outcomes error %q", c.parent, c.parentOK, c.resultErr, c.group, c.outsErr)
	if c.parent != nil && c.parent.Err != nil {
		s += fmt.Sprintf(" parent error %#v", c.parent.Err)
	}
	for i, o := range c.outs {
		s += fmt.Sprintf("\n  [%d] %s %s %x %#v", i, o.ID, o.State, o.Result, o.Err)
	}
	return s
}
