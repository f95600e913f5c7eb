package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // cron time zones work on hosts without a zone database

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/cron"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// RepeatDef is a repeat schedule: every Every, or at the times of Cron in
// time zone TZ, a task with envelope Env (whose key is empty; each slot's
// task gets its own) is enqueued to Queue.
type RepeatDef struct {
	Name  string
	Queue string
	Kind  string
	Every time.Duration
	Cron  string
	TZ    string // IANA name; "" is UTC
	Env   []byte
}

// Declare outcomes.
const (
	RepeatUnchanged = 0
	RepeatCreated   = 1
	RepeatUpdated   = 2
)

// RepeatKey is the task key of the slot at ms of schedule name.
func RepeatKey(name string, ms int64) string { return "r." + name + "." + strconv.FormatInt(ms, 10) }

// MaxRepeatName bounds schedule names so that slot keys stay within
// keys.MaxNameLen.
const MaxRepeatName = keys.MaxNameLen - 24

func (d *RepeatDef) timing() string {
	return strconv.FormatInt(d.Every.Milliseconds(), 10) + "|" + d.Cron + "|" + d.TZ
}

func (d *RepeatDef) version() string {
	h := sha256.New()
	for _, s := range []string{d.Queue, d.Kind, d.timing(), string(d.Env)} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// ParseCron parses a schedule's cron expression in its time zone.
func ParseCron(expr, tz string) (*cron.Schedule, error) {
	loc := time.UTC
	if tz != "" {
		var err error
		if loc, err = time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("time zone %q: %w", tz, err)
		}
	}
	return cron.Parse(expr, loc)
}

// DeclareRepeat creates or updates d; nowMs (Redis time) places the first
// fire of a cron schedule. It returns what happened and the next fire (Unix
// ms, Redis time), and wakes the coordinators when that is earlier than
// what they sleep towards. A schedule of the same name in another queue is
// moved here, keeping its timing when that did not change: the old queue
// stops firing it and hands over its next fire in one step (repmove.lua),
// so the new queue starts past every slot the old one fired.
//
// The repeat index (name → "<queue>|<token>") is written by compare-and-set
// after the definition, and checked to still name a definition afterwards;
// a removal deletes only the definition carrying the token it found, then
// the index entry by compare-and-set. So concurrent declarations and
// removals end in one schedule or none, never in one the index does not
// name (a definition orphaned by a crash between the two steps is removed by
// housekeeping). Each step answers a resend as it answered the first run
// (repdeclare.lua keeps the call's op id and answer with the definition it
// wrote; repindex.lua takes an entry already holding the new value for
// set), so a lost reply does not change what the call reports.
func DeclareRepeat(ctx context.Context, rdb redis.UniversalClient, d RepeatDef, nowMs int64) (int, int64, error) {
	var first int64
	if d.Cron != "" {
		s, err := ParseCron(d.Cron, d.TZ)
		if err != nil {
			return 0, 0, err
		}
		first = s.Next(time.UnixMilli(nowMs)).UnixMilli()
	}
	q := keys.ForQueue(d.Queue)
	if err := EnsureGroup(ctx, rdb, q); err != nil {
		return 0, 0, err
	}
	tok := strconv.FormatUint(rand.Uint64(), 36)
	op := newOpID()  // every round's repdeclare.lua: what it did is kept with the definition
	updated := false // by an earlier round of this call
	for try := 0; try < 20; try++ {
		old, err := rdb.HGet(ctx, keys.RepeatIndex, d.Name).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, 0, fmt.Errorf("read repeat index: %w", err)
		}
		oq, otok := splitIndex(old)
		moving := oq != "" && oq != d.Queue && keys.ValidateName("queue", oq) == nil
		inheritAnchor, inheritNext := "", ""
		if moving {
			// Stop it in the old queue and take its timing in one step
			// (repmove.lua): a slot the old queue fired is then behind
			// the next fire the new queue starts from. The timing carries
			// over when it stays the same.
			o := keys.ForQueue(oq)
			h, err := script.RepMove.Run(ctx, rdb, []string{o.Repeats(), o.Repeat(d.Name)}, d.Name, otok).StringSlice()
			if err != nil {
				return 0, 0, fmt.Errorf("move repeat %q from queue %q: %w", d.Name, oq, err)
			}
			if len(h) == 3 && h[0] == d.timing() && h[2] != "" {
				nx, err := strconv.ParseFloat(h[2], 64)
				if err != nil {
					return 0, 0, fmt.Errorf("move repeat %q from queue %q: next fire %q: %w", d.Name, oq, h[2], err)
				}
				inheritNext, inheritAnchor = strconv.FormatInt(int64(nx), 10), h[1]
			}
		}
		res, err := script.RepDeclare.Run(ctx, rdb, []string{q.Repeats(), q.Repeat(d.Name)},
			d.Name, d.version(), d.Env, d.Every.Milliseconds(), d.Cron, d.TZ, d.Kind, first, d.timing(),
			tok, inheritAnchor, inheritNext, op).Slice()
		if err != nil || len(res) != 3 {
			return 0, 0, fmt.Errorf("declare repeat %q: %v %w", d.Name, res, err)
		}
		status, _ := res[0].(int64)
		next, _ := res[1].(int64)
		gotTok, _ := res[2].(string)
		if moving {
			// Remove the old definition before the index moves: removed
			// after, it could be one a racing declaration into that queue
			// has made current again meanwhile.
			o := keys.ForQueue(oq)
			if err := script.RepRemove.Run(ctx, rdb, []string{o.Repeats(), o.Repeat(d.Name)}, d.Name, otok).Err(); err != nil {
				return 0, 0, fmt.Errorf("move repeat %q from queue %q: %w", d.Name, oq, err)
			}
		}
		set, err := script.RepIndex.Run(ctx, rdb, []string{keys.RepeatIndex}, d.Name, old, d.Queue+"|"+gotTok).Int64()
		if err != nil {
			return 0, 0, fmt.Errorf("write repeat index: %w", err)
		}
		updated = updated || status == RepeatUpdated
		if set == 0 {
			continue // declared or removed meanwhile: look again
		}
		// The definition we found may have been removed between our
		// script and the index write (by a removal or a move that read the
		// same index value): then the index names nothing, and the next
		// round declares afresh, under a new token.
		if cur, err := rdb.HGet(ctx, q.Repeat(d.Name), "tok").Result(); err != nil && !errors.Is(err, redis.Nil) {
			return 0, 0, fmt.Errorf("read repeat %q: %w", d.Name, err)
		} else if cur != gotTok {
			continue
		}
		// A round that found its own earlier write reports what that
		// write did: tok is only ever given to a definition this call
		// created.
		switch {
		case gotTok == tok:
			status = RepeatCreated
		case updated:
			status = RepeatUpdated
		}
		if moving {
			status = RepeatUpdated
		}
		if err := MarkDue(ctx, rdb, d.Queue, next); err != nil {
			return 0, 0, err
		}
		return int(status), next, nil
	}
	return 0, 0, fmt.Errorf("declare repeat %q: the repeat index kept changing (other processes declaring or removing it at the same time); try again", d.Name)
}

