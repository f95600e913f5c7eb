package asynctest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// wJob succeeds with its N doubled, fails for good when Fail is set, and
// blocks until its test releases it when Hold is set.
type wJob struct {
	N    int
	Fail string
	Hold bool
}

func (wJob) Kind() string { return "kit.wjob" }

// wIdle goes to a queue no worker serves: its tasks stay pending.
type wIdle struct{}

func (wIdle) Kind() string { return "kit.widle" }

var idleQueue = &client.EnqueueOpts{Queue: "idle"}

// waitFleet is a fleet serving wJob; release lets held jobs go.
func waitFleet(t *testing.T) (f *Fleet, release func()) {
	t.Helper()
	hold := make(chan struct{})
	f = NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a wJob) (int, error) {
			if a.Hold {
				select {
				case <-hold:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			if a.Fail != "" {
				return 0, worker.Permanent(errors.New(a.Fail))
			}
			return 2 * a.N, nil
		})
	}, nil)
	released := false
	release = func() {
		if !released {
			released = true
			close(hold)
		}
	}
	t.Cleanup(release) // before the fleet stops: registered after it
	return f, release
}

// within runs fn on f's copy whose waits time out after d.
func within(d time.Duration, fn func(f *Fleet)) func(f *Fleet) {
	return func(f *Fleet) {
		f.opts.WaitTimeout = d
		fn(f)
	}
}

// WaitTask returns once the task is in the state wanted: a final one, or
// running.
func TestWaitTask(t *testing.T) {
	t.Parallel()
	f, release := waitFleet(t)
	c := f.Client()
	h := enqueue(t, c, wJob{N: 2}, nil)
	if in := f.WaitTask(h.ID(), client.StateSucceeded); in.State != client.StateSucceeded || in.ID != h.ID() {
		t.Fatalf("WaitTask returned %+v", in)
	}
	d := enqueue(t, c, wJob{Fail: "boom"}, nil)
	if in := f.WaitTask(d.ID(), client.StateDead); in.State != client.StateDead || in.LastError != "permanent: boom" {
		t.Fatalf("WaitTask(dead) returned %+v", in)
	}
	held := enqueue(t, c, wJob{N: 1, Hold: true}, nil)
	if in := f.WaitTask(held.ID(), client.StateRunning); in.State != client.StateRunning || in.Attempt != 1 {
		t.Fatalf("WaitTask(running) returned %+v", in)
	}
	release()
	f.WaitTask(held.ID(), client.StateSucceeded)
	// A task not there yet is waited for: a continuation registered
	// while the wait runs.
	first := enqueue(t, c, wJob{N: 3}, nil)
	done := make(chan *client.Info, 1)
	go func() {
		done <- waitInfo(f, "default/later")
	}()
	if _, err := first.ContinueWith(context.Background(), wJob{N: 4}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{ID: "later"}}); err != nil {
		t.Fatal(err)
	}
	if in := <-done; in == nil || in.State != client.StateSucceeded {
		t.Fatalf("waiting for a continuation registered later: %+v", in)
	}
}

// waitInfo waits for id to succeed off the test's goroutine, as WaitTask
// does, with the fleet's timeout; nil when it did not.
func waitInfo(f *Fleet, id string) *client.Info {
	h, err := f.client.Task(id)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.waitTimeout())
	defer cancel()
	in, msg := waitTask(ctx, h, client.StateSucceeded)
	if msg != "" {
		return nil
	}
	return in
}

