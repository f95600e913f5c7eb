package worker

import "context"

// ReportProgress records how far the handler's task has got: done units of
// total (bytes, for an upload; total 0 when not known yet). Any process
// reads it with client.Handle.Progress; a group sums its members'
// (patterns.Progress.WorkDone and WorkTotal). Calls are cheap and may be
// made as often as the handler likes: writes to Redis are coalesced to a
// few per second per task, the last report is written before the attempt's
// end is recorded, and a handler that returns quickly writes nothing.
// Outside a handler's ctx it does nothing. A failed write is logged, never
// returned: progress is advisory and never fails a task.
func ReportProgress(ctx context.Context, done, total int64) {
	// not yet: issue 19 contract (helper P1 owns this file)
}
