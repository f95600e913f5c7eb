package inspect_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Upload is a task whose handler reports Done of Total until it is let go.
type Upload struct {
	Done  int64 `msgpack:"done"`
	Total int64 `msgpack:"total"`
}

func (Upload) Kind() string { return "inspect.upload" }

// startReporter starts a worker on queue whose handler reports its args'
// progress every 20 ms (the core writes at most every 250 ms) until
// release is closed, then succeeds.
func startReporter(t *testing.T, e *testenv.Env, queue string, release <-chan struct{}) {
	t.Helper()
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, u Upload) (int64, error) {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				worker.ReportProgress(ctx, u.Done, u.Total)
				select {
				case <-release:
					return u.Total, nil
				case <-ctx.Done():
					return 0, context.Cause(ctx)
				case <-tick.C:
				}
			}
		})
	}, true)
}

// The task view and a page of running tasks show what the handler
// reported, with its attempt and a time in Redis' clock; a task that
// reported nothing has none; once it succeeded, done is total.
func TestTaskProgress(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	release := make(chan struct{})
	startReporter(t, e, queue, release)
	before, err := store.Time(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Enqueue(ctx, Upload{Done: 12_897_484, Total: 200 << 20}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	quiet, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var ti inspect.TaskInfo
	testenv.Eventually(t, 10*time.Second, "the task's progress", func() bool {
		ti, err = in.Task(ctx, h.ID())
		if err != nil {
			t.Fatal(err)
		}
		return ti.Progress != nil
	})
	after, err := store.Time(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	p := ti.Progress
	if ti.State != inspect.StateRunning || p.Done != 12_897_484 || p.Total != 200<<20 || p.Attempt != 1 || p.Percent() != 6 {
		t.Errorf("task: %s, progress %+v", ti.State, p)
	}
	// Redis time of the write: between the enqueue and the read (Redis
	// keeps milliseconds).
	if p.Updated.Before(before.Truncate(time.Millisecond)) || p.Updated.After(after) {
		t.Errorf("progress updated at %v, not within [%v, %v]", p.Updated, before, after)
	}
	page, err := in.Tasks(ctx, queue, inspect.ListOpts{State: inspect.StateRunning})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Tasks) != 1 || page.Tasks[0].Progress == nil || page.Tasks[0].Progress.Done != p.Done || page.Tasks[0].Progress.Total != p.Total {
		t.Errorf("running page: %+v", page.Tasks)
	}
	if q, err := in.Task(ctx, quiet.ID()); err != nil || q.Progress != nil {
		t.Errorf("a task that reported nothing: %+v, %v", q.Progress, err)
	}
	sched, err := in.Tasks(ctx, queue, inspect.ListOpts{State: inspect.StateScheduled})
	if err != nil || len(sched.Tasks) != 1 || sched.Tasks[0].Progress != nil {
		t.Errorf("scheduled page: %+v, %v", sched.Tasks, err)
	}

	close(release)
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	ti, err = in.Task(ctx, h.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ti.State != inspect.StateSucceeded || ti.Progress == nil || ti.Progress.Done != 200<<20 || ti.Progress.Total != 200<<20 || ti.Progress.Percent() != 100 {
		t.Errorf("succeeded task: %s, progress %+v", ti.State, ti.Progress)
	}
}

// A progress record that is not what the library writes is not shown as
// progress: the task view says why, and still shows the rest.
func TestTaskProgressMalformed(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	h, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue, ID: "bad", Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k := keys.ForQueue(queue).Progress("bad")
	if err := e.RDB.HSet(ctx, k, "done", "5", "total", "lots", "attempt", "1", "at", "1700000000000").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.RDB.Del(context.Background(), k) })
	ti, err := in.Task(ctx, h.ID())
	if err != nil {
		t.Fatal(err)
	}
	if ti.State != inspect.StateScheduled || ti.Progress != nil || !strings.Contains(ti.Why, "malformed progress record") || !strings.Contains(ti.Why, "total") {
		t.Errorf("task: %s, progress %+v, why %q", ti.State, ti.Progress, ti.Why)
	}
	page, err := in.Tasks(ctx, queue, inspect.ListOpts{State: inspect.StateScheduled})
	if err != nil || len(page.Tasks) != 1 || page.Tasks[0].Progress != nil || !strings.Contains(page.Tasks[0].Why, "malformed progress record") {
		t.Errorf("page: %+v, %v", page.Tasks, err)
	}

	// A group's sum that is not a count: the group's views say so, with
	// the rest of the group (and the other groups of a page).
	bad, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: 3}, Opts: &client.EnqueueOpts{Queue: queue}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := store.ParseGroupRef(bad.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.HSet(ctx, ref.Home.GroupProgress(ref.ID), "~d", "-3", "~t", "10").Err(); err != nil {
		t.Fatal(err)
	}
	d, err := in.GroupMembers(ctx, bad.ID())
	if err != nil || d.State != "open" || d.WorkDone != 0 || d.WorkTotal != 0 || !strings.Contains(d.WorkError, "~d") || len(d.MemberList) != 1 {
		t.Errorf("group with a bad sum: %+v, %v", d, err)
	}
	gp, err := in.GroupsPage(ctx, queue, inspect.GroupListOpts{})
	if err != nil || len(gp.Groups) != 2 {
		t.Fatalf("groups page: %+v, %v", gp, err)
	}
	for _, g := range gp.Groups {
		if (g.ID == bad.ID()) != (g.WorkError != "") {
			t.Errorf("groups page: %+v", g)
		}
	}
	if g, err := in.GroupMembers(ctx, good.ID()); err != nil || g.WorkError != "" {
		t.Errorf("the other group: %+v, %v", g, err)
	}
}

// A group's views sum what its members reported, and the group page lists
// each member's; once the members succeeded, the sums are whole.
func TestGroupProgress(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	release := make(chan struct{})
	startReporter(t, e, queue, release)
	specs := []client.Spec{
		{Args: Upload{Done: 3 << 20, Total: 8 << 20}, Opts: &client.EnqueueOpts{Queue: queue}},
		{Args: Upload{Done: 1 << 20, Total: 2 << 20}, Opts: &client.EnqueueOpts{Queue: queue}},
		{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}, // no handler here: it reports nothing
	}
	g, err := patterns.ForkJoin(ctx, c, specs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d inspect.GroupDetail
	// A member's report is written to its task and to its group by two
	// calls: wait for both members' in both.
	testenv.Eventually(t, 10*time.Second, "both members' reports in the group's sums", func() bool {
		d, err = in.GroupMembers(ctx, g.ID())
		if err != nil {
			t.Fatal(err)
		}
		return d.WorkDone == 4<<20 && d.WorkTotal == 10<<20 && len(d.MemberList) == 3 &&
			d.MemberList[0].Progress != nil && d.MemberList[1].Progress != nil
	})
	if d.WorkError != "" || len(d.MemberList) != 3 {
		t.Fatalf("group: %+v", d)
	}
	for j, want := range [][2]int64{{3 << 20, 8 << 20}, {1 << 20, 2 << 20}} {
		p := d.MemberList[j].Progress
		if p == nil || p.Done != want[0] || p.Total != want[1] || p.Attempt != 1 {
			t.Errorf("member %d: %+v", j, p)
		}
	}
	if d.MemberList[2].Progress != nil {
		t.Errorf("member 2 reported nothing, shows %+v", d.MemberList[2].Progress)
	}
	if gp, err := g.Progress(ctx); err != nil || gp.WorkDone != d.WorkDone || gp.WorkTotal != d.WorkTotal {
		t.Errorf("patterns.Group.Progress: %+v, %v; the inspector: %d of %d", gp, err, d.WorkDone, d.WorkTotal)
	}
	page, err := in.GroupsPage(ctx, queue, inspect.GroupListOpts{})
	if err != nil || len(page.Groups) != 1 || page.Groups[0].WorkDone != 4<<20 || page.Groups[0].WorkTotal != 10<<20 {
		t.Errorf("groups page: %+v, %v", page.Groups, err)
	}
	all, err := in.Groups(ctx, queue)
	if err != nil || len(all) != 1 || all[0].WorkDone != 4<<20 || all[0].WorkTotal != 10<<20 {
		t.Errorf("groups: %+v, %v", all, err)
	}

	close(release)
	for _, m := range d.MemberList[:2] {
		h, err := c.Task(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d, err = in.GroupMembers(ctx, g.ID())
	if err != nil || d.WorkDone != 10<<20 || d.WorkTotal != 10<<20 {
		t.Errorf("after the members succeeded: %d of %d, %v", d.WorkDone, d.WorkTotal, err)
	}
}
