package patterns_test

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
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{"uploads": 1}, BlockTimeout: 50 * time.Millisecond})
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

	c, err := client.New(context.Background(), rdb, nil)
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
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, upload) }, func(ctx context.Context, c *client.Client) {
		g, err := patterns.InvokeAll(ctx, c, uploads(0, 1, 2, 3, 4), 2, nil)
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
	})
	// Output: succeeded 5 of 5
}

// exampleFleet runs fn with a fleet of the test kit (package asynctest):
// an embedded Redis (or the one ASYNCTEST_REDIS_URL names), a coordinator
// (for timed starts), a worker on the queue "uploads" with the handlers
// register adds, and a client, all stopped once fn returned
// (ExampleForkJoin builds the same by hand, as a program does). In a test,
// call asynctest.NewFleet with the test's t.
func exampleFleet(register func(w *worker.Worker), fn func(ctx context.Context, c *client.Client)) {
	err := asynctest.Standalone("example", func(t testing.TB) {
		f := asynctest.NewFleet(t, register, &asynctest.Options{Worker: worker.Config{Queues: map[string]int{"uploads": 1}}})
		fn(context.Background(), f.Client())
	})
	if err != nil {
		log.Fatal(err)
	}
}

// uploads returns a spec per size, in the queue "uploads".
func uploads(sizes ...int) []client.Spec {
	specs := make([]client.Spec, len(sizes))
	for i, size := range sizes {
		specs[i] = client.Spec{Args: UploadFile{Path: fmt.Sprintf("file-%d", i), Size: size}, Opts: &client.EnqueueOpts{Queue: "uploads"}}
	}
	return specs
}

// upload is the handler of UploadFile: it fails for good on a negative
// size, and a file named "slow" takes until its task is cancelled.
func upload(ctx context.Context, a UploadFile) (int, error) {
	switch {
	case a.Size < 0:
		return 0, worker.Permanent(fmt.Errorf("%s: bad size %d", a.Path, a.Size))
	case a.Path == "slow":
		<-ctx.Done()
		return 0, context.Cause(ctx)
	}
	return a.Size, nil
}

// report is the handler of UploadReport: it sums the group's results.
func report(ctx context.Context, a UploadReport) (int, error) {
	sizes, err := patterns.JoinResults[int](ctx)
	total := 0
	for _, n := range sizes {
		total += n
	}
	return total, err
}

// At most 50 uploads start per second, evenly spaced, however many workers
// and processes run them; a member waits for its turn in Redis.
func ExampleThrottle() {
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, upload) }, func(ctx context.Context, c *client.Client) {
		g, err := patterns.Throttle(ctx, c, uploads(10, 20, 30, 40), 50, time.Second, nil)
		if err != nil {
			log.Fatal(err)
		}
		sizes, err := patterns.Results[int](ctx, g)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(sizes)
	})
	// Output: [10 20 30 40]
}

// The uploads start evenly over 300 ms (one every 100 ms), timed by Redis'
// clock; a coordinator starts each on time.
func ExampleSpread() {
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, upload) }, func(ctx context.Context, c *client.Client) {
		g, err := patterns.Spread(ctx, c, uploads(10, 20, 30), 300*time.Millisecond, nil)
		if err != nil {
			log.Fatal(err)
		}
		sizes, err := patterns.Results[int](ctx, g)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(sizes)
	})
	// Output: [10 20 30]
}

// Sync is a task a schedule enqueues.
type Sync struct{}

func (Sync) Kind() string { return "example.sync" }

