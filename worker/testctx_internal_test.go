package worker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/store"
)

type lineItem struct{ N int }

func (lineItem) Kind() string { return "line-item" }

// A handler's ctx built without a worker (engine.HandlerContext, for
// asynctest.Run) answers from what it was given, and what needs a worker
// fails with an error rather than a nil worker's panic.
func TestHandlerContextWithoutAWorker(t *testing.T) {
	given := &engine.Given{Parent: &store.TaskState{State: "dead", Attempt: 2, Error: "boom"}}
	in := &engine.TaskInfo{ID: "q/run-1", Prev: "q/parent", Meta: []string{"k", "v"}, Given: given}
	deadline := time.Now().Add(time.Hour)
	ctx, release := engine.HandlerContext(context.Background(), engine.HandlerTask{
		ID: "q/run-1", Queue: "q", Kind: "line-item", Attempt: 2, MaxAttempts: 3, Deliveries: 1,
		Deadline: deadline, Timeout: time.Minute,
	}, in)
	defer release()

	task, ok := TaskFromContext(ctx)
	if !ok || task != (Task{ID: "q/run-1", Queue: "q", Kind: "line-item", Attempt: 2, MaxAttempts: 3, Deliveries: 1}) {
		t.Fatalf("TaskFromContext = %+v, %v", task, ok)
	}
	if m := Meta(ctx); m["k"] != "v" || len(m) != 1 {
		t.Fatalf("Meta = %v", m)
	}
	if dl, ok := ctx.Deadline(); !ok || !dl.Before(deadline) {
		t.Fatalf("ctx deadline %v, %v; want the timeout's, before the task's", dl, ok)
	}

	p, ok, err := Parent(ctx)
	want := client.TaskError{ID: "q/parent", State: client.StateDead, Attempt: 2, Message: "boom"}
	var te *client.TaskError
	if err != nil || !ok || p.ID != "q/parent" || p.State != client.StateDead || !errors.As(p.Err, &te) || *te != want {
		t.Fatalf("Parent = %+v, %v, %v; want the given dead parent", p, ok, err)
	}
	if _, err := ParentResult[int](ctx); !errors.Is(err, client.ErrDead) {
		t.Fatalf("ParentResult error %v; want errors.Is ErrDead", err)
	}
	given.Parent = &store.TaskState{State: "running"}
	if _, _, err := Parent(ctx); err == nil || !strings.Contains(err.Error(), "has not ended") {
		t.Fatalf("Parent of a running parent: %v", err)
	}
	given.Parent = nil
	if _, _, err := Parent(ctx); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("Parent with none given: %v; want ErrNotFound", err)
	}

	// A batch handler's registered function needs the worker's attempt.
	w := &Worker{handlers: map[string]handlerFunc{}}
	HandleBatch(w, func(ctx context.Context, items []lineItem) ([]int, error) {
		t.Error("the batch handler ran without a batch")
		return nil, nil
	})
	_, err = call(ctx, w.handlers["line-item"], nil)
	var perm *PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "ctx is not a worker's attempt") {
		t.Fatalf("a batch handler on a ctx without a worker: %v; want a permanent error saying so", err)
	}
}
