package inspect_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Slow blocks its handler until the test lets it go.
type Slow struct{}

func (Slow) Kind() string { return "inspect.slow" }

func list(t *testing.T, in *inspect.Inspector, queue string, opts inspect.ListOpts) []inspect.TaskInfo {
	t.Helper()
	var out []inspect.TaskInfo
	for {
		p, err := in.Tasks(context.Background(), queue, opts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Tasks...)
		if p.Next == "" {
			return out
		}
		opts.Cursor = p.Next
	}
}

// TestTasksByState lists a queue's tasks in each state after a known
// workload, page by page, with what each shows; then one task of each end
// state with its history of attempts.
func TestTasksByState(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	before := time.Now().Add(-time.Second)

	// No worker yet: three wait (one keyed, with metadata), one is delayed.
	for n := 1; n <= 2; n++ {
		if _, err := c.Enqueue(ctx, Job{N: n}, &client.EnqueueOpts{Queue: queue}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Enqueue(ctx, Job{N: 3}, &client.EnqueueOpts{Queue: queue, ID: "k3", Meta: map[string]string{"tenant": "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(ctx, Job{N: 4}, &client.EnqueueOpts{Queue: queue, ID: "later", Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var pages int
	opts := inspect.ListOpts{State: inspect.StateWaiting, Limit: 2}
	var waiting []inspect.TaskInfo
	for {
		p, err := in.Tasks(ctx, queue, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		waiting = append(waiting, p.Tasks...)
		if p.Next == "" {
			break
		}
		opts.Cursor = p.Next
	}
	if len(waiting) != 3 || pages != 2 {
		t.Fatalf("waiting: %d tasks in %d pages, want 3 in 2", len(waiting), pages)
	}
	for j, w := range waiting {
		var args map[string]any
		if err := json.Unmarshal(w.Args, &args); err != nil || args["n"] != float64(j+1) {
			t.Fatalf("task %d args %s: %v", j, w.Args, err)
		}
		if w.Kind != "inspect.job" || w.State != inspect.StateWaiting || w.Attempt != 1 || w.MaxAttempts != 25 ||
			w.EnqueuedAt.Before(before) || w.Why != "no worker serves queue "+queue {
			t.Fatalf("waiting task %d: %+v", j, w)
		}
	}
	if waiting[2].ID != queue+"/k3" || waiting[2].Meta["tenant"] != "a" {
		t.Fatalf("keyed task: %+v", waiting[2])
	}
	sched := list(t, in, queue, inspect.ListOpts{State: inspect.StateScheduled})
	if len(sched) != 1 || sched[0].ID != queue+"/later" || sched[0].NextRunAt.Before(time.Now().Add(50*time.Minute)) || sched[0].EnqueuedAt.Before(before) {
		t.Fatalf("scheduled: %+v", sched)
	}
	if got := list(t, in, queue, inspect.ListOpts{State: inspect.StateWaiting, Kind: "other"}); len(got) != 0 {
		t.Fatalf("kind filter kept %+v", got)
	}

	// A worker: Job{Fail} fails (backoff an hour, two attempts), Slow
	// blocks until released.
	release := make(chan struct{})
	var w *worker.Worker
	w = testenv.StartWorker(t, e.RDB, queue, &worker.Config{Backoff: func(int) time.Duration { return time.Hour }}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (Job, error) {
			if j.Fail {
				return j, errors.New("no luck " + strings.Repeat("x", j.N))
			}
			return j, nil
		})
		worker.Handle(w, func(ctx context.Context, s Slow) (struct{}, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return struct{}{}, nil
		})
	}, true)
	retry, err := c.Enqueue(ctx, Job{N: 5, Fail: true}, &client.EnqueueOpts{Queue: queue, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := c.Enqueue(ctx, Job{N: 6, Fail: true}, &client.EnqueueOpts{Queue: queue, MaxAttempts: 1, ID: "dies"})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := c.Enqueue(ctx, Slow{}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Outcome(ctx); err == nil {
		t.Fatal("the task that dies succeeded")
	}
	testenv.Eventually(t, 10*time.Second, "a retrying task and a running one", func() bool {
		return len(list(t, in, queue, inspect.ListOpts{State: inspect.StateRetrying})) == 1 &&
			len(list(t, in, queue, inspect.ListOpts{State: inspect.StateRunning})) == 1
	})
	r := list(t, in, queue, inspect.ListOpts{State: inspect.StateRetrying})[0]
	if r.ID != retry.ID() || r.Attempt != 2 || r.LastError != "no luck xxxxx" || len(r.History) != 1 ||
		r.History[0].Attempt != 1 || r.History[0].Worker != w.Name() || r.History[0].Error != r.LastError ||
		r.History[0].StartedAt.After(r.History[0].FinishedAt) || r.NextRunAt.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("retrying: %+v", r)
	}
	// A retrying task's times are those of its last attempt, listed or
	// read alone; a running one has no start (only its lease).
	one, err := in.Task(ctx, retry.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []inspect.TaskInfo{r, one} {
		if x.State != inspect.StateRetrying || len(x.History) != 1 || x.StartedAt.IsZero() ||
			!x.StartedAt.Equal(x.History[0].StartedAt) || !x.FinishedAt.Equal(x.History[0].FinishedAt) {
			t.Fatalf("retrying task's times: started %v finished %v; want its last attempt's: %+v", x.StartedAt, x.FinishedAt, x.History)
		}
	}
	if qi := queueOf(t, in, queue); qi.Retrying != 1 || qi.Running != 1 || qi.Dead != 1 || qi.Scheduled != 1 {
		t.Fatalf("counts %+v, against the lists: 1 retrying, 1 running, 1 dead, 1 scheduled", qi)
	}
	run := list(t, in, queue, inspect.ListOpts{State: inspect.StateRunning})[0]
	if run.ID != slow.ID() || run.Kind != "inspect.slow" || run.Worker != w.Name() || run.Deliveries != 1 || run.LeasedAt.IsZero() {
		t.Fatalf("running: %+v", run)
	}
	if !run.StartedAt.IsZero() || !run.FinishedAt.IsZero() {
		t.Fatalf("running task: started %v finished %v; want neither (LeasedAt %v)", run.StartedAt, run.FinishedAt, run.LeasedAt)
	}
	ds := list(t, in, queue, inspect.ListOpts{State: inspect.StateDead})
	if len(ds) != 1 || ds[0].ID != dead.ID() || ds[0].LastError != "no luck xxxxxx" || len(ds[0].History) != 1 || ds[0].FinishedAt.IsZero() {
		t.Fatalf("dead: %+v", ds)
	}
	got, err := in.Task(ctx, dead.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != inspect.StateDead || got.Kind != "inspect.job" || got.Attempt != 1 || len(got.History) != 1 || got.History[0].Worker != w.Name() ||
		!got.StartedAt.Equal(got.History[0].StartedAt) || got.StartedAt.IsZero() {
		t.Fatalf("Task(dead): %+v", got)
	}
	close(release)
	if _, err := slow.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = in.Task(ctx, slow.ID())
	if err != nil {
		t.Fatal(err)
	}
	if got.State != inspect.StateSucceeded || string(got.Result) != "{}" || got.FinishedAt.IsZero() {
		t.Fatalf("Task(succeeded): %+v, result %s", got, got.Result)
	}
	if got, err := in.Task(ctx, queue+"/nosuch"); err != nil || got.State != inspect.StateUnknown {
		t.Fatalf("Task(unknown): %+v, %v", got, err)
	}

	// Control: the dead task back, then dead again; purge it; cancel the
	// delayed one.
	if n, err := in.RetryDead(ctx, queue, "other.kind"); err != nil || n != 0 {
		t.Fatalf("RetryDead of another kind: %d, %v", n, err)
	}
	if n, err := in.RetryDead(ctx, queue, "inspect.job"); err != nil || n != 1 {
		t.Fatalf("RetryDead: %d, %v", n, err)
	}
	testenv.Eventually(t, 10*time.Second, "the retried task to die again", func() bool {
		return len(list(t, in, queue, inspect.ListOpts{State: inspect.StateDead})) == 1
	})
	got, err = in.Task(ctx, dead.ID())
	if err != nil || len(got.History) != 2 {
		t.Fatalf("Task(dead again): %+v, %v", got, err)
	}
	if n, err := in.PurgeDead(ctx, queue, ""); err != nil || n != 1 {
		t.Fatalf("PurgeDead: %d, %v", n, err)
	}
	if n, err := in.CancelAll(ctx, queue, inspect.StateScheduled); err != nil || n != 1 {
		t.Fatalf("CancelAll(scheduled): %d, %v", n, err)
	}
	if got, err := in.Task(ctx, queue+"/later"); err != nil || got.State != inspect.StateCancelled {
		t.Fatalf("Task(cancelled): %+v, %v", got, err)
	}
	if n, err := in.CancelAll(ctx, queue, inspect.StateRetrying); err != nil || n != 1 {
		t.Fatalf("CancelAll(retrying): %d, %v", n, err)
	}
	if _, err := in.Tasks(ctx, queue, inspect.ListOpts{State: inspect.StateWaiting, Cursor: "nope"}); !errors.Is(err, inspect.ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

// TestPauseResumeFlag: Pause sets the queue's flag, Resume deletes it, and
// DeleteQueue clears it.
func TestPauseResumeFlag(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	in := inspect.New(e.RDB)
	flag := keys.ForQueue(queue).Paused()
	if err := in.Pause(ctx, queue); err != nil {
		t.Fatal(err)
	}
	if e.RDB.Exists(ctx, flag).Val() != 1 {
		t.Fatal("no flag after Pause")
	}
	if err := in.Resume(ctx, queue); err != nil {
		t.Fatal(err)
	}
	if e.RDB.Exists(ctx, flag).Val() != 0 {
		t.Fatal("flag after Resume")
	}
	if err := in.Pause(ctx, queue); err != nil {
		t.Fatal(err)
	}
	if err := in.DeleteQueue(ctx, queue, true); err != nil {
		t.Fatal(err)
	}
	if e.RDB.Exists(ctx, flag).Val() != 0 {
		t.Fatal("flag after DeleteQueue")
	}
	if err := in.Pause(ctx, "bad name"); !errors.Is(err, keys.ErrInvalidName) {
		t.Fatalf("Pause(bad name): %v", err)
	}
}

// TestGroupsAndRepeats lists a ForkJoin group with its progress, drops it
// from the index once it expired, and lists a repeat schedule.
func TestGroupsAndRepeats(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}, {Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}},
		nil, &patterns.GroupOpts{ID: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := in.Groups(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].ID != g.ID() || gs[0].Home != queue || gs[0].State != "open" || gs[0].Members != 2 || gs[0].Running != 2 || gs[0].Created.IsZero() {
		t.Fatalf("groups: %+v", gs)
	}
	testenv.StartWorker(t, e.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (Job, error) { return j, nil })
	}, false)
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	gs, err = in.Groups(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var mine []inspect.GroupInfo
	for _, x := range gs {
		if x.Home == queue {
			mine = append(mine, x)
		}
	}
	if len(mine) != 1 || mine[0].State != "succeeded" || mine[0].Succeeded != 2 || mine[0].Running != 0 {
		t.Fatalf("groups after the end: %+v", mine)
	}
	// Its records expire with their retention: the index forgets it.
	if err := e.RDB.Del(ctx, keys.ForQueue(queue).Group("g1")).Err(); err != nil {
		t.Fatal(err)
	}
	if gs, err := in.Groups(ctx, queue); err != nil || len(gs) != 0 {
		t.Fatalf("groups after expiry: %+v, %v", gs, err)
	}
	if n := e.RDB.ZCard(ctx, keys.ForQueue(queue).Groups()).Val(); n != 0 {
		t.Fatalf("index holds %d after the read", n)
	}

	name := "rep-" + queue
	if _, err := patterns.Repeat(ctx, c, name, client.Spec{Args: Job{N: 7}, Opts: &client.EnqueueOpts{Queue: queue}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = patterns.RemoveRepeat(context.Background(), c, name) })
	rs, err := in.Repeats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rs {
		if r.Name == name {
			found = true
			if r.Queue != queue || r.Kind != "inspect.job" || r.Schedule != "every 1h0m0s" || r.NextFire.IsZero() {
				t.Fatalf("repeat: %+v", r)
			}
		}
	}
	if !found {
		t.Fatalf("repeat %s not listed in %+v", name, rs)
	}
}

// TestHeldAndWhy: a task parked by a full kind limit is listed as held with
// the limit; one waiting behind its partition key, a continuation and a
// task of a kind no worker serves say why they wait.
func TestHeldAndWhy(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)

	// Partitions and continuations, before any worker.
	for _, id := range []string{"p1", "p2"} {
		if _, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue, ID: id, PartitionKey: "user:1", Delay: 0}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := in.Task(ctx, queue+"/p2")
	if err != nil || got.State != inspect.StateHeld || got.Partition != "user:1" || !strings.Contains(got.Why, "partition key user:1") {
		t.Fatalf("Task(behind its partition key): %+v, %v", got, err)
	}
	parent, err := c.Enqueue(ctx, Job{N: 2}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	next, err := parent.ContinueWith(ctx, Job{N: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = in.Task(ctx, next.ID())
	if err != nil || got.State != inspect.StateWaiting || got.Why != "starts once "+parent.ID()+" ended" {
		t.Fatalf("Task(continuation): %+v, %v", got, err)
	}

	// A worker with a kind limit of 1 and no handler for Other.
	release := make(chan struct{})
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{KindLimits: map[string]int{"inspect.slow": 1}, LimitWait: time.Hour}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (Job, error) { return j, nil })
		worker.Handle(w, func(ctx context.Context, s Slow) (struct{}, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return struct{}{}, nil
		})
	}, true)
	defer close(release)
	var slow []*client.Handle
	for range 2 {
		h, err := c.Enqueue(ctx, Slow{}, &client.EnqueueOpts{Queue: queue})
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, h)
	}
	// Parked (the held index) and listed among the limit's waiters are two
	// steps of the worker: wait for both.
	testenv.Eventually(t, 10*time.Second, "one slow task held by the limit", func() bool {
		hs := list(t, in, queue, inspect.ListOpts{State: inspect.StateHeld})
		return len(hs) == 1 && hs[0].Why != ""
	})
	h := list(t, in, queue, inspect.ListOpts{State: inspect.StateHeld})[0]
	if h.Kind != "inspect.slow" || h.Why != "parked by limit kind:inspect.slow" || h.NextRunAt.IsZero() {
		t.Fatalf("held: %+v", h)
	}
	if got := list(t, in, queue, inspect.ListOpts{State: inspect.StateScheduled}); len(got) != 0 {
		t.Fatalf("scheduled holds %+v", got)
	}
	other, err := c.Enqueue(ctx, Other{}, &client.EnqueueOpts{Queue: queue, ID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the task no worker serves to say so", func() bool {
		got, err := in.Task(ctx, other.ID())
		if err != nil {
			t.Fatal(err)
		}
		return got.Why == "no worker serves kind inspect.other"
	})
}

// Other is a kind no worker of these tests serves.
type Other struct{}

func (Other) Kind() string { return "inspect.other" }

// TestHeldInvokeAll lists the members an InvokeAll holds, page by page.
func TestHeldInvokeAll(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	var specs []client.Spec
	for n := range 4 {
		specs = append(specs, client.Spec{Args: Job{N: n}, Opts: &client.EnqueueOpts{Queue: queue}})
	}
	g, err := patterns.InvokeAll(ctx, c, specs, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var held []inspect.TaskInfo
	pages := 0
	opts := inspect.ListOpts{State: inspect.StateHeld, Limit: 2}
	for {
		p, err := in.Tasks(ctx, queue, opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		held = append(held, p.Tasks...)
		if p.Next == "" {
			break
		}
		opts.Cursor = p.Next
	}
	if len(held) != 3 || pages != 3 {
		t.Fatalf("held: %d tasks in %d pages, want 3 in 3 (one of the scheduled set, two of the group's)", len(held), pages)
	}
	for j, h := range held {
		var args map[string]any
		if err := json.Unmarshal(h.Args, &args); err != nil || args["n"] != float64(j+1) {
			t.Fatalf("held %d args %s", j, h.Args)
		}
		if h.State != inspect.StateHeld || h.Why != "held by "+g.ID()+" until it has a free slot" || h.EnqueuedAt.IsZero() {
			t.Fatalf("held %d: %+v", j, h)
		}
	}
	if qi := queueOf(t, in, queue); qi.Held != int64(len(held)) {
		t.Fatalf("Held counts %d, the list has %d", qi.Held, len(held))
	}
	if w := list(t, in, queue, inspect.ListOpts{State: inspect.StateWaiting}); len(w) != 1 {
		t.Fatalf("waiting: %+v", w)
	}
}
