// Command quickstart shows the whole life of async tasks in one process: it
// starts an embedded Redis (miniredis), a worker and a client, enqueues a
// batch of uploads, one upload that fails once and is retried, and one that is
// rejected for good and ends in the dead-letter store, waits for every
// outcome, prints them, and shuts down.
//
//	go run ./examples/quickstart                       # embedded miniredis
//	go run ./examples/quickstart --redis 127.0.0.1:6379 # a real Redis
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

const queue = "quickstart"

// UploadArgs asks for a file to be uploaded. The demo generates the file's
// bytes from its name, so every run computes the same checksums.
type UploadArgs struct {
	File     string
	Size     int
	FailOnce bool // the first attempt fails with a transient error
	Reject   bool // the handler refuses the file for good
	Hang     bool // the transfer never ends (until the task is cancelled)
}

// NotifyArgs asks for a notice once an upload ended; it runs as a
// continuation of that upload.
type NotifyArgs struct{ To string }

func (NotifyArgs) Kind() string { return "notify" }

// Kind is the stable name the handler is registered under.
func (UploadArgs) Kind() string { return "upload" }

// UploadResult is the handler's typed result.
type UploadResult struct {
	Bytes  int
	SHA256 string
}

func main() {
	addr := flag.String("redis", "", "address (host:port) of a Redis server to use instead of the embedded miniredis")
	flag.Parse()
	log.SetFlags(0)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		log.Fatalf("quickstart: %v", err)
	}
}

