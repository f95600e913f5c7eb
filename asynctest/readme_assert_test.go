package asynctest_test

import (
	"context"
	"testing"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// The example of README "Testing your code" (assertions and waits): it is
// docs/design-16-assert.md's, kept compiling and passing here.

type Signup struct {
	Email string
	Plan  string
}

func (Signup) Kind() string { return "signup" }

type WelcomeMail struct{ To string }

func (WelcomeMail) Kind() string { return "welcome-mail" }

type Invoice struct{ Email string }

func (Invoice) Kind() string { return "invoice" }

type Resize struct{ Width int }

func (Resize) Kind() string { return "resize" }

type Collect struct{}

func (Collect) Kind() string { return "collect" }

func TestSignupFlow(t *testing.T) {
	// The workers serve "default" and "mail"; they start once the handlers
	// can use the fleet's client.
	f := asynctest.NewFleet(t, nil, &asynctest.Options{Worker: worker.Config{Queues: map[string]int{"default": 1, "mail": 1}}})
	f.StartWorkers(1, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, s Signup) (string, error) {
			// Enqueued from the handler's ctx: a child of the signup task.
			if _, err := f.Client().Enqueue(ctx, WelcomeMail{To: s.Email}, &client.EnqueueOpts{Queue: "mail"}); err != nil {
				return "", err
			}
			if s.Plan != "free" {
				if _, err := f.Client().Enqueue(ctx, Invoice{Email: s.Email}, nil); err != nil {
					return "", err
				}
			}
			return "ok", nil
		})
		worker.Handle(w, func(ctx context.Context, m WelcomeMail) (string, error) { return "sent to " + m.To, nil })
		worker.Handle(w, func(ctx context.Context, r Resize) (int, error) { return r.Width / 2, nil })
		worker.Handle(w, func(ctx context.Context, _ Collect) (int, error) {
			ws, err := patterns.JoinResults[int](ctx)
			if err != nil {
				return 0, err
			}
			sum := 0
			for _, w := range ws {
				sum += w
			}
			return sum, nil
		})
	})
	ctx := context.Background()

	h, err := f.Client().Enqueue(ctx, Signup{Email: "ann@example.com", Plan: "free"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the handler to have run: WaitTask fails the test at once,
	// with the task's last error, if it went dead instead.
	f.WaitTask(h.ID(), client.StateSucceeded)

	// The welcome mail was enqueued by the signup's handler, to "mail".
	mail := asynctest.RequireEnqueued(f, WelcomeMail{To: "ann@example.com"},
		&asynctest.Want{Queue: "mail", Parent: h.ID(), Count: 1})
	f.WaitTask(mail.ID, client.StateSucceeded)
	// A free plan is not invoiced.
	asynctest.RequireNotEnqueued(f, "invoice", nil)

	// A fork/join: wait for the group, then for the join's result.
	g, err := patterns.ForkJoin(ctx, f.Client(),
		[]client.Spec{{Args: Resize{Width: 100}}, {Args: Resize{Width: 60}}},
		&client.Spec{Args: Collect{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitGroup(g.ID(), patterns.GroupSucceeded)
	join, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum := asynctest.WaitResult[int](f, join); sum != 80 {
		t.Fatalf("join's result %d, want 80", sum)
	}
	// Everything of a kind, typed, in order.
	if rs := asynctest.EnqueuedArgs[Resize](f); len(rs) != 2 || rs[0].Width != 100 {
		t.Fatalf("resizes enqueued: %+v", rs)
	}
	asynctest.RequireEnqueuedKind(f, "resize", &asynctest.Want{Group: g.ID(), Count: 2})
}
