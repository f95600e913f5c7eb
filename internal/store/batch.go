package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// BatchSegment is a run of appended items that went to one batch: their
// task keys are "<Batch>.<First>", "<Batch>.<First+1>"...
type BatchSegment struct {
	Batch string
	First int
	Count int
}

// AppendBatch appends items (msgpack each) to the open batch of kind in q,
// opening new batches (keys from newKey, with the envelope envPre + the
// key as a msgpack string + envPost) as they fill. ptr is the caller's
// guess of the open batch's key ("" none; a wrong guess costs a round
// trip). It returns where the items went, the open batch's key after the
// call (the next guess), and, when it opened a batch that still waits, its
// due time (Unix ms, Redis time), else 0. One call carries at most
// MaxAppend items.
func AppendBatch(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, kind, ptr string, newKey func() string, envPre, envPost []byte, maxSize int, maxWaitMs int64, items [][]byte) ([]BatchSegment, string, int64, error) {
	if len(items) > MaxAppend {
		return nil, "", 0, fmt.Errorf("append to batch: %d items in one call, at most %d", len(items), MaxAppend)
	}
	m := (len(items)+maxSize-1)/maxSize + 1 // new batches needed at most
	nks := make([]string, m)
	for j := range nks {
		nks[j] = newKey()
	}
	ptrKey := q.BatchOpen(kind)
	op := q.Op("ba." + nks[0]) // fresh for each call
	args := make([]any, 0, 7+m+len(items))
	args = append(args, "", maxSize, maxWaitMs, envPre, envPost, m, MarkerTTL(rdb).Milliseconds())
	for _, k := range nks {
		args = append(args, k)
	}
	for _, it := range items {
		args = append(args, it)
	}
	for try := 0; try < 50; try++ {
		cur := ptr
		if cur == "" {
			cur = nks[0] // names keys the script does not touch
		}
		ks := make([]string, 0, 6+2*m)
		ks = append(ks, ptrKey, q.Stream(), q.Scheduled(), q.Task(cur), q.BatchItems(cur), op)
		for _, k := range nks {
			ks = append(ks, q.Task(k), q.BatchItems(k))
		}
		args[0] = ptr
		res, err := script.BatchAdd.Run(ctx, rdb, ks, args...).Slice()
		if err != nil {
			return nil, "", 0, fmt.Errorf("append to batch of %s in queue %q: %w", kind, q.Name, err)
		}
		if s, _ := res[0].(string); s == "again" {
			ptr, _ = res[1].(string)
			continue
		}
		opened := toInt(res[1])
		now, _ := res[2].(string)
		var segs []BatchSegment
		for i := 3; i+2 < len(res); i += 3 {
			b, _ := res[i].(string)
			segs = append(segs, BatchSegment{Batch: b, First: int(toInt(res[i+1])), Count: int(toInt(res[i+2]))})
		}
		return segs, now, opened, nil
	}
	return nil, "", 0, fmt.Errorf("append to batch of %s in queue %q: the open batch kept changing; try again", kind, q.Name)
}

// MaxAppend bounds the items of one AppendBatch call.
const MaxAppend = 2000

// FlushBatch closes the open batch of kind in q now; false when none was
// open.
func FlushBatch(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, kind string) (bool, error) {
	ptrKey := q.BatchOpen(kind)
	op := q.Op("bf." + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36))
	ttl := MarkerTTL(rdb).Milliseconds()
	for try := 0; try < 50; try++ {
		ptr, err := rdb.Get(ctx, ptrKey).Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read open batch of %s in queue %q: %w", kind, q.Name, err)
		}
		r, err := script.BatchFlush.Run(ctx, rdb, []string{ptrKey, q.Stream(), q.Scheduled(), q.Task(ptr), op}, ptr, ttl).Text()
		if err != nil {
			return false, fmt.Errorf("flush batch of %s in queue %q: %w", kind, q.Name, err)
		}
		switch r {
		case "flushed":
			return true, nil
		case "none":
			return false, nil
		}
	}
	return false, fmt.Errorf("flush batch of %s in queue %q: the open batch kept changing; try again", kind, q.Name)
}

