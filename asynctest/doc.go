// Package asynctest is the test kit for code built on async: the whole
// distributed workflow — producers, workers, coordinator, Redis — inside
// one go test, in milliseconds, on an embedded miniredis or on a real
// Redis.
//
// # A fleet in a test
//
// NewFleet starts an embedded Redis (miniredis), a client, a coordinator
// and workers whose handlers run for real, with timings set for tests
// (see below). Everything is stopped at the test's cleanup (the workers
// let their running handlers finish), and the test fails if a goroutine
// the fleet started, a handler's too, still runs 5s later (but those
// Options.IgnoreGoroutines names):
//
//	f := asynctest.NewFleet(t, func(w *worker.Worker) {
//		worker.Handle(w, thumbnail)
//		worker.Handle(w, album) // the join: patterns.JoinResults
//	}, &asynctest.Options{Workers: 2})
//	g, err := patterns.ForkJoin(ctx, f.Client(), specs, &client.Spec{Args: Album{}}, nil)
//	...
//	h, err := g.Join(ctx)
//	...
//	total := asynctest.WaitResult[int](f, h)
//
// A ForkJoin with a join and a chain of three continuations takes about
// 50ms on miniredis, from NewFleet to the end of the cleanup
// (BenchmarkFleetForkJoinChain, without -race; 60 to 70ms for the first
// fleet of a test process). Options set the number of workers, their
// configuration (queues, concurrency, middleware...), the client's and the
// coordinator's; StartWorkers adds workers later, for instance once the
// handlers can refer to the fleet's client. Fleet.Redis, Miniredis,
// Inspector, Coordinator and Workers give the parts.
//
// # A handler alone
//
// Run calls one handler synchronously, as a worker runs one attempt of its
// task, with no worker nor coordinator: its ctx carries a task (id,
// queue, attempt, deliveries, metadata, trace context, deadline, attempt
// timeout: RunOpts), and, for the handlers that read them, the end of the
// task it continues (RunOpts.Parent: worker.Parent, worker.ParentResult)
// or of a join's members (RunOpts.Join: patterns.JoinOutcomes,
// JoinResults, JoinGroup). RunBatch does the same for a batch handler
// (worker.HandleBatch) and checks its answer as a worker does. Both return
// the handler's result or error, after the msgpack round trips a worker
// and a caller make, and the tasks it enqueued from its ctx (its
// children: real tasks in the fleet's Redis). Succeeded, Dead, Cancelled
// and GroupEnded make the ends.
//
// # Assertions and waits
//
// Every task enqueued through the fleet's clients (Fleet.Client,
// Fleet.NewClient) is recorded once Redis confirmed it, by every path:
// Enqueue, EnqueueMany, continuations, groups and their joins, Partition,
// Batch items, and what handlers enqueue from their ctx. RequireEnqueued
// asserts that a task of a kind with equal args was enqueued, narrowed by
// a Want (queue, parent, group, options, an exact count);
// RequireEnqueuedKind does so without args, RequireNotEnqueued and
// RequireNotEnqueuedArgs assert that none was, EnqueuedArgs lists a
// kind's args, typed, and Fleet.Enqueued the whole record (a call that
// found its task already there is a duplicate, which matches only with
// Want.Duplicates). The tasks a repeat schedule makes at
// its slots come from the coordinator, not from a client, and are not
// recorded: patterns.Repeats gives each schedule's last task.
//
// Fleet.WaitTask, Fleet.WaitGroup and WaitResult wait for a task or group
// to reach a state, up to Options.WaitTimeout (10s by default), and fail
// at once when it ended in another. A failure says what was wanted and
// what was there instead: the tasks of the kind and how each differs, or
// the task's state, attempt and last error, or the group's counters and
// members by state.
//
// # Time and failures
//
// Options.Clock stops Redis' clock at a time; Fleet.Advance moves it on
// (stopping it first if it ran) and runs the coordinator's duties at the
// new time, so that what fell due — delayed tasks, retries, repeat slots
// — is queued when Advance returns: a Repeat every hour fires three slots
// in three calls, without sleeping. Fleet.Now reads Redis' time, which
// every process of the fleet reads too while the clock stands still:
// Advance(d) reaches exactly what is due d from now, a task enqueued with
// Delay d included (see Fleet.Advance).
//
// Fleet.FailNext fails the next attempts of a kind without running the
// handler (ErrInjected, or the error given: worker.Permanent ends the task
// at once); they are retried as a handler's failures are.
// Fleet.LoseWorker cuts the worker that runs the next attempt of a kind
// off from Redis, as its process dying would, as the handler starts
// (LoseDuring) or once it returned (LoseAfter): another worker of the
// fleet takes the task over within about Lease/4 and runs it again, and
// whatever the lost worker records later is fenced. They test retry and
// idempotency logic.
//
// # Real Redis
//
// With EnvRedisURL (ASYNCTEST_REDIS_URL=redis://host:port/db) set, fleets
// run on that server instead of miniredis. Everything works there but
// moving the clock, since a real Redis' clock can be neither stopped nor
// moved: a fleet with Options.Clock always runs on miniredis,
// Options.Embedded keeps any fleet there, and a test that calls
// Fleet.Advance on a fleet that runs on the real Redis is skipped
// (t.Skip).
//
// A fleet owns the database it runs in for its whole life: it takes a
// lock key there (a fleet of a parallel test, or of another package's
// test process, waits for it, up to two minutes), empties the database, and
// releases it at cleanup. So fleets on a real Redis run one at a time (a
// second fleet of the same test fails at once, as it would wait for ever:
// start one per test), and the kit needs a database of its own:
// one that holds keys the kit did not write (its marker key is missing) is
// refused, never emptied.
//
// # Outside tests
//
// Standalone runs a function with a testing.TB of its own, for Examples
// and for programs that want a throwaway fleet (a playground, a tool):
// it returns nil, ErrSkipped, or an error holding what the function
// logged when it failed.
//
// # The fleet's timings
//
// The fields of Options.Worker and Options.Coordinator left zero get
// timings for tests: the workers' BlockTimeout is TestBlockTimeout (10ms:
// how long a read of new tasks waits, and so how long stopping a worker
// takes), their Lease TestLease (2s) and their Backoff TestBackoff (none:
// a failed attempt runs again at once); the coordinator's MaxSleep is
// TestMaxSleep (100ms). Every wait of the kit is bounded by
// Options.WaitTimeout (10s). Set a field to test with another value.
package asynctest
