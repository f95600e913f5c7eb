package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// Cancel cancels the task with key key (see cancel.lua); it returns the state
// the script reports: a final state, "cancelling", or "" for an unknown task.
// A task waiting in a partition takes a second call, with the partition's
// list declared (the first answers its partition key and writes nothing).
func Cancel(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, retainMs int64, reason string) (string, error) {
	pk := ""
	for try := 0; ; try++ {
		ks, idx := CancelKeys(q, key, pk)
		v, err := script.Cancel.Run(ctx, rdb, ks, keys.Group, key, q.Done(), q.Ctl(), retainMs, reason, keys.TaskID(q.Name, key), idx, pk).StringSlice()
		if err != nil {
			if strings.Contains(err.Error(), "NOGROUP") {
				return "", nil
			}
			return "", fmt.Errorf("cancel task %s: %w", keys.TaskID(q.Name, key), err)
		}
		p, ok := partitionReply(v)
		if !ok {
			return v[0], nil
		}
		if try == cancelPartTries-1 {
			return "", fmt.Errorf("cancel task %s: its partition changed %d times while cancelling it", keys.TaskID(q.Name, key), cancelPartTries)
		}
		pk = p
	}
}

// cancelPartTries bounds the calls of cancel.lua for one task: a second
// call declares the partition the first named, and needs a third only when
// the task's record changed partition in between (it ended, expired and was
// enqueued again).
const cancelPartTries = 4

// partitionReply reports cancel.lua's answer {'partition', pk}: the task
// waits in partition pk, whose list the call must declare.
func partitionReply(v []string) (string, bool) {
	if len(v) == 2 && v[0] == "partition" {
		return v[1], true
	}
	return "", false
}

// CancelKeys are cancel.lua's keys for key, and the item index for a batch
// item ("" otherwise); pk names the partition whose list they declare (""
// for none: see cancel.lua, whose ARGV[9] is then pk).
func CancelKeys(q keys.Queue, key, pk string) ([]string, string) {
	ks := []string{q.Task(key), q.Result(key), q.Stream(), q.Scheduled(), q.Conts(key), q.Outbox(), q.Hooks()}
	idx := ""
	if batch, i, ok := keys.BatchOfItem(key); ok {
		ks, idx = append(ks, q.Task(batch), q.BatchCancelled(batch), q.BatchResults(batch), q.BatchMarked(batch), q.BatchItems(batch)), i
	} else {
		t := q.Task(key)
		ks = append(ks, t, t, t, t, t)
	}
	ks = append(ks, q.Stats(), q.SchedRetrying(), q.SchedHeld())
	if pk != "" {
		return append(ks, q.Partition(pk)), idx
	}
	return append(ks, q.Task(key)), idx
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
// turn, until all are empty. An outbox holds these kinds of entries:
//   - s: a continuation (or a released InvokeAll member) to activate in its
//     own queue, exactly once however many processes drain at the same time;
//   - g: a group member that ended, counted by the group's slot (again once);
//   - x: a group whose open members are to be cancelled (fail fast, Cancel);
//   - pt: a partitioned task ended: the next of its key may start;
//   - bd: a batch ended dead or cancelled: its items end so too.
//
// It reads an outbox in rounds of up to outboxRound entries: the round's
// activations and group counts go out in one pipeline (go-redis splits it
// by node on a cluster), and the entries applied are deleted at the end of
// the round, so a round costs a few round trips however many entries it
// holds. An entry that fails stays in its outbox for the next drain; the
// entries behind it are still worked off, and the error is returned once
// the outboxes were gone through. Every step is idempotent, so an entry
// applied whose deletion was lost is applied again as a no-op.
//
// Under a ctx deadline, a round is begun only while the time left is at
// least what the last round took; the entries a round applied are deleted
// even when the deadline passed while it was out (within trimGrace). A
// drain stopped so returns an error wrapping context.DeadlineExceeded.
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
	var errs []error
	var last time.Duration // what the last round took
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		delete(queued, cur.Name)
		// Each entry is read once per pass (one left to another process, or
		// one that failed, is skipped, not read again).
		start := "-"
		for {
			if err := roundTime(ctx, last); err != nil {
				errs = append(errs, fmt.Errorf("outbox of queue %q: %w", cur.Name, err))
				return errors.Join(errs...)
			}
			began := time.Now()
			entries, err := rdb.XRangeN(ctx, cur.Outbox(), start, "+", outboxRound).Result()
			if err != nil {
				errs = append(errs, fmt.Errorf("read outbox of queue %q: %w", cur.Name, err))
				break
			}
			if len(entries) == 0 {
				break
			}
			start = "(" + entries[len(entries)-1].ID
			applied, touched, err := drainRound(ctx, rdb, cur, entries, retainMs)
			if err != nil {
				errs = append(errs, err)
			}
			for _, t := range touched {
				push(t)
			}
			if err := trimOutbox(ctx, rdb, cur, applied, time.Since(began)); err != nil {
				errs = append(errs, err)
			}
			last = time.Since(began)
			if len(entries) < outboxRound {
				// The outbox is read to its end (what this drain wrote to
				// it put it back on todo).
				break
			}
		}
	}
	return errors.Join(errs...)
}