// BatchItemsOf reads the items of batch bkey in q (msgpack each, in append
// order), which were cancelled before the batch ran, and which have a
// record of their own (marked).
func BatchItemsOf(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, bkey string) (items []string, cancelled, marked map[int]bool, err error) {
	pipe := rdb.Pipeline()
	l := pipe.LRange(ctx, q.BatchItems(bkey), 0, -1)
	c := pipe.SMembers(ctx, q.BatchCancelled(bkey))
	mk := pipe.SMembers(ctx, q.BatchMarked(bkey))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("read batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	return l.Val(), intSet(c.Val()), intSet(mk.Val()), nil
}

func intSet(ss []string) map[int]bool {
	m := map[int]bool{}
	for _, s := range ss {
		if i, err := strconv.Atoi(s); err == nil {
			m[i] = true
		}
	}
	return m
}

// BatchOutcome is how one item of a batch ended.
type BatchOutcome struct {
	Index int
	OK    bool   // succeeded with Data as its result; else dead with Data as its error
	Data  []byte // result or error text
	Env   []byte // for a dead item, its envelope (RetryDead runs it alone)
}

// EndBatch records the outcomes of a batch's items and acknowledges the
// batch, fenced by its attempt's token (see batchend.lua); marked are the
// items known to have a record of their own. It returns 0 when the lease
// was lost (nothing written), 1 recorded, 2 recorded and the outbox
// written.
func EndBatch(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer, entryID string, deliveries int64, bkey string, attempt int, retainMs int64, outs []BatchOutcome, marked map[int]bool) (int, error) {
	decl := map[int]bool{}
	for i := range marked {
		decl[i] = true
	}
	var succ, dead []BatchOutcome
	for _, o := range outs {
		if o.OK {
			succ = append(succ, o)
		} else {
			dead = append(dead, o)
			decl[o.Index] = true
		}
	}
	for try := 0; try < 10; try++ {
		idx := make([]int, 0, len(decl))
		for i := range decl {
			idx = append(idx, i)
		}
		ks := make([]string, 0, 9+2*len(idx))
		ks = append(ks, q.Stream(), q.Dead(), q.Outbox(), q.Hooks(), q.Task(bkey), q.BatchItems(bkey), q.BatchCancelled(bkey), q.BatchResults(bkey), q.BatchMarked(bkey))
		args := make([]any, 0, 13+len(idx)+2*len(succ)+3*len(dead))
		args = append(args, keys.Group, consumer, entryID, deliveries, q.Done(), q.Name, attempt, retainMs, bkey, len(idx))
		for _, i := range idx {
			key := bkey + "." + strconv.Itoa(i)
			ks = append(ks, q.Task(key), q.Conts(key))
			args = append(args, i)
		}
		args = append(args, len(succ))
		for _, o := range succ {
			args = append(args, o.Index, o.Data)
		}
		args = append(args, len(dead))
		for _, o := range dead {
			args = append(args, o.Index, o.Data, o.Env)
		}
		ks = append(ks, q.Stats(), q.StatsHistory())
		res, err := script.BatchEnd.Run(ctx, rdb, ks, args...).Slice()
		if err != nil {
			return 0, fmt.Errorf("record batch %s: %w", keys.TaskID(q.Name, bkey), err)
		}
		code := toInt(res[0])
		if code != 3 {
			return int(code), nil
		}
		// Items marked while the batch ran: declare them too.
		for _, m := range res[1:] {
			if i := toInt(m); i >= 0 {
				decl[int(i)] = true
			}
		}
	}
	return 0, fmt.Errorf("record batch %s: its items kept being marked; it runs again after its lease", keys.TaskID(q.Name, bkey))
}

// AbortBatch ends the items of batch bkey that have not ended, in state
// ("dead" or "cancelled") with reason why (see batchabort.lua); wrote
// reports that q's outbox was written.
func AbortBatch(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, bkey, state, why string, retainMs int64) (wrote bool, err error) {
	pipe := rdb.Pipeline()
	l := pipe.LLen(ctx, q.BatchItems(bkey))
	m := pipe.HGet(ctx, q.Task(bkey), "m")
	att := pipe.HGet(ctx, q.Task(bkey), "a")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("read batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	items, err := rdb.LRange(ctx, q.BatchItems(bkey), 0, l.Val()-1).Result()
	if err != nil {
		return false, fmt.Errorf("read batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	var benv *codec.Envelope
	if raw := m.Val(); raw != "" {
		benv, _ = codec.DecodeEnvelope([]byte(raw))
	}
	ks := make([]string, 0, 8+2*len(items))
	ks = append(ks, q.Dead(), q.Outbox(), q.Hooks(), q.Task(bkey), q.BatchItems(bkey), q.BatchCancelled(bkey), q.BatchResults(bkey), q.BatchMarked(bkey))
	args := make([]any, 0, 7+2*len(items))
	a := att.Val()
	if a == "" {
		a = "0"
	}
	args = append(args, q.Name, q.Done(), state, why, retainMs, bkey, len(items), a)
	for i, it := range items {
		key := bkey + "." + strconv.Itoa(i)
		ks = append(ks, q.Task(key), q.Conts(key))
		var env []byte
		if benv != nil {
			e := *benv
			e.Key, e.Payload, e.Attempt, e.Parked, e.Lost, e.RateTurn = key, []byte(it), 1, 0, 0, 0
			env = codec.AppendEnvelope(nil, &e)
		}
		args = append(args, i, env)
	}
	n, err := script.BatchAbort.Run(ctx, rdb, ks, args...).Int()
	if err != nil {
		return false, fmt.Errorf("end the items of batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	return n == 2, nil
}

// toInt reads an integer reply (a replayed answer comes back through cjson
// and may be a string-free float turned integer by Redis either way).
func toInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}
