package inspect_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
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