// A schedule declared in Redis enqueues a Sync every hour, through any
// coordinator, until it is removed; every process may declare it at boot.
// The example runs on the test kit's stopped clock (asynctest.Options.Clock),
// which Advance moves an hour at a time: two slots without waiting.
func ExampleRepeat() {
	err := asynctest.Standalone("repeat", func(t testing.TB) {
		synced := make(chan string, 10)
		f := asynctest.NewFleet(t, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Sync) (struct{}, error) {
				task, _ := worker.TaskFromContext(ctx)
				synced <- task.ID
				return struct{}{}, nil
			})
		}, &asynctest.Options{
			Worker:   worker.Config{Queues: map[string]int{"uploads": 1}},
			Clock:    time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), // Redis' time stands at 09:00
			Embedded: true,                                        // on miniredis, whose clock moves, in any run
		})
		ctx, c := context.Background(), f.Client()

		s, err := patterns.Repeat(ctx, c, "sync-catalog", client.Spec{Args: Sync{}, Opts: &client.EnqueueOpts{Queue: "uploads"}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(s.Name(), "created:", s.Created())
		for i := 0; i < 2; i++ {
			f.Advance(time.Hour) // 10:00, then 11:00: the slot's task is queued
			id := <-synced       // "uploads/r.sync-catalog.<slot Unix ms>"
			fmt.Println("ran", strings.HasPrefix(id, "uploads/r.sync-catalog."))
		}
		removed, err := patterns.RemoveRepeat(ctx, c, s.Name())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("removed:", removed)
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// sync-catalog created: true
	// ran true
	// ran true
	// removed: true
}

// A schedule on a cron expression, in Berlin's wall time (see "Cron
// expressions" in the package docs for the syntax). Declaring it again
// changes nothing.
func ExampleRepeatCron() {
	exampleFleet(func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, _ Sync) (struct{}, error) { return struct{}{}, nil })
	}, func(ctx context.Context, c *client.Client) {
		berlin, err := time.LoadLocation("Europe/Berlin")
		if err != nil {
			log.Fatal(err)
		}
		spec := client.Spec{Args: Sync{}, Opts: &client.EnqueueOpts{Queue: "uploads"}}
		for i := 0; i < 2; i++ {
			s, err := patterns.RepeatCron(ctx, c, "nightly-sync", spec, "30 2 * * MON-FRI", &patterns.CronOpts{Location: berlin})
			if err != nil {
				log.Fatal(err)
			}
			next := s.Next().In(berlin)
			fmt.Println("created:", s.Created(), "updated:", s.Updated(), "next:", next.Weekday() != time.Saturday && next.Weekday() != time.Sunday, next.Format("15:04"))
		}
		infos, err := patterns.Repeats(ctx, c)
		if err != nil {
			log.Fatal(err)
		}
		for _, in := range infos {
			fmt.Println(in.Name, in.Queue, in.Kind, in.Cron, in.TZ)
		}
	})
	// Output:
	// created: true updated: false next: true 02:30
	// created: false updated: false next: true 02:30
	// nightly-sync uploads example.sync 30 2 * * MON-FRI Europe/Berlin
}

// UploadAll uploads the files of one bucket.
type UploadAll struct {
	Bucket string
	Files  []UploadFile
}

func (UploadAll) Kind() string { return "example.upload-all" }

func uploadAll(ctx context.Context, a UploadAll) (int, error) {
	total := 0
	for _, f := range a.Files {
		total += f.Size
	}
	return total, nil
}

func bucketOf(f UploadFile) string { return strings.Split(f.Path, "/")[0] }

func uploadSpec(bucket string, files []UploadFile) client.Spec {
	return client.Spec{Args: UploadAll{Bucket: bucket, Files: files}, Opts: &client.EnqueueOpts{Queue: "uploads"}}
}

// One task per bucket, with that bucket's files in the order they came; the
// buckets' tasks run concurrently across the fleet.
func ExamplePartition() {
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, uploadAll) }, func(ctx context.Context, c *client.Client) {
		files := []UploadFile{{"a/1.png", 100}, {"b/2.png", 80}, {"a/3.png", 20}}
		p, err := patterns.Partition(ctx, c, files, bucketOf, uploadSpec, nil)
		if err != nil {
			log.Fatal(err)
		}
		totals, err := patterns.ResultsByKey[int](ctx, p)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(p.Keys(), totals)
	})
	// Output: [a b] map[a:120 b:80]
}

// Producers in any process append files, which accumulate in Redis; a Flush
// takes everything appended so far and starts one task per bucket.
func ExamplePartitioner() {
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, uploadAll) }, func(ctx context.Context, c *client.Client) {
		pt, err := patterns.NewPartitioner(c, "uploads", bucketOf, nil)
		if err != nil {
			log.Fatal(err)
		}
		if err := pt.Append(ctx, UploadFile{"a/1.png", 100}, UploadFile{"b/2.png", 80}); err != nil {
			log.Fatal(err)
		}
		if err := pt.Append(ctx, UploadFile{"a/3.png", 20}); err != nil { // another producer
			log.Fatal(err)
		}
		n, err := pt.Len(ctx)
		if err != nil {
			log.Fatal(err)
		}
		p, err := pt.Flush(ctx, uploadSpec, nil)
		if err != nil {
			log.Fatal(err)
		}
		totals, err := patterns.ResultsByKey[int](ctx, p)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(n, "items:", totals)
		again, err := pt.Flush(ctx, uploadSpec, nil)
		fmt.Println("nothing left:", again == nil, err)
	})
	// Output:
	// 3 items: map[a:120 b:80]
	// nothing left: true <nil>
}

