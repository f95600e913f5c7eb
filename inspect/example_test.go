package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/worker"
)

// Resize is the task of the example.
type Resize struct{ Width int }

func (Resize) Kind() string { return "resize" }

// Count the tasks of every queue: here, two enqueued to run now, one
// delayed, and no worker to take them.
func ExampleInspector_Queues() {
	// A fleet of the test kit (asynctest) for the example, without
	// workers: an embedded Redis and a client. In production, inspect.New
	// takes your server's client.
	err := asynctest.Standalone("queues", func(t testing.TB) {
		f := asynctest.NewFleet(t, nil, nil)
		ctx, c := context.Background(), f.Client()
		for _, opts := range []*client.EnqueueOpts{{Queue: "images"}, {Queue: "images"}, {Queue: "images", Delay: time.Hour}} {
			if _, err := c.Enqueue(ctx, Resize{Width: 640}, opts); err != nil {
				t.Fatal(err)
			}
		}

		qs, err := inspect.New(f.Redis()).Queues(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qs {
			fmt.Printf("%s: %d waiting, %d running, %d scheduled, %d dead\n", q.Queue, q.Waiting, q.Running, q.Scheduled, q.Dead)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// images: 2 waiting, 0 running, 1 scheduled, 0 dead
}

// Thumbnail is the task of the History example; a zero Size fails.
type Thumbnail struct{ Size int }

func (Thumbnail) Kind() string { return "thumbnail" }

// What a queue processed, minute by minute: the completion scripts count in
// Redis, so any process reads the same history, across restarts.
func ExampleInspector_History() {
	err := asynctest.Standalone("history", func(t testing.TB) {
		f := asynctest.NewFleet(t, nil, &asynctest.Options{Worker: worker.Config{Queues: map[string]int{"thumbs": 1}}})
		ctx, c := context.Background(), f.Client()
		var hs []*client.Handle
		for _, size := range []int{64, 128, 0} {
			h, err := c.Enqueue(ctx, Thumbnail{Size: size}, &client.EnqueueOpts{Queue: "thumbs", MaxAttempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		f.StartWorkers(1, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, t Thumbnail) (int, error) {
				if t.Size == 0 {
					return 0, errors.New("no size")
				}
				return t.Size, nil
			})
		})
		for _, h := range hs {
			_, _ = h.Outcome(ctx) // two succeed, one fails
		}

		in := inspect.New(f.Redis())
		q, err := in.Queue(ctx, "thumbs")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("in all: %d processed, %d succeeded, %d failed\n", q.Processed, q.Succeeded, q.Failed)
		minutes, err := in.History(ctx, "thumbs", 60)
		if err != nil {
			t.Fatal(err)
		}
		var processed, failed int64
		for _, m := range minutes { // oldest first; the current minute last
			processed, failed = processed+m.Processed, failed+m.Failed
		}
		fmt.Printf("last hour: %d minutes, %d processed, %d failed\n", len(minutes), processed, failed)
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// in all: 3 processed, 2 succeeded, 1 failed
	// last hour: 60 minutes, 3 processed, 1 failed
}
