package worker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// NotifyArgs asks for a notification once an upload ended.
type NotifyArgs struct{ To string }

func (NotifyArgs) Kind() string { return "notify" }

// A continuation runs once the task it continues ended, exactly once, in its
// own queue; its handler reads the parent's typed result (or error) with
// ParentResult next to its own args.
func ExampleParentResult() {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	w, err := worker.New(context.Background(), rdb, &worker.Config{
		Queues:       map[string]int{"images": 1, "notify": 1},
		BlockTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a ResizeArgs) (ResizeResult, error) {
		return ResizeResult{Path: fmt.Sprintf("%s@%dw", a.Path, a.Width)}, nil
	})
	worker.Handle(w, func(ctx context.Context, a NotifyArgs) (string, error) {
		resized, err := worker.ParentResult[ResizeResult](ctx)
		if err != nil {
			return "", err // the resize failed or was cancelled
		}
		return fmt.Sprintf("told %s about %s", a.To, resized.Path), nil
	})

	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resize, err := c.Enqueue(ctx, ResizeArgs{Path: "cat.png", Width: 640}, &client.EnqueueOpts{Queue: "images"})
	if err != nil {
		log.Fatal(err)
	}
	notify, err := resize.ContinueWith(ctx, NotifyArgs{To: "ops@example.com"}, &client.ContinueOpts{
		EnqueueOpts:   client.EnqueueOpts{Queue: "notify"},
		OnlyOnSuccess: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	st, _ := notify.State(ctx)
	fmt.Println("before the worker starts:", st)

	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx)
	}()
	msg, err := client.Result[string](ctx, notify)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg)
	// Output:
	// before the worker starts: waiting
	// told ops@example.com about cat.png@640w
}
