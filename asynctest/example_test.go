package asynctest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// The Examples run inside asynctest.Standalone, which gives them the
// testing.TB a fleet needs; in a test, pass the test's t instead.

// Greet is the task of the Examples: its handler greets Name.
type Greet struct{ Name string }

func (Greet) Kind() string { return "example.greet" }

func greet(ctx context.Context, g Greet) (string, error) {
	if g.Name == "" {
		return "", worker.Permanent(errors.New("nobody to greet"))
	}
	return "hello " + g.Name, nil
}

// A fleet whose one worker runs greet: a task enqueued through its client
// runs for real, and WaitResult waits for its result.
func ExampleNewFleet() {
	err := asynctest.Standalone("greet", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) { worker.Handle(w, greet) }, nil)
		h, err := f.Client().Enqueue(context.Background(), Greet{Name: "ada"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(asynctest.WaitResult[string](f, h))
	}) // the fleet is stopped here, and checked for leaks
	fmt.Println("failed:", err)
	// Output:
	// hello ada
	// failed: <nil>
}

// A handler run alone, synchronously: no worker is needed, and the handler
// sees the task RunOpts describe.
func ExampleRun() {
	err := asynctest.Standalone("run", func(t testing.TB) {
		f := asynctest.NewFleet(t, nil, nil)
		tagged := func(ctx context.Context, g Greet) (string, error) {
			task, _ := worker.TaskFromContext(ctx)
			s, err := greet(ctx, g)
			return fmt.Sprintf("%s (%s, attempt %d of %d)", s, worker.Meta(ctx)["tenant"], task.Attempt, task.MaxAttempts), err
		}
		res := asynctest.Run(f, tagged, Greet{Name: "ada"}, &asynctest.RunOpts{
			Attempt: 2, MaxAttempts: 3, Meta: map[string]string{"tenant": "acme"},
		})
		fmt.Println(res.Value, res.Err)
		res = asynctest.Run(f, greet, Greet{}, nil)
		var perm *worker.PermanentError
		fmt.Println(errors.As(res.Err, &perm), res.Err)
	})
	fmt.Println("failed:", err)
	// Output:
	// hello ada (acme, attempt 2 of 3) <nil>
	// true permanent: nobody to greet
	// failed: <nil>
}

// A batch handler run alone: one result per item, and the items it failed.
func ExampleRunBatch() {
	err := asynctest.Standalone("batch", func(t testing.TB) {
		f := asynctest.NewFleet(t, nil, nil)
		greetAll := func(ctx context.Context, gs []Greet) ([]string, error) {
			out := make([]string, len(gs))
			bad := worker.BatchErrors{}
			for i, g := range gs {
				var err error
				if out[i], err = greet(ctx, g); err != nil {
					bad[i] = err
				}
			}
			if len(bad) > 0 {
				return out, bad
			}
			return out, nil
		}
		res := asynctest.RunBatch(f, greetAll, []Greet{{"ada"}, {""}, {"bob"}}, nil)
		fmt.Printf("%q %v %v\n", res.Results, res.Failed, res.Err)
	})
	fmt.Println("failed:", err)
	// Output:
	// ["hello ada" "" "hello bob"] map[1:permanent: nobody to greet] <nil>
	// failed: <nil>
}

// Welcome is what a sign-up's handler enqueues.
type Welcome struct{ Name string }

func (Welcome) Kind() string { return "example.welcome" }

