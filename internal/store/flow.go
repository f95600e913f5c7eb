package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// Cancel cancels the task with key key (see cancel.lua); it returns the state
// the script reports: a final state, "cancelling", or "" for an unknown task.
func Cancel(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, retainMs int64, reason string) (string, error) {
	ks, idx := CancelKeys(q, key)
	v, err := script.Cancel.Run(ctx, rdb, ks, keys.Group, key, q.Done(), q.Ctl(), retainMs, reason, keys.TaskID(q.Name, key), idx).StringSlice()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			return "", nil
		}
		return "", fmt.Errorf("cancel task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return v[0], nil
}

// CancelKeys are cancel.lua's keys for key, and the item index for a batch
// item ("" otherwise).
func CancelKeys(q keys.Queue, key string) ([]string, string) {
	ks := []string{q.Task(key), q.Result(key), q.Stream(), q.Scheduled(), q.Conts(key), q.Outbox(), q.Hooks()}
	if batch, idx, ok := keys.BatchOfItem(key); ok {
		return append(ks, q.Task(batch), q.BatchCancelled(batch), q.BatchResults(batch), q.BatchMarked(batch), q.BatchItems(batch)), idx
	}
	t := q.Task(key)
	return append(ks, t, t, t, t, t), ""
}

// ContSpec names a continuation in an outbox or continuation list.
func ContSpec(queue, key string, onlyOnSuccess bool) string {
	flag := "0"
	if onlyOnSuccess {
		flag = "1"
	}
	return queue + "/" + key + "|" + flag
}

func parseSpec(s string) (queue, key string, onlyOnSuccess bool, err error) {
	bar := strings.LastIndexByte(s, '|')
	if bar < 0 {
		return "", "", false, fmt.Errorf("continuation spec %q has no flag", s)
	}
	queue, key, err = keys.SplitTaskID(s[:bar])
	return queue, key, s[bar+1:] == "1", err
}

// CreateWaiting creates a continuation waiting in its own queue; false if a
// task with that key existed before. opID names the call: a resend of the
// call that created it reports true again.
func CreateWaiting(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, env []byte, opID string) (bool, error) {
	n, err := script.Waiting.Run(ctx, rdb, []string{q.Task(key), q.Result(key)}, env, opID).Int64()
	if err != nil {
		return false, fmt.Errorf("create continuation %s: %w", keys.TaskID(q.Name, key), err)
	}
	return n == 1, nil
}

// ErrUnknownTask is returned by AddContinuation when no task has the key.
var ErrUnknownTask = errors.New("no such task")

// AddContinuation registers spec on the task with key key of queue q. fired
// reports that the task had ended: the spec went to q's outbox.
func AddContinuation(ctx context.Context, rdb redis.Scripter, q keys.Queue, key, spec string) (fired bool, err error) {
	t := q.Task(key)
	ks := []string{t, q.Result(key), q.Conts(key), q.Outbox(), q.Hooks(), q.Stream(), t, t, t, t}
	item := ""
	if batch, idx, ok := keys.BatchOfItem(key); ok {
		ks[6], ks[7], ks[8], ks[9], item = q.Task(batch), q.BatchResults(batch), q.BatchMarked(batch), q.BatchItems(batch), idx
	}
	v, err := script.ContAdd.Run(ctx, rdb, ks, spec, keys.TaskID(q.Name, key), item).Text()
	if err != nil {
		return false, fmt.Errorf("register continuation on %s: %w", keys.TaskID(q.Name, key), err)
	}
	if v == "unknown" {
		return false, fmt.Errorf("register continuation on %s: %w", keys.TaskID(q.Name, key), ErrUnknownTask)
	}
	return v == "fired", nil
}

