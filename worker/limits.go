package worker

import (
	"context"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// limiter is one fleet-wide concurrency limit (Config.KindLimits,
// Config.QueueLimits): a set of leased slots in Redis.
type limiter struct {
	keys keys.Limit
	max  int
}

func (w *Worker) initLimits() {
	w.limits = map[string]*limiter{}
	add := func(prefix string, m map[string]int) {
		for name, n := range m {
			scope := prefix + name
			w.limits[scope] = &limiter{keys: keys.ForLimit(scope), max: n}
		}
	}
	add("queue:", w.cfg.QueueLimits)
	add("kind:", w.cfg.KindLimits)
}

// limitsFor returns the limits j's task is subject to: its queue's, then its
// kind's.
func (w *Worker) limitsFor(j *job) []*limiter {
	if len(w.limits) == 0 || j.env == nil {
		return nil
	}
	var out []*limiter
	if l := w.limits["queue:"+j.q.served()]; l != nil {
		out = append(out, l)
	}
	if l := w.limits["kind:"+j.env.Kind]; l != nil {
		out = append(out, l)
	}
	return out
}

// holder names j's attempt among a limit's holders.
func (w *Worker) holder(j *job) string {
	return j.q.keys.Name + "/" + j.entry + "/" + w.cfg.Name + "/" + strconv.FormatInt(j.dlv, 10)
}

// takeSlots takes a slot of every limit in ls for j. It returns the limit
// that was full (after giving back those taken), or nil when j holds them
// all.
func (w *Worker) takeSlots(j *job, ls []*limiter) (*limiter, error) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	h := w.holder(j)
	for i, l := range ls {
		ok, err := store.TakeSlot(ctx, w.rdb, l.keys, l.max, h, keys.TaskID(j.q.keys.Name, j.key), w.cfg.Lease.Milliseconds())
		if err == nil && ok {
			continue
		}
		for _, taken := range ls[:i] {
			w.giveSlot(taken, h)
		}
		return l, err
	}
	return nil, nil
}

// giveSlots gives back the slots j holds, waking the tasks that waited for
// them.
func (w *Worker) giveSlots(j *job) {
	j.mu.Lock()
	ls := j.limits
	j.limits = nil
	j.mu.Unlock()
	h := w.holder(j)
	for _, l := range ls {
		w.giveSlot(l, h)
	}
}

func (w *Worker) giveSlot(l *limiter, holder string) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	holders := []string{holder}
	// A waiter popped for a free slot may no longer wait (it was cancelled,
	// or came back by itself after LimitWait): then the next one is woken.
	for range 10 {
		ids, err := store.GiveSlots(ctx, w.rdb, l.keys, l.max, holders...)
		if err != nil {
			w.log.Error("give back a limit's slot; it frees when its lease ends", slog.String("limit", l.keys.Scope), slog.Any("err", err))
			return
		}
		holders = nil
		if w.wake(ctx, ids) == len(ids) {
			return
		}
	}
}

// wake wakes the tasks ids; it returns how many were still waiting.
func (w *Worker) wake(ctx context.Context, ids []string) int {
	n := 0
	for _, id := range ids {
		ok, err := store.Wake(ctx, w.rdb, id)
		if err != nil {
			w.log.Error("wake a task waiting for a limit; it retries after Config.LimitWait", slog.String("task", id), slog.Any("err", err))
			n++ // not known to be gone: do not wake another for it
			continue
		}
		if ok {
			n++
		}
	}
	return n
}

// limitPark parks j's task because limit l was full (or, l nil, its slot
// could not be taken): it waits in the scheduled set for LimitWait, and once
// parked registers as a waiter, to be woken as soon as a slot frees.
func (w *Worker) limitPark(j *job, l *limiter) *outcome {
	o := j.handBack(w.cfg.LimitWait, nil)
	if l != nil {
		id := keys.TaskID(j.q.keys.Name, j.key)
		o.after = func() {
			ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
			defer cancel()
			free, err := store.AwaitSlot(ctx, w.rdb, l.keys, l.max, id, max(w.cfg.LimitWait, time.Hour).Milliseconds())
			if err != nil {
				w.log.Error("wait for a limit's slot; the task retries after Config.LimitWait", slog.String("task", id), slog.Any("err", err))
				return
			}
			if free {
				w.wake(ctx, []string{id})
			}
		}
	}
	return o
}

// renewSlots extends the slot leases of the running jobs js, like their
// heartbeats extend their task leases.
func (w *Worker) renewSlots(js []*job) {
	byLimit := map[*limiter][]string{}
	for _, j := range js {
		j.mu.Lock()
		ls := j.limits
		j.mu.Unlock()
		for _, l := range ls {
			byLimit[l] = append(byLimit[l], w.holder(j))
		}
	}
	if len(byLimit) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	until := w.clock.Now().Add(w.cfg.Lease).UnixMilli()
	ls := make([]*limiter, 0, len(byLimit))
	for l := range byLimit {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(a, b int) bool { return ls[a].keys.Scope < ls[b].keys.Scope })
	for _, l := range ls {
		n, err := store.RenewSlots(ctx, w.rdb, l.keys, byLimit[l], until)
		if err != nil {
			w.log.Error("renew a limit's slots", slog.String("limit", l.keys.Scope), slog.Any("err", err))
		} else if n < len(byLimit[l]) {
			w.log.Warn("some running tasks lost their slot of a limit (leases ended unrenewed); the limit may be exceeded until they end",
				slog.String("limit", l.keys.Scope), slog.Int("lost", len(byLimit[l])-n))
		}
	}
}