// A handler that enqueues a task from its ctx: the assertions find it,
// with its parent, and say what was there when they fail.
func ExampleRequireEnqueued() {
	err := asynctest.Standalone("signup", func(t testing.TB) {
		f := asynctest.NewFleet(t, nil, &asynctest.Options{Worker: worker.Config{Queues: map[string]int{"mail": 1}}})
		f.StartWorkers(1, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, g Greet) (string, error) {
				_, err := f.Client().Enqueue(ctx, Welcome{Name: g.Name}, &client.EnqueueOpts{Queue: "mail"})
				return "signed up", err
			})
			worker.Handle(w, func(ctx context.Context, w Welcome) (string, error) { return "sent", nil })
		})
		h, err := f.Client().Enqueue(context.Background(), Greet{Name: "ada"}, &client.EnqueueOpts{Queue: "mail"})
		if err != nil {
			t.Fatal(err)
		}
		f.WaitTask(h.ID(), client.StateSucceeded)
		e := asynctest.RequireEnqueued(f, Welcome{Name: "ada"}, &asynctest.Want{Parent: h.ID(), Count: 1})
		fmt.Println(e.Kind, e.Queue, e.Parent == h.ID())
		asynctest.RequireNotEnqueued(f, "example.invoice", nil)
		fmt.Println(asynctest.EnqueuedArgs[Welcome](f))
	})
	fmt.Println("failed:", err)
	// Output:
	// example.welcome mail true
	// [{ada}]
	// failed: <nil>
}

// WaitTask waits for a state, and returns the task's Info: here a task
// whose args the handler refuses for good ends dead at its first attempt.
func ExampleFleet_WaitTask() {
	err := asynctest.Standalone("dead", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) { worker.Handle(w, greet) }, nil)
		h, err := f.Client().Enqueue(context.Background(), Greet{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		in := f.WaitTask(h.ID(), client.StateDead)
		fmt.Println(in.State, in.Attempt, in.LastError)
	})
	fmt.Println("failed:", err)
	// Output:
	// dead 1 permanent: nobody to greet
	// failed: <nil>
}

// Report is the task of an hourly schedule.
type Report struct{}

func (Report) Kind() string { return "example.report" }

// An hourly schedule over three slots, without sleeping: Redis' clock
// stands still at Options.Clock, and each Advance makes the next slot due.
func ExampleFleet_Advance() {
	err := asynctest.Standalone("hourly", func(t testing.TB) {
		t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
		f := asynctest.NewFleet(t, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Report) (string, error) { return "sent", nil })
		}, &asynctest.Options{
			Clock:    t0,   // Redis' clock stands still at 09:00
			Embedded: true, // on miniredis, whose clock moves, even where ASYNCTEST_REDIS_URL is set
		})
		ctx := context.Background()
		if _, err := patterns.Repeat(ctx, f.Client(), "report", client.Spec{Args: Report{}}, time.Hour); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			now := f.Advance(time.Hour)
			rs, err := patterns.Repeats(ctx, f.Client())
			if err != nil {
				t.Fatal(err)
			}
			f.WaitTask(rs[0].Last, client.StateSucceeded)
			fmt.Println(now.Format("15:04"), "fired", rs[0].Fired, "next", rs[0].Next.UTC().Format("15:04"))
		}
	})
	fmt.Println("failed:", err)
	// Output:
	// 10:00 fired 1 next 11:00
	// 11:00 fired 2 next 12:00
	// 12:00 fired 3 next 13:00
	// failed: <nil>
}

// The next two attempts of the kind fail without running the handler; the
// third runs it.
func ExampleFleet_FailNext() {
	err := asynctest.Standalone("retries", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) { worker.Handle(w, greet) }, nil)
		f.FailNext("example.greet", 2, nil)
		h, err := f.Client().Enqueue(context.Background(), Greet{Name: "ada"}, &client.EnqueueOpts{MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		in := f.WaitTask(h.ID(), client.StateSucceeded)
		fmt.Println(in.State, "at attempt", in.Attempt)
	})
	fmt.Println("failed:", err)
	// Output:
	// succeeded at attempt 3
	// failed: <nil>
}

// Standalone gives code that is not a test a testing.TB: what fn logs is
// returned, when it failed.
func ExampleStandalone() {
	err := asynctest.Standalone("playground", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) { worker.Handle(w, greet) }, nil)
		h, err := f.Client().Enqueue(context.Background(), Greet{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Log("greeting nobody")
		asynctest.WaitResult[string](f, h) // it ends dead: the wait fails fn
		t.Log("not reached")
	})
	msg := fmt.Sprint(err)
	fmt.Println(strings.Contains(msg, "greeting nobody"), strings.Contains(msg, "wanted it to succeed; it ended dead"), strings.Contains(msg, "not reached"))
	// Output: true true false
}
