package client_test

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

// ThumbnailArgs asks for a thumbnail of an image. Kind is the stable name
// workers register the handler under.
type ThumbnailArgs struct {
	Path  string
	Width int
}

func (ThumbnailArgs) Kind() string { return "thumbnail" }

// ThumbnailResult is what the handler returns; the client decodes it with
// client.Result.
type ThumbnailResult struct {
	Path string
}

// Enqueue a task and wait for its typed result. The worker runs in the same
// process here; usually it runs elsewhere.
func ExampleClient_Enqueue() {
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
		BlockTimeout: 50 * time.Millisecond, // quick Stop
	})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a ThumbnailArgs) (ThumbnailResult, error) {
		return ThumbnailResult{Path: fmt.Sprintf("%s@%dw", a.Path, a.Width)}, nil
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

	h, err := c.Enqueue(ctx, ThumbnailArgs{Path: "cat.png", Width: 128}, &client.EnqueueOpts{Queue: "images"})
	if err != nil {
		log.Fatal(err)
	}
	res, err := client.Result[ThumbnailResult](ctx, h)
	if err != nil {
		log.Fatal(err)
	}
	st, err := h.State(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(h.Queue(), st, res.Path)
	// Output:
	// images succeeded cat.png@128w
}

// InvoiceArgs asks for an invoice to be sent; sending twice would be a bug.
type InvoiceArgs struct {
	Number int
}

func (InvoiceArgs) Kind() string { return "invoice" }

// EnqueueOpts.ID makes an enqueue idempotent: the second call finds the task
// the first one added, adds nothing, and reports it with Duplicate.
func ExampleEnqueueOpts_idempotent() {
	// A fleet of the test kit (asynctest) for the example: an embedded
	// Redis, a worker and a client, stopped once the function returned.
	var sent atomic.Int32
	err := asynctest.Standalone("idempotent", func(t testing.TB) {
		f := asynctest.NewFleet(t, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a InvoiceArgs) (struct{}, error) {
				sent.Add(1)
				return struct{}{}, nil
			})
		}, nil)
		ctx, c := context.Background(), f.Client()

		opts := &client.EnqueueOpts{ID: "invoice-1001"}
		first, err := c.Enqueue(ctx, InvoiceArgs{Number: 1001}, opts)
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.Enqueue(ctx, InvoiceArgs{Number: 1001}, opts)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(first.ID(), "duplicate:", first.Duplicate())
		fmt.Println(again.ID(), "duplicate:", again.Duplicate())

		// Both handles name the same task.
		for _, h := range []*client.Handle{first, again} {
			if _, err := client.Result[struct{}](ctx, h); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println("invoices sent:", sent.Load())
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// default/invoice-1001 duplicate: false
	// default/invoice-1001 duplicate: true
	// invoices sent: 1
}
