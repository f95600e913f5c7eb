// Package worker runs handlers for typed tasks enqueued with package
// github.com/taskfleet/async/client.
//
// A Worker reads the streams of its queues through each queue's consumer
// group, runs up to Config.Concurrency handlers at once, and records every
// outcome with one Lua script fenced by the attempt's token (entry id,
// consumer name, delivery count). Any number of workers, in one process or
// many, can share a queue.
//
// # Define the args
//
// The args type is shared with the code that enqueues; its Kind is the
// stable name handlers are registered under:
//
//	type UploadArgs struct {
//		Path string
//	}
//
//	func (UploadArgs) Kind() string { return "upload" }
//
//	type UploadResult struct {
//		Bytes int
//	}
//
// # Register a handler
//
// Handle is a top-level generic function because methods cannot take type
// parameters. The handler receives decoded args; its result is encoded with
// msgpack and kept as the task's result (use struct{} for none):
//
//	w, err := worker.New(ctx, rdb, &worker.Config{
//		Queues:      map[string]int{"uploads": 3, "default": 1},
//		Concurrency: 20,
//	})
//	worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
//		t, _ := worker.TaskFromContext(ctx) // id, attempt, deliveries
//		n, err := upload(ctx, a.Path)
//		if errors.Is(err, errUnsupported) {
//			return UploadResult{}, worker.Permanent(err) // no retry: dead-letter it
//		}
//		return UploadResult{Bytes: n}, err
//	})
//
// Handle panics on a programming error: a kind registered twice, a kind that
// breaks the name rule, or a worker already started.
//
// # Start
//
// Start creates missing consumer groups and returns once the worker's loops
// run: fetching, heartbeats, takeover of expired leases, moving due retries
// into their streams, and housekeeping.
//
//	if err := w.Start(ctx); err != nil { ... }
//
// # Enqueue and wait
//
// Tasks are enqueued and awaited with package client:
//
//	h, err := c.Enqueue(ctx, UploadArgs{Path: "a.png"}, &client.EnqueueOpts{Queue: "uploads"})
//	res, err := client.Result[UploadResult](ctx, h)
//
// # Failures and retries
//
// A handler that returns an error fails the attempt. The task is retried after
// Config.Backoff (DefaultBackoff: 1s doubling to 1h, ±25%) until
// EnqueueOpts.MaxAttempts is used up, then dead-lettered. RetryAfter chooses
// the delay of the next attempt; Permanent dead-letters at once. A panic is a
// failed attempt whose error (a *PanicError) carries the stack.
//
// A running task is leased: heartbeats every Config.Lease/4 keep the lease,
// and a worker that stops heartbeating (it crashed or lost Redis) loses the
// task to another worker once the lease ends. Delivery is at least once, so
// handlers should be idempotent. An attempt delivered more than
// Config.MaxDeliveries times without an outcome is dead-lettered as poison.
// When no heartbeat gets through for most of the lease (Redis stalled, or the
// worker's calls did), the handler's ctx is cancelled (cause ErrLeaseLost)
// before the lease ends, and once it returns its task is handed back to its
// queue at once. A task delivered to this worker by a read or takeover
// whose reply was lost on the way (go-redis' resend does not return it) is
// taken up at the next takeover round, under the same delivery, rather than
// left to wait out its lease. A task whose kind has no handler in this
// worker is handed back to its queue with a growing delay (250ms up to 30s)
// for a worker that has one; an entry that cannot be decoded, or whose task
// key, kind or options break the rules the client enforces, is
// dead-lettered as malformed.
//
// # Watch and wrap
//
// Config.Observers receive an Event for each thing that happens to a task
// here: started (with how long it queued, in Redis time), succeeded,
// retried, dead, cancelled (with the handler's run time), lease_lost,
// throttled and limit_parked; package metrics builds Prometheus metrics on
// them. Config.Logger gets one line per step of each task, with its id,
// kind, queue, attempt and duration: debug on start and success, warn on a
// failure that retries, error on death, info on cancel and on a lost
// lease.
//
// Middleware wraps every handler as net/http's does: a Handler gets the
// attempt (its Task, metadata and args) and returns the encoded result or
// an error.
//
//	tenancy := func(next worker.Handler) worker.Handler {
//		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
//			if a.Meta["tenant"] == "" {
//				return nil, worker.Permanent(errors.New("no tenant"))
//			}
//			return next.Handle(withTenant(ctx, a.Meta["tenant"]), a)
//		})
//	}
//	w, err := worker.New(ctx, rdb, &worker.Config{Middleware: []worker.Middleware{tenancy}})
//
// Config.Middleware runs first outermost, then those added with Use; the
// worker's own panic recovery stays outside them all.
//
// With an OpenTelemetry SDK installed (or Config.TracerProvider), each
// attempt is a consumer span "process <queue>", a child of the producer
// span of the task's enqueue and linked to it, with the messaging
// attributes and the handler's error; the handler's ctx carries it, so the
// tasks it enqueues continue the trace.
//
// # Redis
//
// Give the worker a client with ContextTimeoutEnabled set: without it
// go-redis reads a reply until its ReadTimeout whatever the ctx says, so one
// dead pooled connection holds a heartbeat or an outcome that long (New logs
// a warning). Leases stay safe either way. With maxmemory-policy noeviction,
// a Redis over its limit still takes outcomes (each frees its task's
// pending entry); an outcome it refuses for memory is kept, its lease
// heartbeated, and retried with backoff rather than run again.
//
// # Stop
//
// Stop stops fetching and waits for running handlers; if its ctx ends first,
// the handlers are cancelled (cause ErrShutdown) and their tasks handed back
// to their queues at once. StopAndCancel cancels them right away.
//
//	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	err := w.Stop(ctx)
//
// A Worker is not reusable: Start after Stop fails. The Redis client passed to
// New is never closed by the worker.
package worker