// splitIndex splits an index value "<queue>|<token>".
func splitIndex(v string) (queue, tok string) {
	queue, tok, _ = strings.Cut(v, "|")
	return queue, tok
}

// RemoveRepeat removes the schedule name; false when there was none (no
// entry in the repeat index, or one naming no definition: Repeats lists
// neither).
//
// The answer is whether this call removed the definition the index named:
// of removals racing, one does. repremove.lua leaves a marker when it
// removes one, so a resend of it answers the same; repindex.lua takes an
// entry already gone for deleted.
func RemoveRepeat(ctx context.Context, rdb redis.UniversalClient, name string) (bool, error) {
	ttl := MarkerTTL(rdb).Milliseconds()
	for try := 0; try < 20; try++ {
		v, err := rdb.HGet(ctx, keys.RepeatIndex, name).Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read repeat index: %w", err)
		}
		// The definition first, then the index entry if it still names
		// it: a declaration racing with us either finds no definition (and
		// makes one under a new token, which stays) or has its index write
		// undone by ours.
		queue, tok := splitIndex(v)
		removed := false
		if keys.ValidateName("queue", queue) == nil {
			q := keys.ForQueue(queue)
			n, err := script.RepRemove.Run(ctx, rdb, []string{q.Repeats(), q.Repeat(name), q.Op("rr." + newOpID())}, name, tok, ttl).Int64()
			if err != nil {
				return false, fmt.Errorf("remove repeat %q: %w", name, err)
			}
			removed = n == 1
		}
		done, err := script.RepIndex.Run(ctx, rdb, []string{keys.RepeatIndex}, name, v, "").Int64()
		if err != nil {
			return false, fmt.Errorf("remove repeat %q from the index: %w", name, err)
		}
		if removed {
			// Whatever the index holds now is not the definition we
			// removed: a newer declaration's, which stays.
			return true, nil
		}
		if done == 0 {
			continue // a newer declaration: remove that
		}
		return false, nil
	}
	return false, fmt.Errorf("remove repeat %q: the repeat index kept changing; try again", name)
}