// outboxRound is how many outbox entries one round of DrainOutbox reads and
// applies.
const outboxRound = 500

// trimGrace bounds the deletion of a round's applied entries once the
// caller's deadline passed while the round was out.
const trimGrace = 2 * time.Second

// roundTime reports whether ctx leaves time for another round of a drain,
// given that the last one took last (0: none yet).
func roundTime(ctx context.Context, last time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && last > 0 && time.Until(dl) < last {
		return fmt.Errorf("stopped with entries left, a round taking %v and the deadline %v away: %w",
			last.Round(time.Millisecond), time.Until(dl).Round(time.Millisecond), context.DeadlineExceeded)
	}
	return nil
}

// trimOutbox deletes the entries ids of q's outbox, applied by a round that
// took took; should ctx have ended meanwhile, it still tries, for as long
// as the round took (within trimGrace), so that the work is not redone.
func trimOutbox(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, ids []string, took time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), min(max(took, 100*time.Millisecond), trimGrace))
		defer cancel()
	}
	if err := rdb.XDel(ctx, q.Outbox(), ids...).Err(); err != nil {
		return fmt.Errorf("trim outbox of queue %q: %w", q.Name, err)
	}
	return nil
}

// drainRound applies one round of outbox entries of queue cur. It returns
// the ids of the entries applied (or to be dropped: written by nothing of
// ours), to delete; the queues whose outbox the round wrote; and the errors
// of the entries that failed, which stay.
func drainRound(ctx context.Context, rdb redis.UniversalClient, cur keys.Queue, entries []redis.XMessage, retainMs int64) (applied []string, touched []keys.Queue, err error) {
	var errs []error
	parts := map[string]*partEnds{} // partition key -> its entries
	type groupEnds struct {
		ref  GroupRef
		ends []MemberEnd
		ids  []string
	}
	groups := map[string]*groupEnds{}
	var order []string
	var acts []pendingActivation
	for _, e := range entries {
		if pk, ok := e.Values["pt"].(string); ok {
			parts[pk] = parts[pk].add(e)
			continue
		}
		if bk, ok := e.Values["bd"].(string); ok {
			st, _ := e.Values["st"].(string)
			why, _ := e.Values["why"].(string)
			wrote, err := AbortBatch(ctx, rdb, cur, bk, st, why, retainMs)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if wrote {
				touched = append(touched, cur)
			}
			applied = append(applied, e.ID)
			continue
		}
		if gid, ok := e.Values["g"].(string); ok {
			m, _ := e.Values["m"].(string)
			st, _ := e.Values["st"].(string)
			ge := groups[gid]
			if ge == nil {
				g, err := ParseGroupRef(gid)
				if err != nil {
					applied = append(applied, e.ID) // written by nothing of ours
					continue
				}
				ge = &groupEnds{ref: g}
				groups[gid] = ge
				order = append(order, gid)
			}
			ge.ends = append(ge.ends, MemberEnd{Member: m, State: st})
			ge.ids = append(ge.ids, e.ID)
			continue
		}
		if x, ok := e.Values["x"].(string); ok {
			why, _ := e.Values["why"].(string)
			g, err := ParseGroupRef(x)
			if err != nil {
				applied = append(applied, e.ID) // written by nothing of ours
				continue
			}
			swept, ts, err := sweepGroup(ctx, rdb, g, why, retainMs)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			touched = append(touched, ts...)
			if swept {
				applied = append(applied, e.ID)
			}
			continue
		}
		a, ok := parseActivation(e)
		if !ok {
			applied = append(applied, e.ID) // written by nothing of ours
			continue
		}
		acts = append(acts, a)
	}

	// The activations and the groups' counts: one pipeline.
	calls := make([]func(p redis.Pipeliner) *redis.Cmd, 0, len(acts)+len(order))
	for _, a := range acts {
		calls = append(calls, a.run(ctx, retainMs))
	}
	for _, gid := range order {
		ge := groups[gid]
		calls = append(calls, func(p redis.Pipeliner) *redis.Cmd { return endMembersCmd(ctx, p, ge.ref, ge.ends) })
	}
	cmds := runScripts(ctx, rdb, calls)
	for i, a := range acts {
		r, err := cmds[i].Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			errs = append(errs, fmt.Errorf("activate %s: %w", a.id, err))
			continue
		}
		applied = append(applied, a.entry)
		if r == 2 {
			touched = append(touched, a.queue)
		}
	}
	for i, gid := range order {
		ge := groups[gid]
		v, err := cmds[len(acts)+i].Slice()
		if err != nil {
			errs = append(errs, fmt.Errorf("count ended members of group %s: %w", ge.ref, err))
			continue
		}
		applied = append(applied, ge.ids...)
		if len(v) > 1 {
			if wrote, _ := v[1].(int64); wrote == 1 {
				touched = append(touched, ge.ref.Home)
			}
		}
	}

	if len(parts) > 0 {
		if err := stepPartitions(ctx, rdb, cur, parts); err != nil {
			errs = append(errs, err)
		} else {
			for _, pe := range parts {
				applied = append(applied, pe.ids...)
			}
		}
	}
	return applied, touched, firstErrors(errs)
}

