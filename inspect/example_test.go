package inspect_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

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
	ctx := context.Background()

	// An embedded Redis for the example; use your server's address instead.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, opts := range []*client.EnqueueOpts{{Queue: "images"}, {Queue: "images"}, {Queue: "images", Delay: time.Hour}} {
		if _, err := c.Enqueue(ctx, Resize{Width: 640}, opts); err != nil {
			log.Fatal(err)
		}
	}

	qs, err := inspect.New(rdb).Queues(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, q := range qs {
		fmt.Printf("%s: %d waiting, %d running, %d scheduled, %d dead\n", q.Queue, q.Waiting, q.Running, q.Scheduled, q.Dead)
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
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var hs []*client.Handle
	for _, size := range []int{64, 128, 0} {
		h, err := c.Enqueue(ctx, Thumbnail{Size: size}, &client.EnqueueOpts{Queue: "thumbs", MaxAttempts: 1})
		if err != nil {
			log.Fatal(err)
		}
		hs = append(hs, h)
	}
	w, err := worker.New(ctx, rdb, &worker.Config{Queues: map[string]int{"thumbs": 1}})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, t Thumbnail) (int, error) {
		if t.Size == 0 {
			return 0, errors.New("no size")
		}
		return t.Size, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for _, h := range hs {
		_, _ = h.Outcome(ctx) // two succeed, one fails
	}
	if err := w.Stop(ctx); err != nil {
		log.Fatal(err)
	}

	in := inspect.New(rdb)
	q, err := in.Queue(ctx, "thumbs")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("in all: %d processed, %d succeeded, %d failed\n", q.Processed, q.Succeeded, q.Failed)
	minutes, err := in.History(ctx, "thumbs", 60)
	if err != nil {
		log.Fatal(err)
	}
	var processed, failed int64
	for _, m := range minutes { // oldest first; the current minute last
		processed, failed = processed+m.Processed, failed+m.Failed
	}
	fmt.Printf("last hour: %d minutes, %d processed, %d failed\n", len(minutes), processed, failed)
	// Output:
	// in all: 3 processed, 2 succeeded, 1 failed
	// last hour: 60 minutes, 3 processed, 1 failed
}
