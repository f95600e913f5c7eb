package coordinator_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/worker"
)

// Reminder is a task enqueued to run later.
type Reminder struct{ Text string }

func (Reminder) Kind() string { return "example.reminder" }

// A coordinator moves a delayed task into its queue when Redis' clock
// reaches its time. Any number of coordinators may run, in processes of their
// own or, as here, next to a worker; they need no leader.
func Example() {
	ctx := context.Background()

	// An embedded Redis for the example; use your server's address instead.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	co, err := coordinator.New(context.Background(), rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := co.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer co.Stop(ctx)

	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{"reminders": 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, r Reminder) (string, error) {
		return "sent: " + r.Text, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(ctx)

	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := c.Enqueue(ctx, Reminder{Text: "stand-up"}, &client.EnqueueOpts{Queue: "reminders", Delay: 200 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	res, err := client.Result[string](ctx, h)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res)
	// Output: sent: stand-up
}
