package client

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Progress is what a task's handler last reported with
// worker.ReportProgress.
type Progress struct {
	Done    int64     // units done (bytes, for an upload)
	Total   int64     // units in all; 0 when the handler did not know
	Attempt int       // the attempt that reported it
	Updated time.Time // when it was written, in Redis' clock
}

// Reported reports whether the task's handler reported any progress.
func (p Progress) Reported() bool { return !p.Updated.IsZero() }

// Progress returns what the task's handler last reported (zero Progress
// when it reported nothing, or the report's retention passed), in one
// round trip. A report is written at most a few times a second while the
// handler runs, and its last one before the attempt's end is recorded (see
// worker.ReportProgress); a later attempt's first write replaces an
// earlier attempt's report (Attempt tells which one it is). A report is
// kept for the task's retention from its last write, and deleted with the
// task (client.PurgeDead). A record that this library could not have
// written is refused with an error.
func (h *Handle) Progress(ctx context.Context) (Progress, error) {
	r, err := h.c.eng.Resolve(ctx, h.ref) // an id of a sharded queue names a shard
	if err != nil {
		return Progress{}, err
	}
	rec, ok, err := store.ReadProgress(ctx, h.c.eng.Redis(), keys.ForQueue(r.Queue), r.Key)
	if err != nil || !ok {
		return Progress{}, err
	}
	return Progress{Done: rec.Done, Total: rec.Total, Attempt: rec.Attempt, Updated: time.UnixMilli(rec.AtMs)}, nil
}
