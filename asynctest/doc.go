// Package asynctest is the test kit for code built on async: the whole
// distributed workflow — producers, workers, coordinator, Redis — inside
// one go test, in milliseconds.
//
// # A fleet in a test
//
// NewFleet starts an embedded Redis (miniredis), a client, a coordinator
// and workers whose handlers run for real, with timings set for tests
// (short blocking reads, a short lease, retries at once); everything is
// stopped at the test's cleanup, and the goroutines the fleet started are
// checked for leaks there:
//
//	f := asynctest.NewFleet(t, func(w *worker.Worker) {
//		worker.Handle(w, upload)
//		worker.Handle(w, report)
//	}, nil)
//	g, err := patterns.ForkJoin(ctx, f.Client(), specs, &join, nil)
//	...
//	sizes := asynctest.WaitResult[[]int](f, joinHandle)
//
// # A handler alone
//
// Run calls one handler synchronously with a task's context (id, attempt,
// metadata, trace context, deadline) and, for handlers that read them, the
// end of the task it continues (worker.ParentResult) or of a join's
// members (patterns.JoinResults); RunBatch does the same for a batch
// handler. Both return the handler's result or error and the tasks it
// enqueued from its ctx.
//
// # Assertions and waits
//
// Every task enqueued through the fleet's clients (Fleet.Client,
// Fleet.NewClient) is recorded: RequireEnqueued, RequireEnqueuedKind,
// RequireNotEnqueued and EnqueuedArgs assert on them; WaitTask, WaitGroup
// and WaitResult wait for a task or group to reach a state, and say what
// was there instead when it does not.
//
// # Time and failures
//
// Options.Clock stops Redis' clock and Fleet.Advance moves it, running the
// coordinator at the new time: a Repeat every hour fires three slots in
// three calls, without sleeping. FailNext fails the next attempts of a
// kind; LoseWorker cuts a worker off from Redis mid-task, so another takes
// the task over, as after a crash.
//
// # Real Redis
//
// With ASYNCTEST_REDIS_URL set (redis://host:port/db), fleets run on that
// server instead of miniredis, each owning the database for its life
// (fleets of parallel tests and packages take turns). The kit refuses a
// database holding keys it did not write. Everything works there except
// moving the clock: Advance and Options.Clock need miniredis (a test
// that calls Advance on a real Redis is skipped; Options.Embedded keeps a
// fleet on miniredis whatever the variable says).
//
// # Outside tests
//
// Standalone runs a function with a testing.TB of its own, for Examples
// and programs that want a throwaway fleet.
package asynctest