// firstErrors joins the first few of errs and counts the rest: a round whose
// connection broke fails every entry alike.
func firstErrors(errs []error) error {
	const shown = 3
	if len(errs) <= shown {
		return errors.Join(errs...)
	}
	return fmt.Errorf("%w\n(and %d more entries failed)", errors.Join(errs[:shown]...), len(errs)-shown)
}

// runScripts runs calls, script calls of any slots, in one pipeline and
// returns their commands in order; calls that met an empty script cache (a
// Redis restart) are run once more after loading the scripts.
func runScripts(ctx context.Context, rdb redis.UniversalClient, calls []func(p redis.Pipeliner) *redis.Cmd) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}
	for try := 0; len(todo) > 0; try++ {
		pipe := rdb.Pipeline()
		for _, i := range todo {
			cmds[i] = calls[i](pipe)
		}
		_, _ = pipe.Exec(ctx) // each command holds its own error
		var again []int
		for _, i := range todo {
			if err := cmds[i].Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
				again = append(again, i)
			}
		}
		if len(again) == 0 || try > 0 || script.Load(ctx, rdb) != nil {
			break
		}
		todo = again
	}
	return cmds
}

// pendingActivation is an outbox entry of kind s: the continuation to
// activate, once its parent ended.
type pendingActivation struct {
	entry              string // outbox entry id
	queue              keys.Queue
	key, id            string
	onlyOnSuccess      bool
	parent, parentEnds string
}

// parseActivation reads an outbox entry of kind s; false when it is not
// one we wrote.
func parseActivation(e redis.XMessage) (pendingActivation, bool) {
	spec, _ := e.Values["s"].(string)
	parent, _ := e.Values["p"].(string)
	state, _ := e.Values["st"].(string)
	tq, tkey, only, err := parseSpec(spec)
	if err != nil {
		return pendingActivation{}, false
	}
	return pendingActivation{entry: e.ID, queue: keys.ForQueue(tq), key: tkey, id: keys.TaskID(tq, tkey),
		onlyOnSuccess: only, parent: parent, parentEnds: state}, true
}

// run queues activate.lua for a on a pipeline.
func (a pendingActivation) run(ctx context.Context, retainMs int64) func(p redis.Pipeliner) *redis.Cmd {
	return func(p redis.Pipeliner) *redis.Cmd {
		t := a.queue
		ks := []string{t.Task(a.key), t.Stream(), t.Conts(a.key), t.Outbox(), t.Hooks()}
		flag := "0"
		if a.onlyOnSuccess {
			flag = "1"
		}
		return script.Activate.Run(ctx, p, ks, a.key, flag, a.parent, a.parentEnds, t.Done(), retainMs, a.id)
	}
}

// sweepGroup cancels the open members of g (an entry of kind x) unless
// another process is at it: one process sweeps a group at a time; the
// others leave the entry to it (should it die, the claim expires and a
// later drain sweeps). swept is false when the entry was left so.
func sweepGroup(ctx context.Context, rdb redis.UniversalClient, g GroupRef, why string, retainMs int64) (swept bool, touched []keys.Queue, err error) {
	key := g.Home.GroupSweep(g.ID)
	token := strconv.FormatUint(rand.Uint64(), 36)
	claimed, err := claim(ctx, rdb, key, token, sweepClaim)
	if err != nil {
		return false, nil, fmt.Errorf("claim the sweep of group %s: %w", g, err)
	}
	if !claimed {
		return false, nil, nil
	}
	touched, err = CancelOpenMembers(ctx, rdb, g, why, retainMs)
	// Give the claim back even when ctx ended (or the next drains would
	// skip the sweep until it expires), and only if it is still ours.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = script.CompareDel.Run(rctx, rdb, []string{key}, token).Err()
	cancel()
	if err != nil {
		return false, nil, err
	}
	return true, touched, nil
}

// sweepClaim bounds how long a process may take to cancel a group's open
// members before another one may try (a sweeper that dies holds the sweep
// up for that long; one that outlasts it may see another sweep alongside,
// which is harmless).
const sweepClaim = time.Minute

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