// Row is an item of a Batch; its Kind names the batches.
type Row struct{ Name string }

func (Row) Kind() string { return "example.rows" }

// Items appended from any process are handled up to MaxSize at a time, by
// one handler call per batch; each item has a handle of its own.
func ExampleBatch() {
	calls := make(chan int, 10)
	exampleFleet(func(w *worker.Worker) {
		worker.HandleBatch(w, func(ctx context.Context, rows []Row) ([]int, error) {
			calls <- len(rows)
			ids := make([]int, len(rows))
			for i, r := range rows {
				ids[i] = len(r.Name) // insert the rows here
			}
			return ids, nil
		})
	}, func(ctx context.Context, c *client.Client) {
		b, err := patterns.NewBatch[Row, int](c, &patterns.BatchOpts{MaxSize: 3, MaxWait: time.Second, Queue: "uploads"})
		if err != nil {
			log.Fatal(err)
		}
		// Three items fill the batch: it starts at once.
		hs, err := b.AppendMany(ctx, []Row{{"ann"}, {"bob"}, {"carla"}})
		if err != nil {
			log.Fatal(err)
		}
		for _, h := range hs {
			n, err := client.Result[int](ctx, h)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Print(n, " ")
		}
		fmt.Println("in one batch of", <-calls)
	})
	// Output: 3 3 5 in one batch of 3
}

// A continuation of a group runs once the group ended, exactly once,
// whether it was registered before or after the end; it reads the
// members' results.
func ExampleGroup_ContinueWith() {
	exampleFleet(func(w *worker.Worker) {
		worker.Handle(w, upload)
		worker.Handle(w, report)
	}, func(ctx context.Context, c *client.Client) {
		g, err := patterns.InvokeAll(ctx, c, uploads(120, 300, 80), 2, nil)
		if err != nil {
			log.Fatal(err)
		}
		h, err := g.ContinueWith(ctx, UploadReport{Batch: "b2"}, nil)
		if err != nil {
			log.Fatal(err)
		}
		total, err := client.Result[int](ctx, h)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(total)
	})
	// Output: 500
}

// A nested group counts as one member of the outer group: here its join,
// which sums the nested uploads, is that member.
func ExampleSub() {
	exampleFleet(func(w *worker.Worker) {
		worker.Handle(w, upload)
		worker.Handle(w, report)
	}, func(ctx context.Context, c *client.Client) {
		join := &client.Spec{Args: UploadReport{}, Opts: &client.EnqueueOpts{Queue: "uploads"}}
		specs := append(uploads(120), patterns.Sub(uploads(300, 80), join, nil))
		g, err := patterns.ForkJoin(ctx, c, specs, join, nil)
		if err != nil {
			log.Fatal(err)
		}
		sizes, err := patterns.Results[int](ctx, g)
		if err != nil {
			log.Fatal(err)
		}
		outer, err := g.Join(ctx)
		if err != nil {
			log.Fatal(err)
		}
		total, err := client.Result[int](ctx, outer)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(sizes, total)
	})
	// Output: [120 380] 500
}

// With FailFast, the first member that fails ends the group: it ends
// GroupFailed at once, and the members still running are cancelled.
func ExampleGroupOpts_failFast() {
	exampleFleet(func(w *worker.Worker) { worker.Handle(w, upload) }, func(ctx context.Context, c *client.Client) {
		specs := []client.Spec{
			{Args: UploadFile{Path: "slow", Size: 1}, Opts: &client.EnqueueOpts{Queue: "uploads"}},
			{Args: UploadFile{Path: "broken", Size: -1}, Opts: &client.EnqueueOpts{Queue: "uploads"}},
		}
		g, err := patterns.ForkJoin(ctx, c, specs, nil, &patterns.GroupOpts{FailFast: true})
		if err != nil {
			log.Fatal(err)
		}
		p, err := g.Wait(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(p.State)
		members, err := g.Members(ctx)
		if err != nil {
			log.Fatal(err)
		}
		_, err = members[0].Outcome(ctx)
		fmt.Println("slow:", errors.Is(err, client.ErrCancelled))
		_, err = members[1].Outcome(ctx)
		fmt.Println("broken:", errors.Is(err, client.ErrDead))
	})
	// Output:
	// failed
	// slow: true
	// broken: true
}