func run(ctx context.Context, addr string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer mr.Close()
		addr = mr.Addr()
		fmt.Printf("Redis: embedded miniredis at %s (use --redis ADDR for a real server)\n", addr)
	} else {
		fmt.Printf("Redis: %s\n", addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	// The worker: one queue, eight handlers at once, and a short backoff so
	// the retry below happens within the demo.
	w, err := worker.New(context.Background(), rdb, &worker.Config{
		Queues:       map[string]int{queue: 1},
		Concurrency:  8,
		Backoff:      func(attempt int) time.Duration { return 200 * time.Millisecond },
		BlockTimeout: 100 * time.Millisecond,
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	worker.Handle(w, upload)
	worker.Handle(w, func(ctx context.Context, a NotifyArgs) (string, error) {
		up, err := worker.ParentResult[UploadResult](ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("told %s: %d bytes, sha256 %s…", a.To, up.Bytes, up.SHA256), nil
	})
	if err := w.Start(ctx); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := w.Stop(stopCtx); err != nil {
			fmt.Printf("worker stop: %v\n", err)
			return
		}
		fmt.Printf("worker stopped in %v\n", time.Since(start).Round(time.Millisecond))
	}()

	c, err := client.New(context.Background(), rdb, &client.Config{DefaultQueue: queue, Logger: logger})
	if err != nil {
		return err
	}
	defer c.Close()

	start := time.Now()
	handles, err := enqueue(ctx, c)
	if err != nil {
		return err
	}
	if err := report(ctx, c, handles); err != nil {
		return err
	}
	if err := deadLetters(ctx, c, handles); err != nil {
		return err
	}
	fmt.Printf("all %d outcomes in %v\n", len(handles), time.Since(start).Round(time.Millisecond))
	return semantics(ctx, c)
}

// semantics shows a continuation and a cancel across the fleet (here, one
// process; the calls are the same from any process).
func semantics(ctx context.Context, c *client.Client) error {
	fmt.Println("\ncontinuation and cancellation:")
	up, err := c.Enqueue(ctx, UploadArgs{File: "video.mp4", Size: 32 << 10}, nil)
	if err != nil {
		return err
	}
	notice, err := up.ContinueWith(ctx, NotifyArgs{To: "ops@example.com"}, &client.ContinueOpts{OnlyOnSuccess: true})
	if err != nil {
		return err
	}
	msg, err := client.Result[string](ctx, notice)
	if err != nil {
		return err
	}
	fmt.Printf("  continuation of %s: %s\n", up.ID(), msg)

	hung, err := c.Enqueue(ctx, UploadArgs{File: "huge.iso", Hang: true}, nil)
	if err != nil {
		return err
	}
	for {
		st, err := hung.State(ctx)
		if err != nil {
			return err
		}
		if st == client.StateRunning {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	st, err := hung.Cancel(ctx)
	if err != nil {
		return err
	}
	_, err = hung.Outcome(ctx)
	fmt.Printf("  cancel of %s: Cancel said %s; Outcome: %v (context.Canceled: %v)\n",
		hung.ID(), st, err, errors.Is(err, context.Canceled))
	return nil
}

type submitted struct {
	h    *client.Handle
	args UploadArgs
}

// enqueue adds twenty uploads in one EnqueueMany call, then a flaky one and a
// rejected one with Enqueue.
func enqueue(ctx context.Context, c *client.Client) ([]submitted, error) {
	var specs []client.Spec
	for i := 1; i <= 20; i++ {
		a := UploadArgs{File: fmt.Sprintf("photo-%02d.jpg", i), Size: 4096 * (1 + i%8)}
		specs = append(specs, client.Spec{Args: a})
	}
	hs, err := c.EnqueueMany(ctx, specs)
	if err != nil {
		return nil, err
	}
	out := make([]submitted, 0, len(hs)+2)
	for i, h := range hs {
		out = append(out, submitted{h: h, args: specs[i].Args.(UploadArgs)})
	}
	for _, a := range []UploadArgs{
		{File: "report.pdf", Size: 65536, FailOnce: true},
		{File: "setup.exe", Size: 1024, Reject: true},
	} {
		h, err := c.Enqueue(ctx, a, &client.EnqueueOpts{MaxAttempts: 3, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		out = append(out, submitted{h: h, args: a})
	}
	fmt.Printf("enqueued %d tasks on queue %q (20 with EnqueueMany, 2 with Enqueue)\n", len(out), queue)
	return out, nil
}

// upload is the handler: it checksums the file's bytes after a simulated
// transfer of one millisecond per KiB.
func upload(ctx context.Context, a UploadArgs) (UploadResult, error) {
	t, _ := worker.TaskFromContext(ctx)
	if a.Reject {
		err := fmt.Errorf("%s: executables are not accepted", a.File)
		fmt.Printf("  [worker] %s attempt %d: %v (permanent, no retry)\n", a.File, t.Attempt, err)
		return UploadResult{}, worker.Permanent(err)
	}
	if a.FailOnce && t.Attempt == 1 {
		err := errors.New("storage timed out (simulated)")
		fmt.Printf("  [worker] %s attempt %d of %d: %v, will retry\n", a.File, t.Attempt, t.MaxAttempts, err)
		return UploadResult{}, err
	}
	if a.Hang {
		fmt.Printf("  [worker] %s: transfer started, it will not finish on its own\n", a.File)
		<-ctx.Done()
		fmt.Printf("  [worker] %s: stopped, cause: %v\n", a.File, context.Cause(ctx))
		return UploadResult{}, ctx.Err()
	}
	data := fileBytes(a.File, a.Size)
	select {
	case <-time.After(time.Duration(len(data)/1024) * time.Millisecond):
	case <-ctx.Done():
		return UploadResult{}, ctx.Err()
	}
	sum := sha256.Sum256(data)
	if t.Attempt > 1 {
		fmt.Printf("  [worker] %s attempt %d of %d: ok\n", a.File, t.Attempt, t.MaxAttempts)
	}
	return UploadResult{Bytes: len(data), SHA256: hex.EncodeToString(sum[:8])}, nil
}

// fileBytes generates n bytes seeded by name.
func fileBytes(name string, n int) []byte {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rand.New(rand.NewPCG(h.Sum64(), 0))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// report waits for every task's outcome, in submission order, and prints a
// table of them.
func report(ctx context.Context, c *client.Client, tasks []submitted) error {
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK ID\tFILE\tSTATE\tATTEMPTS\tRESULT")
	count := map[client.State]int{}
	for _, s := range tasks {
		res, err := client.Result[UploadResult](waitCtx, s.h)
		var te *client.TaskError
		if err != nil && !errors.As(err, &te) {
			return fmt.Errorf("wait for %s: %w", s.h.ID(), err)
		}
		in, ierr := s.h.Info(waitCtx)
		if ierr != nil {
			return ierr
		}
		count[in.State]++
		what := fmt.Sprintf("%5d bytes, sha256 %s…", res.Bytes, res.SHA256)
		if te != nil {
			what = te.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.h.ID(), s.args.File, in.State, in.Attempt, what)
	}
	fmt.Println()
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("\n%d succeeded, %d dead\n", count[client.StateSucceeded], count[client.StateDead])
	return nil
}

// deadLetters lists this run's dead tasks, then purges them so that a rerun on
// a real Redis starts clean.
func deadLetters(ctx context.Context, c *client.Client, tasks []submitted) error {
	ours := map[string]bool{}
	for _, s := range tasks {
		ours[s.h.ID()] = true
	}
	dead, err := c.DeadTasks(ctx, queue, 0, 100)
	if err != nil {
		return err
	}
	fmt.Printf("\ndead letters of queue %q (client.DeadTasks):\n", queue)
	for _, d := range dead {
		if !ours[d.ID] {
			continue
		}
		fmt.Printf("  %s  kind=%s  attempt=%d  died=%s\n    error: %s\n",
			d.ID, d.Kind, d.Attempt, d.DiedAt.Format(time.TimeOnly), strings.TrimSpace(d.Error))
		if err := c.PurgeDead(ctx, d.ID); err != nil {
			return err
		}
		fmt.Printf("    purged (client.RetryDead would run it again instead)\n")
	}
	return nil
}
