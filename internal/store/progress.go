package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// What handlers report with worker.ReportProgress.

// ProgressReport is one write of a run's report, with its fence: the
// attempt and the delivery's ordinal within it (Seq) order runs; Run (an
// id of the run) and N (its write count, from 1) order one run's writes.
type ProgressReport struct {
	Done, Total int64
	Attempt     int
	Seq         int64
	Run         string
	N           int64
	RetainMs    int64 // the task's retention: the lifetime of its report from this write
}

// WriteProgress records r as the report of the task with key key
// (pgset.lua). It reports false when a newer run's report is there.
func WriteProgress(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, r ProgressReport) (bool, error) {
	ret := min(max(r.RetainMs, 1), codec.MaxRetainMs)
	n, err := script.ProgressSet.Run(ctx, rdb, []string{q.Progress(key)}, r.Done, r.Total, r.Attempt, r.Seq, r.Run, r.N, ret).Int64()
	if err != nil {
		return false, fmt.Errorf("record progress of task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return n == 1, nil
}

// WriteGroupProgress records r as member's report in its group g's
// progress hash (gpset.lua). It reports false when a newer run's report is
// there, or the group is gone.
func WriteGroupProgress(ctx context.Context, rdb redis.Scripter, g GroupRef, member string, r ProgressReport) (bool, error) {
	n, err := script.GroupProgressSet.Run(ctx, rdb, []string{g.Home.GroupProgress(g.ID), g.Home.Group(g.ID)},
		member, r.Done, r.Total, r.Attempt, r.Seq, r.Run, r.N).Int64()
	if err != nil {
		return false, fmt.Errorf("record progress of task %s in group %s: %w", member, g, err)
	}
	return n == 1, nil
}

// ReadProgress reads the report of the task with key key, through the
// codec's gate; ok is false when there is none.
func ReadProgress(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) (codec.ProgressRecord, bool, error) {
	v, err := rdb.HMGet(ctx, q.Progress(key), "done", "total", "attempt", "at").Result()
	if err != nil {
		return codec.ProgressRecord{}, false, fmt.Errorf("read progress of task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return decodeProgress(q, key, v)
}

func decodeProgress(q keys.Queue, key string, v []any) (codec.ProgressRecord, bool, error) {
	if len(v) != 4 {
		return codec.ProgressRecord{}, false, fmt.Errorf("read progress of task %s: %d values, want 4", keys.TaskID(q.Name, key), len(v))
	}
	rec, ok, err := codec.DecodeProgress(v[0], v[1], v[2], v[3])
	if err != nil {
		return codec.ProgressRecord{}, false, fmt.Errorf("read progress of task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return rec, ok, nil
}

// ReadProgresses reads the reports of many tasks (ids "<queue>/<key>") in
// one pipeline; a task without one has ok false at its index.
func ReadProgresses(ctx context.Context, rdb redis.Cmdable, ids []string) ([]codec.ProgressRecord, []bool, error) {
	recs := make([]codec.ProgressRecord, len(ids))
	oks := make([]bool, len(ids))
	cmds := make([]*redis.SliceCmd, len(ids))
	qs := make([]keys.Queue, len(ids))
	ks := make([]string, len(ids))
	for i, id := range ids {
		qn, key, err := keys.SplitTaskID(id)
		if err != nil {
			return nil, nil, err
		}
		qs[i], ks[i] = keys.ForQueue(qn), key
	}
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range ids {
			cmds[i] = p.HMGet(ctx, qs[i].Progress(ks[i]), "done", "total", "attempt", "at")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("read progress of %d tasks: %w", len(ids), err)
	}
	for i := range ids {
		var derr error
		recs[i], oks[i], derr = decodeProgress(qs[i], ks[i], cmds[i].Val())
		if derr != nil {
			return nil, nil, derr
		}
	}
	return recs, oks, nil
}

// GroupWork is the sum of what a group's members reported: done and total
// units (a member that succeeded counts as done in full).
type GroupWork struct {
	Done, Total int64
}

// ReadGroupWithWork reads g's counters (as ReadGroup) and its members'
// summed reports in one round trip (a pipeline: both keys are in the
// group's home slot).
func ReadGroupWithWork(ctx context.Context, rdb redis.Cmdable, g GroupRef) (GroupState, GroupWork, error) {
	var hc, wc *redis.SliceCmd
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		hc = p.HMGet(ctx, g.Home.Group(g.ID), groupFields...)
		wc = p.HMGet(ctx, g.Home.GroupProgress(g.ID), "~d", "~t")
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return GroupState{}, GroupWork{}, fmt.Errorf("read group %s: %w", g, err)
	}
	st := parseGroupState(hc.Val())
	wv := wc.Val()
	if len(wv) != 2 {
		return GroupState{}, GroupWork{}, fmt.Errorf("read progress of group %s: %d values, want 2", g, len(wv))
	}
	var w GroupWork
	if w.Done, err = codec.DecodeProgressSum("~d", wv[0]); err != nil {
		return GroupState{}, GroupWork{}, fmt.Errorf("read progress of group %s: %w", g, err)
	}
	if w.Total, err = codec.DecodeProgressSum("~t", wv[1]); err != nil {
		return GroupState{}, GroupWork{}, fmt.Errorf("read progress of group %s: %w", g, err)
	}
	return st, w, nil
}

// ReadGroupWorks reads the summed reports of many groups (any home
// queues) in one pipeline, for lists of groups; a group without reports
// (or gone) reads as zero.
func ReadGroupWorks(ctx context.Context, rdb redis.Cmdable, gs []GroupRef) ([]GroupWork, error) {
	cmds := make([]*redis.SliceCmd, len(gs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, g := range gs {
			cmds[i] = p.HMGet(ctx, g.Home.GroupProgress(g.ID), "~d", "~t")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read progress of %d groups: %w", len(gs), err)
	}
	out := make([]GroupWork, len(gs))
	for i, g := range gs {
		v := cmds[i].Val()
		if len(v) != 2 {
			return nil, fmt.Errorf("read progress of group %s: %d values, want 2", g, len(v))
		}
		var derr error
		if out[i].Done, derr = codec.DecodeProgressSum("~d", v[0]); derr != nil {
			return nil, fmt.Errorf("read progress of group %s: %w", g, derr)
		}
		if out[i].Total, derr = codec.DecodeProgressSum("~t", v[1]); derr != nil {
			return nil, fmt.Errorf("read progress of group %s: %w", g, derr)
		}
	}
	return out, nil
}