// orphanGrace is how old a definition the repeat index does not name must
// be before housekeeping removes it (younger ones may be mid-declaration).
const orphanGrace = time.Minute

// RemoveOrphanRepeats removes the definitions in q that the repeat index
// does not name (left by a process that died between writing a definition
// and the index, or by racing declarations); it returns their names.
func RemoveOrphanRepeats(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, nowMs int64) ([]string, error) {
	names, err := rdb.ZRange(ctx, q.Repeats(), 0, -1).Result()
	if err != nil || len(names) == 0 {
		return nil, err
	}
	idx, err := rdb.HMGet(ctx, keys.RepeatIndex, names...).Result()
	if err != nil {
		return nil, fmt.Errorf("read repeat index: %w", err)
	}
	var removed []string
	for i, name := range names {
		v, _ := idx[i].(string)
		def, err := rdb.HMGet(ctx, q.Repeat(name), "tok", "at").Result()
		if err != nil {
			return removed, fmt.Errorf("read repeat %q: %w", name, err)
		}
		tok, _ := def[0].(string)
		at, _ := strconv.ParseInt(fmt.Sprint(def[1]), 10, 64)
		if v == q.Name+"|"+tok || nowMs-at < orphanGrace.Milliseconds() {
			continue
		}
		n, err := script.RepRemove.Run(ctx, rdb, []string{q.Repeats(), q.Repeat(name)}, name, tok).Int64()
		if err != nil {
			return removed, fmt.Errorf("remove orphaned repeat %q: %w", name, err)
		}
		if n == 1 {
			removed = append(removed, name)
		}
	}
	return removed, nil
}

// RepeatInfo describes a schedule.
type RepeatInfo struct {
	Name, Queue, Kind string
	Every             time.Duration
	Cron, TZ          string
	NextMs            int64  // next fire, Unix ms in Redis time; 0 if unknown
	Last              string // key of the last task fired, "" if none yet
	LastMs            int64
	Fired             int64 // slots fired since the schedule was made
}

