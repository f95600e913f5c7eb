package inspect

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// Progress in the task and group views.

// progressOf is a report as the views show it: nil for none, and for a
// malformed one (whose error is returned, for Why).
func progressOf(r store.TaskProgress) (*Progress, string) {
	if r.Err != nil {
		return nil, "malformed progress record: " + r.Err.Error()
	}
	if !r.Ok {
		return nil, ""
	}
	return &Progress{Done: r.Done, Total: r.Total, Attempt: r.Attempt, Updated: time.UnixMilli(r.AtMs)}, ""
}

// fillProgress sets the Progress of each of ts, in one pipeline; a
// malformed record is said in Why.
func (i *Inspector) fillProgress(ctx context.Context, ts []TaskInfo) error {
	if len(ts) == 0 {
		return nil
	}
	ids := make([]string, len(ts))
	for j, t := range ts {
		ids[j] = t.ID
	}
	rs, err := store.TasksProgress(ctx, i.rdb, ids)
	if err != nil {
		return err
	}
	for j, r := range rs {
		var bad string
		ts[j].Progress, bad = progressOf(r)
		if bad != "" {
			ts[j].Why = joinWhy(ts[j].Why, bad)
		}
	}
	return nil
}

// joinWhy adds b to the reasons a.
func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// groupsWork reads the work sums of the groups refs, in one pipeline, and
// gives each to set (j its index in refs): the sums, or the error of a
// malformed one (the sums 0 then), for WorkError, so that a page of
// groups still shows the others.
func (i *Inspector) groupsWork(ctx context.Context, refs []store.GroupRef, set func(j int, done, total int64, bad string)) error {
	ws, errs, err := store.GroupsWork(ctx, i.rdb, refs)
	if err != nil {
		return err
	}
	for j, w := range ws {
		if errs[j] != nil {
			set(j, 0, 0, errs[j].Error())
			continue
		}
		set(j, w.Done, w.Total, "")
	}
	return nil
}