// DrainOutbox works off q's outbox, and the outboxes that work fills in
// turn, until all are empty. An outbox holds three kinds of entries:
//   - s: a continuation (or a released InvokeAll member) to activate in its
//     own queue, exactly once however many processes drain at the same time;
//   - g: a group member that ended, counted by the group's slot (again once);
//   - x: a group whose open members are to be cancelled (fail fast, Cancel);
//   - pt: a partitioned task ended: the next of its key may start;
//   - bd: a batch ended dead or cancelled: its items end so too.
//
// retainMs is how long a task cancelled here is kept.
func DrainOutbox(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, retainMs int64) error {
	todo := []keys.Queue{q}
	queued := map[string]bool{q.Name: true}
	push := func(t keys.Queue) {
		if !queued[t.Name] {
			queued[t.Name] = true
			todo = append(todo, t)
		}
	}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		delete(queued, cur.Name)
		// Each entry is read once per pass (one left to another process is
		// skipped, not read again).
		start := "-"
		for {
			entries, err := rdb.XRangeN(ctx, cur.Outbox(), start, "+", 100).Result()
			if err != nil {
				return fmt.Errorf("read outbox of queue %q: %w", cur.Name, err)
			}
			if len(entries) == 0 {
				break
			}
			start = "(" + entries[len(entries)-1].ID
			ids := make([]string, 0, len(entries))
			ends := map[string][]MemberEnd{}
			var order []string
			parts := map[string]bool{}
			for _, e := range entries {
				ids = append(ids, e.ID)
				if pk, ok := e.Values["pt"].(string); ok {
					parts[pk] = true
					continue
				}
				if bk, ok := e.Values["bd"].(string); ok {
					st, _ := e.Values["st"].(string)
					why, _ := e.Values["why"].(string)
					wrote, err := AbortBatch(ctx, rdb, cur, bk, st, why, retainMs)
					if err != nil {
						return err
					}
					if wrote {
						push(cur)
					}
					continue
				}
				if g, ok := e.Values["g"].(string); ok {
					m, _ := e.Values["m"].(string)
					st, _ := e.Values["st"].(string)
					if _, ok := ends[g]; !ok {
						order = append(order, g)
					}
					ends[g] = append(ends[g], MemberEnd{Member: m, State: st})
					continue
				}
				if x, ok := e.Values["x"].(string); ok {
					why, _ := e.Values["why"].(string)
					g, err := ParseGroupRef(x)
					if err != nil {
						continue // written by nothing of ours
					}
					// One process sweeps a group at a time; the others
					// leave the entry to it (should it die, the claim
					// expires and a later drain sweeps).
					claim := g.Home.GroupSweep(g.ID)
					token := strconv.FormatUint(rand.Uint64(), 36)
					claimed, err := rdb.SetNX(ctx, claim, token, sweepClaim).Result()
					if err != nil {
						return fmt.Errorf("claim the sweep of group %s: %w", g, err)
					}
					if !claimed {
						ids = ids[:len(ids)-1]
						continue
					}
					touched, err := CancelOpenMembers(ctx, rdb, g, why, retainMs)
					// Give the claim back even when ctx ended (or the next
					// drains would skip the sweep until it expires), and
					// only if it is still ours.
					rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
					_ = script.CompareDel.Run(rctx, rdb, []string{claim}, token).Err()
					cancel()
					if err != nil {
						return err
					}
					for _, t := range touched {
						push(t)
					}
					continue
				}
				t, fired, err := activate(ctx, rdb, e.Values, retainMs)
				if err != nil {
					return err
				}
				if fired {
					push(t)
				}
			}
			if len(parts) > 0 {
				if err := StepPartitions(ctx, rdb, cur, slices.Collect(maps.Keys(parts))); err != nil {
					return err
				}
			}
			for _, gid := range order {
				g, err := ParseGroupRef(gid)
				if err != nil {
					continue // written by nothing of ours
				}
				_, wrote, err := EndMembers(ctx, rdb, g, ends[gid])
				if err != nil {
					return err
				}
				if wrote {
					push(g.Home)
				}
			}
			if len(ids) == 0 {
				continue
			}
			if err := rdb.XDel(ctx, cur.Outbox(), ids...).Err(); err != nil {
				return fmt.Errorf("trim outbox of queue %q: %w", cur.Name, err)
			}
		}
	}
	return nil
}

