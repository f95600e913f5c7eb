package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// ResizeArgs asks for an image to be resized.
type ResizeArgs struct {
	Path  string
	Width int
}

func (ResizeArgs) Kind() string { return "resize" }

// ResizeResult is the handler's typed result.
type ResizeResult struct {
	Path string
}

// Register a typed handler; it reads its attempt from TaskFromContext. The
// first attempt fails, so the task is retried after Config.Backoff.
func ExampleHandle() {
	ctx := context.Background()

	// An embedded Redis for the example; use your server's address instead.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	w, err := worker.New(context.Background(), rdb, &worker.Config{
		Queues:       map[string]int{"images": 1},
		Concurrency:  4,
		Backoff:      func(attempt int) time.Duration { return 10 * time.Millisecond },
		BlockTimeout: 50 * time.Millisecond, // quick Stop
	})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a ResizeArgs) (ResizeResult, error) {
		t, _ := worker.TaskFromContext(ctx)
		fmt.Printf("%s: %s attempt %d of %d\n", t.ID, t.Kind, t.Attempt, t.MaxAttempts)
		if t.Attempt == 1 {
			return ResizeResult{}, errors.New("image store timed out")
		}
		return ResizeResult{Path: fmt.Sprintf("%s@%dw", a.Path, a.Width)}, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := w.Stop(stopCtx); err != nil {
			log.Print(err)
		}
	}()

	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	h, err := c.Enqueue(ctx, ResizeArgs{Path: "cat.png", Width: 640}, &client.EnqueueOpts{
		Queue:       "images",
		ID:          "cat-640",
		MaxAttempts: 3,
	})
	if err != nil {
		log.Fatal(err)
	}
	res, err := client.Result[ResizeResult](ctx, h)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("result:", res.Path)
	// Output:
	// images/cat-640: resize attempt 1 of 3
	// images/cat-640: resize attempt 2 of 3
	// result: cat.png@640w
}

// SendEmailArgs asks for an email to be sent.
type SendEmailArgs struct {
	To string
}

func (SendEmailArgs) Kind() string { return "send_email" }

// A handler returns Permanent for an error no retry can fix: the task goes
// straight to the dead-letter store, where the client can list, retry or
// purge it.
func ExamplePermanent() {
	// A fleet of the test kit (asynctest) for the example: an embedded
	// Redis, a worker and a client, stopped once the function returned.
	err := asynctest.Standalone("permanent", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a SendEmailArgs) (struct{}, error) {
				if !strings.Contains(a.To, "@") {
					return struct{}{}, worker.Permanent(fmt.Errorf("no such address %q", a.To))
				}
				return struct{}{}, nil
			})
		}, nil)
		ctx, c := context.Background(), f.Client()

		h, err := c.Enqueue(ctx, SendEmailArgs{To: "nobody"}, &client.EnqueueOpts{ID: "welcome-nobody", MaxAttempts: 10})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Outcome(ctx)
		var te *client.TaskError
		if errors.As(err, &te) {
			fmt.Println("dead:", errors.Is(err, client.ErrDead))
			fmt.Println("state:", te.State, "after attempt", te.Attempt, "of 10")
			fmt.Println("error:", te.Message)
		}

		dead, err := c.DeadTasks(ctx, "default", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range dead {
			fmt.Println("dead letter:", d.ID, d.Kind)
		}
		if err := c.PurgeDead(ctx, h.ID()); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// dead: true
	// state: dead after attempt 1 of 10
	// error: permanent: no such address "nobody"
	// dead letter: default/welcome-nobody send_email
}
