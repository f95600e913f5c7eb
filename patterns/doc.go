// Package patterns runs grab/async's orchestration patterns across a fleet of
// workers, with their state in Redis: ForkJoin (with a join task, fail fast
// and nesting) and InvokeAll (bounded concurrency across every process).
//
// A pattern starts a group: its members are ordinary tasks, enqueued in
// pipelined chunks, run by any worker that has their kind's handler. The
// group's state (counters, the set of members that have not ended, its
// continuations) lives in the hash slot of its home queue. A member's end is
// counted exactly once, by the script that removes it from the set of open
// members; the group ends in that same script, and its join (a continuation
// of the group) starts exactly once. For members in the group's own queue
// the counting happens inside the script that records the member's outcome;
// members in other queues reach the group through an outbox in a second,
// idempotent step. Nothing is counted in a process's memory, so workers and
// producers may crash and restart at any point.
//
// A Group handle reports Progress in one round trip, waits for the end
// (Wait), reads every member's outcome in submission order (Outcome,
// Results), takes continuations (ContinueWith) and cancels (Cancel). Open
// rebuilds a handle from a group id in any process. In a join's handler,
// JoinOutcomes and JoinResults read how the members ended.
//
// Fleet-wide limits per task kind or queue, which need no group, are set on
// the workers: worker.Config.KindLimits and QueueLimits.
package patterns
