package patterns_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// UploadFile copies one file; UploadReport sums a batch of uploads.
type UploadFile struct {
	Path string
	Size int
}

func (UploadFile) Kind() string { return "example.upload" }

type UploadReport struct{ Batch string }

func (UploadReport) Kind() string { return "example.report" }

// Upload files as members of one group; a report (the join) runs once every
// upload ended and reads their results in submission order.
func ExampleForkJoin() {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	w, err := worker.New(rdb, &worker.Config{Queues: map[string]int{"uploads": 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a UploadFile) (int, error) {
		return a.Size, nil // copy the file here
	})
	reported := make(chan string, 1)
	worker.Handle(w, func(ctx context.Context, a UploadReport) (int, error) {
		sizes, err := patterns.JoinResults[int](ctx)
		if err != nil {
			return 0, err // some upload failed: err joins their errors
		}
		total := 0
		for _, n := range sizes {
			total += n
		}
		reported <- fmt.Sprintf("batch %s: %d files, %d bytes", a.Batch, len(sizes), total)
		return total, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(ctx)

	c, err := client.New(rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var specs []client.Spec
	for i, size := range []int{120, 300, 80} {
		specs = append(specs, client.Spec{
			Args: UploadFile{Path: fmt.Sprintf("file-%d", i), Size: size},
			Opts: &client.EnqueueOpts{Queue: "uploads"},
		})
	}
	g, err := patterns.ForkJoin(ctx, c, specs,
		&client.Spec{Args: UploadReport{Batch: "b1"}, Opts: &client.EnqueueOpts{Queue: "uploads"}},
		&patterns.GroupOpts{ID: "b1"})
	if err != nil {
		log.Fatal(err)
	}
	sizes, err := patterns.Results[int](ctx, g)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(g.ID(), sizes)
	fmt.Println(<-reported)
	// Output:
	// group:uploads/b1 [120 300 80]
	// batch b1: 3 files, 500 bytes
}

// At most two of the group's tasks run at once across every worker; the
// others wait in Redis.
func ExampleInvokeAll() {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	w, err := worker.New(rdb, &worker.Config{Queues: map[string]int{"uploads": 1}, BlockTimeout: 50 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a UploadFile) (int, error) { return a.Size, nil })
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(ctx)

	c, err := client.New(rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var specs []client.Spec
	for i := 0; i < 5; i++ {
		specs = append(specs, client.Spec{Args: UploadFile{Size: i}, Opts: &client.EnqueueOpts{Queue: "uploads"}})
	}
	g, err := patterns.InvokeAll(ctx, c, specs, 2, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	p, err := g.Progress(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.State, p.Succeeded, "of", p.Total)
	// Output: succeeded 5 of 5
}