// sweepClaim bounds how long a process may take to cancel a group's open
// members before another one may try (a sweeper that dies holds the sweep
// up for that long; one that outlasts it may see another sweep alongside,
// which is harmless).
const sweepClaim = time.Minute

// activate runs activate.lua for one outbox entry of kind s; fired reports
// that it wrote the outbox of queue t.
func activate(ctx context.Context, rdb redis.UniversalClient, v map[string]any, retainMs int64) (t keys.Queue, fired bool, err error) {
	spec, _ := v["s"].(string)
	parent, _ := v["p"].(string)
	state, _ := v["st"].(string)
	tq, tkey, only, err := parseSpec(spec)
	if err != nil {
		// Written by nothing of ours: drop it rather than block the outbox.
		return t, false, nil
	}
	t = keys.ForQueue(tq)
	ks := []string{t.Task(tkey), t.Stream(), t.Conts(tkey), t.Outbox(), t.Hooks()}
	flag := "0"
	if only {
		flag = "1"
	}
	r, err := script.Activate.Run(ctx, rdb, ks, tkey, flag, parent, state, t.Done(), retainMs, keys.TaskID(tq, tkey)).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return t, false, fmt.Errorf("activate %s: %w", keys.TaskID(tq, tkey), err)
	}
	return t, r == 2, nil
}

// AddKids records child task ids under their parent's kids set, kept 7 days
// after the last addition (see kidsadd.lua: one script rather than a
// transaction, which go-redis does not resend after a lost reply).
func AddKids(ctx context.Context, rdb redis.Scripter, q keys.Queue, parentKey string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, 1+len(ids))
	args = append(args, kidsTTL.Milliseconds())
	for _, id := range ids {
		args = append(args, id)
	}
	if err := script.KidsAdd.Run(ctx, rdb, []string{q.Kids(parentKey)}, args...).Err(); err != nil {
		return fmt.Errorf("record children of %s: %w", keys.TaskID(q.Name, parentKey), err)
	}
	return nil
}

// Kids returns the ids of the children of a task.
func Kids(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) ([]string, error) {
	return rdb.SMembers(ctx, q.Kids(key)).Result()
}

const kidsTTL = 7 * 24 * time.Hour

// StepPartitions starts the next task of each partition pks of q whose
// tasks before it ended (see partstep.lua): one pipelined read and one
// pipelined script call for all of them, repeated for those that need more.
func StepPartitions(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, pks []string) error {
	todo := pks
	for len(todo) > 0 {
		pipe := rdb.Pipeline()
		heads := make([]*redis.StringSliceCmd, len(todo))
		for i, pk := range todo {
			heads[i] = pipe.LRange(ctx, q.Partition(pk), 0, 1)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("read partitions of queue %q: %w", q.Name, err)
		}
		pipe = rdb.Pipeline()
		steps := make([]*redis.Cmd, 0, len(todo))
		var stepped []string
		for i, pk := range todo {
			h := heads[i].Val()
			if len(h) == 0 {
				continue
			}
			second := ""
			if len(h) > 1 {
				second = h[1]
			}
			steps = append(steps, script.PartStep.Run(ctx, pipe, []string{q.Partition(pk), q.Task(h[0]), q.Task(second), q.Stream()}, h[0], second))
			stepped = append(stepped, pk)
		}
		if len(steps) == 0 {
			return nil
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if !strings.HasPrefix(err.Error(), "NOSCRIPT") {
				return fmt.Errorf("advance partitions of queue %q: %w", q.Name, err)
			}
			// The script cache was flushed (a Redis restart): load and
			// read again (the steps are idempotent).
			if err := script.Load(ctx, rdb); err != nil {
				return err
			}
			continue
		}
		todo = todo[:0:0]
		for i, c := range steps {
			if r, _ := c.Text(); r == "again" {
				todo = append(todo, stepped[i])
			}
		}
	}
	return nil
}
