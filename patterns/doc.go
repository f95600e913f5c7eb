// Package patterns runs grab/async's orchestration patterns across a fleet of
// workers, with their state in Redis, so that producers and workers may crash
// and restart at any point.
//
// # The patterns
//
// Every call takes ctx and the client first, then what to run, then how, and
// last its options: a pointer to the pattern's options struct (GroupOpts,
// CronOpts, PartitionerOpts, BatchOpts), where nil means every default. In
// one line each (specs is a []client.Spec, join a *client.Spec):
//
//	// ForkJoin: the members, then the join once every member ended.
//	g, err := patterns.ForkJoin(ctx, c, specs, join, nil)
//	// FailFast: the first member that fails ends the group and cancels the rest.
//	g, err := patterns.ForkJoin(ctx, c, specs, join, &patterns.GroupOpts{FailFast: true})
//	// Sub: a nested group, one member of the outer group.
//	g, err := patterns.ForkJoin(ctx, c, append(specs, patterns.Sub(more, join2, nil)), join, nil)
//	// InvokeAll: at most 4 members run at once, across the fleet.
//	g, err := patterns.InvokeAll(ctx, c, specs, 4, nil)
//	// Throttle: the members start at most 20 per second, across the fleet.
//	g, err := patterns.Throttle(ctx, c, specs, 20, time.Second, nil)
//	// Spread: the members start evenly over 10 seconds.
//	g, err := patterns.Spread(ctx, c, specs, 10*time.Second, nil)
//	// ContinueWith: a task that runs once the group ended.
//	h, err := g.ContinueWith(ctx, Report{}, nil)
//	// Partition: one task per key, with that key's items.
//	p, err := patterns.Partition(ctx, c, files, bucketOf, uploadAll, nil)
//	// Partitioner: items appended by any process; Flush starts a Partition of them.
//	pt, err := patterns.NewPartitioner(c, "uploads", bucketOf, nil)
//	// Batch: items appended by any process, handled up to 100 at a time.
//	b, err := patterns.NewBatch[Row, int64](c, &patterns.BatchOpts{MaxSize: 100, MaxWait: time.Second})
//	// Repeat: the task every 5 minutes, until RemoveRepeat.
//	s, err := patterns.Repeat(ctx, c, "sync-catalog", spec, 5*time.Minute)
//	// RepeatCron: the task at 02:00 every day, UTC (see Cron expressions).
//	s, err := patterns.RepeatCron(ctx, c, "nightly-report", spec, "0 2 * * *", nil)
//
// # Groups
//
// ForkJoin, InvokeAll, Throttle, Spread and Partition start a group: its
// members are ordinary tasks, enqueued in pipelined chunks, run by any
// worker that has their kind's handler. The group's state (counters, the set
// of members that have not ended, its continuations) lives in the hash slot
// of its home queue. A member's end is counted exactly once, by the script
// that removes it from the set of open members; the group ends in that same
// script, and its join (a continuation of the group) starts exactly once.
// For members in the group's own queue the counting happens inside the
// script that records the member's outcome; members in other queues reach
// the group through an outbox in a second, idempotent step. Nothing is
// counted in a process's memory.
//
// A Group handle reports Progress in one round trip, waits for the end
// (Wait), reads every member's outcome in submission order (Outcome,
// Results), takes continuations (ContinueWith) and cancels (Cancel). Open
// rebuilds a handle from a group id in any process. In a join's handler,
// JoinOutcomes and JoinResults read how the members ended. A group's state
// is a GroupState: GroupRunning until it ends GroupSucceeded, GroupFailed or
// GroupCancelled.
//
// # Time: Spread, Repeat, RepeatCron and the coordinator
//
// Spread's members, Repeat's and RepeatCron's slots and Batch's open batches
// wait in Redis with their due times, in Redis' clock. A coordinator
// (package coordinator; any number may run, in processes of their own or
// inside workers) moves each within milliseconds of its time; workers also
// move their own queues' due tasks, within a second. Repeat schedules need
// at least one coordinator.
//
// # Cron expressions
//
// RepeatCron takes five fields separated by spaces: minute (0-59), hour
// (0-23), day of month (1-31), month (1-12, or JAN to DEC) and day of week
// (0-7, or SUN to SAT; 0 and 7 are both Sunday). Names are case-insensitive.
// Each field is a comma-separated list of:
//
//   - "*" (or "?"): every value;
//   - a value, "5";
//   - a range, inclusive: "1-5", "MON-FRI";
//   - a step from the field's first value: "*/15" (minutes 0, 15, 30, 45);
//   - a step over a range: "1-9/2" (1, 3, 5, 7, 9);
//   - a step from a value to the field's last: "5/20" (minutes 5, 25, 45).
//
// The two day fields combine as in Vixie cron: when neither starts with * (or
// ?), a day matching either fires ("0 0 1 * MON": the 1st of the month and
// every Monday); when one does, a day must match both ("0 0 */2 * MON":
// Mondays with an odd date). Instead of the five fields, a descriptor:
// @yearly or @annually ("0 0 1 1 *"), @monthly ("0 0 1 * *"), @weekly ("0 0
// * * 0"), @daily or @midnight ("0 0 * * *") and @hourly ("0 * * * *").
// Nothing else is accepted (no seconds field, no @every, no L, W or #), and
// an expression that can never fire, such as "0 0 30 2 *", is refused.
//
// Times are in UTC unless CronOpts.Location names a time zone. There, a wall
// time that does not exist on a day (skipped by a daylight-saving change)
// does not fire that day, and one that occurs twice fires once, at its first
// occurrence, unless the hour field is * (every hour fires, the repeated
// one twice).
//
// # Limits without a group
//
// Fleet-wide limits per task kind or queue, which need no group, are set on
// the workers: worker.Config.KindLimits and QueueLimits; rates per key with
// client.EnqueueOpts.RateKey and worker.Config.RateLimits.
package patterns
