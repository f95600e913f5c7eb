// Package client enqueues typed tasks on Redis and waits for their outcomes.
//
// A task is a value of an args type that a worker (package
// github.com/taskfleet/async/worker) runs with the handler registered for the
// type's kind. Tasks live in queues; each queue is a Redis stream read by the
// workers of that queue through one consumer group. Everything about a task is
// kept in Redis: any process can enqueue, and any process can look a task up by
// its id.
//
// # Define the args
//
// An args type is a plain struct, encoded with msgpack, whose Kind method
// returns a stable name. The kind is what workers register handlers under, so
// it must not change when the Go type is renamed:
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
// Kinds, queue names and task ids follow the name rule [A-Za-z0-9._-]{1,128};
// anything else is refused with an error wrapping ErrInvalidName.
//
// # Register a handler and start a worker
//
// Workers usually run in their own processes; see package worker. In short:
//
//	w, err := worker.New(ctx, rdb, &worker.Config{Queues: map[string]int{"uploads": 1}})
//	worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
//		return UploadResult{Bytes: 42}, nil
//	})
//	err = w.Start(ctx)
//
// # Create a client and enqueue
//
// New takes a go-redis client, which it uses but never closes. It refuses
// Redis older than 6.2 and loads the Lua scripts.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	c, err := client.New(ctx, rdb, nil)
//	defer c.Close()
//
//	h, err := c.Enqueue(ctx, UploadArgs{Path: "a.png"}, &client.EnqueueOpts{
//		Queue:       "uploads",
//		MaxAttempts: 5,
//		Timeout:     time.Minute,
//	})
//
// A nil *EnqueueOpts means all defaults: Config.DefaultQueue,
// Config.DefaultMaxAttempts attempts, no timeout. Concurrent Enqueue calls
// share round trips; EnqueueMany sends a slice of Specs in pipelined batches
// and checks every spec before it sends anything.
//
// # Redis client options
//
// New reads the go-redis client's options once. The library relies on:
//   - ContextTimeoutEnabled: true, so that ctx deadlines bound socket reads
//     and writes. Without it go-redis waits for ReadTimeout on a dead
//     connection whatever deadline the caller (or the library) set; New
//     logs a warning, once per Redis client, when it is off or the client's
//     options cannot be read.
//   - MaxRetries, MaxRetryBackoff, PoolTimeout, DialTimeout, ReadTimeout and
//     WriteTimeout (and a cluster client's MaxRedirects): they decide how
//     long go-redis may resend a command whose reply it did not read (over
//     two minutes with the defaults). An enqueue's op marker, which makes a
//     resend add nothing, lives that long plus a margin and the client's own
//     LOADING retries, until the client read its reply: the next call to the
//     same queue cuts it to a 2 s grace. A timeout of -1 (none) leaves the
//     window unbounded; a marker whose reply was never read then lives about
//     an hour.
//
// # Errors: added or not
//
// An Enqueue error says whether the task was added: not added for bad input
// (ErrInvalidName, ErrPayloadTooLarge, any error returned before Redis was
// reached) and for ErrRedisFull (Redis, over its maxmemory, refused the
// write); added when a handle comes back with the error; maybe added for
// any other error (ctx ended, timeout, broken connection, Redis restarting),
// since the script may have run while its reply was lost. Within one call
// resends are safe, and an answer of LOADING (Redis reading its data back
// after a restart) is retried for up to 5 s. To retry after a "maybe"
// error, set EnqueueOpts.ID: a task that was added is returned with
// Duplicate true and not added again.
//
// # Idempotent enqueue
//
// With EnqueueOpts.ID set, the task's id is "<queue>/<ID>" and enqueueing the
// same ID again, while the task exists (pending, running, dead, or succeeded
// within its retention), adds nothing and returns a handle whose Duplicate
// method reports true. Without an ID the key is generated (the stream entry
// id) and every call adds a task.
//
// # Sharded queues
//
// A queue lives in one Redis Cluster hash slot, so on one master.
// Client.DeclareShards(ctx, "uploads", n) makes "uploads" a sharded queue:
// n physical queues, "uploads~<i>.<salt>", spread evenly over the masters,
// recorded in a registry in Redis that every client and worker reads.
// Declare it once, before producers use the queue (declaring again with
// the same n changes nothing; another n is refused; GrowShards adds
// shards to a live queue without losing or reordering a key's tasks, and
// declares a queue in use the same way). Producers keep
// enqueueing to "uploads": a task goes to the shard of its PartitionKey
// (so a key's tasks keep their order), else of its ID (so enqueueing an
// id again finds its task), else to the next shard in turn. A client reads
// the registry on its first use of a queue and again every 5 s; until it
// has read a declaration its tasks go to the plain queue, which workers
// serve as well. Workers configured with "uploads" serve it and all its
// shards, the queue keeping its weight whatever its number of shards.
//
// A task's id names its shard ("uploads~3.k7/<key>"), and Handle, Outcome,
// Cancel and the rest work with it as with any id. An id built from the
// queue's name and an EnqueueOpts.ID ("uploads/<ID>") finds the task on
// the shard of the ID (or in an earlier layout, or on the plain queue); a
// task placed by its partition key is found by its handle's id.
//
// Config.WaitReplicas makes enqueues durable across a failover: they
// return once that many replicas of the queue's master have the tasks
// (Redis WAIT), or ErrNotReplicated.
//
// # Wait for the outcome
//
// Result blocks until the task ended and decodes its result:
//
//	res, err := client.Result[UploadResult](ctx, h)
//
// The wait is woken by a Redis pub/sub notification from the worker that ends
// the task, not by polling. For a task that failed for good, the error is a
// *TaskError, and errors.Is(err, ErrDead) holds. Handle.State and Handle.Info
// read a snapshot without waiting, and Client.Task rebuilds a handle from an
// id in another process.
//
// # Dead letters
//
// A task that used up its attempts, returned worker.Permanent, crashed its
// workers too often, could not be decoded, or carried a payload over its
// worker's limit (its Outcome then matches ErrPayloadTooLarge, as an enqueue
// over the client's limit does) sits in its queue's dead-letter store. DeadTasks lists them newest first; RetryDead puts one back with a
// fresh count of attempts under the same id; PurgeDead deletes one.
//
// # Cancel, deadlines and context
//
// Handle.Cancel works from any process: a task not started never starts, and
// a running one's handler ctx is cancelled within milliseconds (cause
// ErrCancelled) through a control channel; the task ends cancelled, not
// retried, and Outcome matches context.Canceled and ErrCancelled.
// EnqueueOpts.Deadline is checked in Redis' time: a task past it never
// starts, a running handler's ctx carries it, and Outcome then matches
// context.DeadlineExceeded. EnqueueOpts.Meta, TraceParent and TraceState reach
// the handler (worker.Meta, worker.TraceContext). A task enqueued with a
// handler's ctx is that task's child: it inherits metadata, trace context and
// the remaining deadline, and cancelling the parent cancels it. WaitAll and
// CancelAll act on many handles.
//
// # Hooks and tracing
//
// Config.EnqueueHooks see each task before it is checked and sent (its
// kind, args and options): they may add metadata (a tenant, a request id)
// or refuse it, and so the call, before anything is added. With an
// OpenTelemetry SDK installed (or Config.TracerProvider), each Enqueue and
// EnqueueMany call is a producer span "send <queue>" with the messaging
// attributes; the tasks carry its context (as their TraceParent and
// TraceState) to the workers' consumer spans. Without one, a span in the
// ctx still reaches the handlers as their trace context.
//
// # Continuations
//
// Handle.ContinueWith registers a task that runs once the handle's task ended
// (succeeded, dead or cancelled), exactly once, in its own queue, from any
// process and before or after the end; ContinueOpts.OnlyOnSuccess skips it
// otherwise. Its handler reads the parent's outcome with worker.Parent or
// worker.ParentResult. Calling ContinueWith on the returned handle builds a
// chain; the last handle's Outcome gives the end of the chain.
//
// # Stop
//
// Close the client when done; it stops the pub/sub listener but leaves the
// Redis client open. Stop workers with Worker.Stop, bounded by a ctx.
package client