// ListRepeats returns every schedule, by name.
func ListRepeats(ctx context.Context, rdb redis.UniversalClient) ([]RepeatInfo, error) {
	idx, err := rdb.HGetAll(ctx, keys.RepeatIndex).Result()
	if err != nil {
		return nil, fmt.Errorf("read repeat index: %w", err)
	}
	type read struct {
		def  *redis.MapStringStringCmd
		next *redis.FloatCmd
	}
	reads := map[string]read{}
	pipe := rdb.Pipeline()
	for name, v := range idx {
		queue, _ := splitIndex(v)
		if keys.ValidateName("queue", queue) != nil {
			continue
		}
		q := keys.ForQueue(queue)
		reads[name] = read{pipe.HGetAll(ctx, q.Repeat(name)), pipe.ZScore(ctx, q.Repeats(), name)}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read repeats: %w", err)
	}
	out := make([]RepeatInfo, 0, len(reads))
	for name, r := range reads {
		d := r.def.Val()
		if len(d) == 0 {
			continue
		}
		every, _ := strconv.ParseInt(d["every"], 10, 64)
		lastMs, _ := strconv.ParseInt(d["lastat"], 10, 64)
		fired, _ := strconv.ParseInt(d["fired"], 10, 64)
		queue, _ := splitIndex(idx[name])
		out = append(out, RepeatInfo{Name: name, Queue: queue, Kind: d["kind"], Every: time.Duration(every) * time.Millisecond,
			Cron: d["cron"], TZ: d["tz"], NextMs: int64(r.next.Val()), Last: d["last"], LastMs: lastMs, Fired: fired})
	}
	slices.SortFunc(out, func(a, b RepeatInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// repeatBatch bounds the schedules one FireRepeats call looks at.
const repeatBatch = 100

// FireRepeats fires the due slots of q's repeat schedules, nowMs being the
// caller's estimate of Redis' time. A schedule that was down for several of
// its slots fires once, for the latest slot; the ones before are skipped.
// It returns the keys of the tasks enqueued, the earliest next fire left
// (-1: none), whether more may be due, whether a slot the estimate took for
// due was not yet due by Redis' clock (early: resync the clock), and the
// schedules it could not evaluate (their next fire is put off by a minute).
func FireRepeats(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, nowMs int64) (fired []string, next int64, more, early bool, bad error, err error) {
	head, err := rdb.ZRangeWithScores(ctx, q.Repeats(), 0, repeatBatch-1).Result()
	if err != nil {
		return nil, 0, false, false, nil, fmt.Errorf("read repeats of queue %q: %w", q.Name, err)
	}
	var due []redis.Z
	for _, z := range head {
		if int64(z.Score) <= nowMs {
			due = append(due, z)
		}
	}
	if len(due) == 0 {
		if len(head) == 0 {
			return nil, -1, false, false, nil, nil
		}
		return nil, int64(head[0].Score), false, false, nil, nil
	}
	pipe := rdb.Pipeline()
	defs := make([]*redis.MapStringStringCmd, len(due))
	for i, z := range due {
		name, _ := z.Member.(string)
		defs[i] = pipe.HGetAll(ctx, q.Repeat(name))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, false, false, nil, fmt.Errorf("read repeats of queue %q: %w", q.Name, err)
	}
	ks := []string{q.Repeats(), q.Stream()}
	args := []any{len(due)}
	var bads []error
	for i, z := range due {
		name, _ := z.Member.(string)
		seen := int64(z.Score)
		d := defs[i].Val()
		key, env, slot, nxt, err := planSlot(name, d, seen, nowMs)
		if err != nil {
			bads = append(bads, fmt.Errorf("repeat %q: %w; its next fire is put off by a minute", name, err))
			key, env, slot, nxt = "", nil, seen, nowMs+time.Minute.Milliseconds()
		}
		tk, fk := q.Task("-"), q.Result("-")
		if key != "" {
			tk, fk = q.Task(key), q.Result(key)
		}
		ks = append(ks, q.Repeat(name), tk, fk)
		args = append(args, name, d["v"], seen, key, env, nxt, slot)
	}
	res, err := script.RepFire.Run(ctx, rdb, ks, args...).StringSlice()
	if err != nil {
		return nil, 0, false, false, nil, fmt.Errorf("fire repeats of queue %q: %w", q.Name, err)
	}
	for _, k := range res[:len(res)-1] {
		switch k {
		case "":
		case "early":
			early = true
		default:
			fired = append(fired, k)
		}
	}
	next, _ = strconv.ParseInt(res[len(res)-1], 10, 64)
	return fired, next, !early && len(head) == repeatBatch && len(due) == len(head), early, errors.Join(bads...), nil
}

// planSlot picks the slot to fire (the latest one due) and the one after it.
func planSlot(name string, d map[string]string, seen, nowMs int64) (key string, env []byte, slotMs, next int64, err error) {
	if len(d) == 0 {
		return "", nil, seen, seen, nil // removed: the script drops it
	}
	slot := seen
	if every, _ := strconv.ParseInt(d["every"], 10, 64); every > 0 {
		anchor, _ := strconv.ParseInt(d["anchor"], 10, 64)
		if k := (nowMs - anchor) / every; anchor+k*every > slot {
			slot = anchor + k*every
		}
		next = slot + every
	} else {
		s, err := ParseCron(d["cron"], d["tz"])
		if err != nil {
			return "", nil, 0, 0, err
		}
		// Walk to the latest cron time not after now, starting at most a
		// week back so a long outage costs little.
		cur := time.UnixMilli(slot)
		if weekAgo := time.UnixMilli(nowMs).Add(-7 * 24 * time.Hour); cur.Before(weekAgo) {
			if t := s.Next(weekAgo); !t.IsZero() && t.UnixMilli() <= nowMs {
				cur = t
			}
		}
		for {
			t := s.Next(cur)
			if t.IsZero() || t.UnixMilli() > nowMs {
				break
			}
			cur = t
		}
		slot = cur.UnixMilli()
		nt := s.Next(cur)
		if nt.IsZero() {
			return "", nil, 0, 0, errors.New("cron has no time left within five years")
		}
		next = nt.UnixMilli()
	}
	e, err := codec.DecodeEnvelope([]byte(d["env"]))
	if err != nil {
		return "", nil, 0, 0, fmt.Errorf("stored task: %w", err)
	}
	key = RepeatKey(name, slot)
	e.Key = key
	return key, codec.AppendEnvelope(nil, e), slot, next, nil
}
