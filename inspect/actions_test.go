package inspect_test

import (
	"context"
	"errors"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

// The single-task actions: cancel a waiting task; the dead-task ones
// answer ErrTaskNotFound (client.ErrNotFound) for a task that is not dead.
func TestTaskActions(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	h, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.RetryDeadTask(ctx, h.ID()); !errors.Is(err, inspect.ErrTaskNotFound) || !errors.Is(err, client.ErrNotFound) {
		t.Errorf("RetryDeadTask of a waiting task: %v", err)
	}
	if err := in.PurgeDeadTask(ctx, h.ID()); !errors.Is(err, inspect.ErrTaskNotFound) {
		t.Errorf("PurgeDeadTask of a waiting task: %v", err)
	}
	if st, err := in.CancelTask(ctx, h.ID()); err != nil || st != inspect.StateCancelled {
		t.Fatalf("CancelTask: %v, %v", st, err)
	}
	if st, err := in.CancelTask(ctx, h.ID()); err != nil || st != inspect.StateCancelled {
		t.Errorf("CancelTask again: %v, %v; want the end state it is in", st, err)
	}
	if _, err := in.CancelTask(ctx, queue+"/nope"); !errors.Is(err, inspect.ErrTaskNotFound) {
		t.Errorf("CancelTask of an unknown task: %v", err)
	}
	if _, err := in.CancelTask(ctx, "bad id"); err == nil {
		t.Error("a bad id accepted")
	}
}
