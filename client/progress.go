package client

import (
	"context"
	"errors"
	"time"
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
// when it reported nothing, or the report's retention passed).
func (h *Handle) Progress(ctx context.Context) (Progress, error) {
	return Progress{}, errors.New("not yet") // issue 19 contract (helper P1)
}
