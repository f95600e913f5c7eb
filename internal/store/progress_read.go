package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
)

// The inspector's reads of progress, many at once (a page of
// tasks, a group's members, a page of groups). Each is one pipeline: one
// round trip (one per master of a cluster). What they read goes through
// the codec gate (codec.DecodeProgress, codec.DecodeProgressSum). Unlike
// ReadProgresses and ReadGroupWorks, which fail whole, a malformed record
// fails only its own task's or group's read: a page shows the others, and
// says which one could not be read.

// TaskProgress is a task's last report as read: Ok false when there is
// none (never reported, or expired), Err set when the record is there but
// malformed (Ok false then).
type TaskProgress struct {
	codec.ProgressRecord
	Ok  bool
	Err error
}

// TasksProgress reads the reports of the tasks ids ("<queue>/<key>"), in
// order: one HMGET of each one's progress hash, in one pipeline. A
// malformed id reads as no report.
func TasksProgress(ctx context.Context, rdb redis.Cmdable, ids []string) ([]TaskProgress, error) {
	out := make([]TaskProgress, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			qn, key, err := keys.SplitTaskID(id)
			if err != nil {
				continue
			}
			cmds[i] = p.HMGet(ctx, keys.ForQueue(qn).Progress(key), "done", "total", "attempt", "at")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the progress of %d task(s): %w", len(ids), err)
	}
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Result()
		if err != nil {
			return nil, fmt.Errorf("read the progress of task %s: %w", ids[i], err)
		}
		rec, ok, err := codec.DecodeProgress(v[0], v[1], v[2], v[3])
		if err != nil {
			out[i].Err = fmt.Errorf("progress of task %s: %w", ids[i], err)
			continue
		}
		out[i] = TaskProgress{ProgressRecord: rec, Ok: ok}
	}
	return out, nil
}

// GroupsWork reads the sums of the groups gs, in order: one HMGET of each
// one's progress hash (its running sums, O(1) whatever its size), in one
// pipeline. A group none of whose members reported reads as zero; a
// malformed sum has its error at the group's index in errs (its sums 0).
func GroupsWork(ctx context.Context, rdb redis.Cmdable, gs []GroupRef) (ws []GroupWork, errs []error, err error) {
	ws, errs = make([]GroupWork, len(gs)), make([]error, len(gs))
	if len(gs) == 0 {
		return ws, errs, nil
	}
	cmds := make([]*redis.SliceCmd, len(gs))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range gs {
			cmds[i] = p.HMGet(ctx, g.Home.GroupProgress(g.ID), "~d", "~t")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read the work of %d group(s): %w", len(gs), err)
	}
	for i, c := range cmds {
		v, err := c.Result()
		if err != nil {
			return nil, nil, fmt.Errorf("read the work of group %s: %w", gs[i], err)
		}
		d, derr := codec.DecodeProgressSum("~d", v[0])
		t, terr := codec.DecodeProgressSum("~t", v[1])
		if err := errors.Join(derr, terr); err != nil {
			errs[i] = fmt.Errorf("work of group %s: %w", gs[i], err)
			continue
		}
		ws[i] = GroupWork{Done: d, Total: t}
	}
	return ws, errs, nil
}
