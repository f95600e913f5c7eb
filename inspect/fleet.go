package inspect

import (
	"context"
	"slices"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// workers lists the registrations that have not expired (Workers).
func (i *Inspector) workers(ctx context.Context) ([]WorkerInfo, error) {
	rs, err := store.Workers(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	out := make([]WorkerInfo, len(rs))
	for j, r := range rs {
		out[j] = WorkerInfo{Name: r.Name, Host: r.Host, PID: r.PID, Queues: r.Queues, Concurrency: r.Concurrency,
			Running: r.Running, Paused: r.Paused, Started: msTime(r.StartedMs), LastHeartbeat: msTime(r.HeartbeatMs)}
	}
	return out, nil
}

// msTime is the time of Unix ms, zero for 0.
func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// groups lists the groups homed in queue, or in every registered queue
// when queue is "" (Groups), newest first. It reads each queue's index of
// groups and drops from it the groups that expired.
func (i *Inspector) groups(ctx context.Context, queue string) ([]GroupInfo, error) {
	names := []string{queue}
	if queue == "" {
		var err error
		if names, err = store.QueueNames(ctx, i.rdb); err != nil {
			return nil, err
		}
	} else if err := keys.ValidateName("queue", queue); err != nil {
		return nil, err
	}
	var out []GroupInfo
	for _, n := range names {
		q := keys.ForQueue(n)
		gs, gone, err := store.ListGroups(ctx, i.rdb, q)
		if err != nil {
			return nil, err
		}
		if err := store.PruneGroups(ctx, i.rdb, q, gone); err != nil {
			return nil, err
		}
		for _, g := range gs {
			st := g.State
			if st == "running" {
				st = "open"
			}
			out = append(out, GroupInfo{ID: g.Ref.String(), Home: n, State: st, Members: g.Members, Succeeded: g.Succeeded,
				Failed: g.Failed, Running: g.Open, Held: g.Held, Created: msTime(g.CreatedMs), Join: g.Join})
		}
	}
	slices.SortStableFunc(out, func(a, b GroupInfo) int { return b.Created.Compare(a.Created) })
	refs := make([]store.GroupRef, len(out))
	for j, g := range out {
		var err error
		if refs[j], err = store.ParseGroupRef(g.ID); err != nil {
			return nil, err
		}
	}
	if err := i.groupsWork(ctx, refs, func(j int, done, total int64, bad string) {
		out[j].WorkDone, out[j].WorkTotal, out[j].WorkError = done, total, bad
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// repeats lists every Repeat schedule, by name (Repeats), as
// patterns.Repeats reads them.
func (i *Inspector) repeats(ctx context.Context) ([]RepeatInfo, error) {
	rs, err := store.ListRepeats(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	out := make([]RepeatInfo, len(rs))
	for j, r := range rs {
		out[j] = RepeatInfo{Name: r.Name, Queue: r.Queue, Kind: r.Kind, NextFire: msTime(r.NextMs)}
		if r.Cron != "" {
			out[j].Schedule = r.Cron
			if r.TZ != "" {
				out[j].Schedule += " (" + r.TZ + ")"
			}
		} else {
			out[j].Schedule = "every " + r.Every.String()
		}
		if r.Last != "" {
			out[j].LastTask = keys.TaskID(r.Queue, r.Last)
			out[j].LastFire = msTime(r.LastMs)
		}
	}
	return out, nil
}