// WaitTask fails at once when the task ended in another state, and when the
// wait timed out, saying its state, attempt and last error.
func TestWaitTaskFailures(t *testing.T) {
	t.Parallel()
	f, release := waitFleet(t)
	c := f.Client()
	d := enqueue(t, c, wJob{Fail: "disk full"}, &client.EnqueueOpts{MaxAttempts: 3})
	start := time.Now()
	mustFail(t, f, func(f *Fleet) { f.WaitTask(d.ID(), client.StateSucceeded) },
		"task "+d.ID()+": wanted state succeeded; it ended dead (attempt 1 of 3, last error \"permanent: disk full\")")
	// Ended, not timed out: the fleet's timeout is 10s, and the message
	// says so; the wait for a state it passed fails the same way.
	mustFail(t, f, func(f *Fleet) { f.WaitTask(d.ID(), client.StateRunning) }, "wanted state running; it ended dead")
	if time.Since(start) >= f.waitTimeout() {
		t.Fatalf("failing on an end took %v, the whole wait timeout", time.Since(start))
	}
	p := enqueue(t, c, wIdle{}, idleQueue)
	mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { f.WaitTask(p.ID(), client.StateSucceeded) }),
		"wanted state succeeded; it is still pending (attempt 0 of 25) after 100ms")
	mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { f.WaitTask(p.ID(), client.StateRunning) }),
		"wanted state running; it is still pending (attempt 0 of 25) after 100ms")
	held := enqueue(t, c, wJob{Hold: true}, nil)
	f.WaitTask(held.ID(), client.StateRunning)
	mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { f.WaitTask(held.ID(), client.StateSucceeded) }),
		"wanted state succeeded; it is still running (attempt 1 of 25) after 100ms")
	release()
	mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { f.WaitTask("default/nope", client.StateSucceeded) }),
		"task default/nope: wanted state succeeded; it is still not found after 100ms")
	mustFail(t, f, func(f *Fleet) { f.WaitTask("no-queue", client.StateSucceeded) }, `WaitTask("no-queue")`)
}

// WaitGroup returns once the group is in the state wanted, and fails with
// its progress and its members by state otherwise.
func TestWaitGroup(t *testing.T) {
	t.Parallel()
	f, release := waitFleet(t)
	ctx := context.Background()
	c := f.Client()
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: wJob{N: 1}}, {Args: wJob{N: 2}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.WaitGroup(g.ID(), patterns.GroupSucceeded); p.State != patterns.GroupSucceeded || p.Total != 2 || p.Succeeded != 2 {
		t.Fatalf("WaitGroup returned %+v", p)
	}
	bad, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: wJob{N: 1}}, {Args: wJob{Fail: "no"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustFail(t, f, func(f *Fleet) { f.WaitGroup(bad.ID(), patterns.GroupSucceeded) },
		"group "+bad.ID()+": wanted state succeeded; it is failed: 2 members, 1 succeeded, 1 failed, 0 not ended",
		"\tdead: ", `("permanent: no")`, "\tsucceeded: ")
	if p := f.WaitGroup(bad.ID(), patterns.GroupFailed); p.Failed != 1 {
		t.Fatalf("WaitGroup(failed) returned %+v", p)
	}
	slow, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: wJob{N: 1}}, {Args: wIdle{}, Opts: idleQueue}, {Args: wJob{Hold: true}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.WaitGroup(slow.ID(), patterns.GroupRunning); p.State != patterns.GroupRunning || p.Total != 3 {
		t.Fatalf("WaitGroup(running) returned %+v", p)
	}
	f.WaitTask(mustMembers(t, f, slow)[0], client.StateSucceeded)
	mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { f.WaitGroup(slow.ID(), patterns.GroupSucceeded) }),
		"wanted state succeeded; it is still running after 100ms: 3 members, 1 succeeded, 0 failed, 2 not ended", "\tpending: ", "\tsucceeded: ")
	mustFail(t, f, func(f *Fleet) { f.WaitGroup(g.ID(), patterns.GroupRunning) }, "wanted state running; it is succeeded")
	release()
}

func mustMembers(t *testing.T, f *Fleet, g *patterns.Group) []string {
	t.Helper()
	hs, err := g.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(hs))
	for i, h := range hs {
		if h != nil {
			ids[i] = h.ID()
		}
	}
	return ids
}

// WaitResult returns the decoded result of a task that succeeded, and fails
// with the task's end otherwise.
func TestWaitResult(t *testing.T) {
	t.Parallel()
	f, _ := waitFleet(t)
	c := f.Client()
	if n := WaitResult[int](f, enqueue(t, c, wJob{N: 21}, nil)); n != 42 {
		t.Fatalf("WaitResult = %d, want 42", n)
	}
	d := enqueue(t, c, wJob{Fail: "broken"}, nil)
	mustFail(t, f, func(f *Fleet) { WaitResult[int](f, d) },
		"task "+d.ID()+": wanted it to succeed; it ended dead (attempt 1, last error \"permanent: broken\")")
	p := enqueue(t, c, wIdle{}, idleQueue)
	msg := mustFail(t, f, within(100*time.Millisecond, func(f *Fleet) { WaitResult[int](f, p) }),
		"task "+p.ID()+": wanted it to succeed; still pending (attempt 0 of 25) after 100ms")
	if strings.Contains(msg, "ended") {
		t.Fatalf("a pending task's message says it ended: %s", msg)
	}
}
