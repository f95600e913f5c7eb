package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// beforeScript runs f once, just before the first EVALSHA of the script
// with hash sha that goes through the client it hooks.
type beforeScript struct {
	sha  string
	once sync.Once
	f    func()
}

func (*beforeScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*beforeScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			body, _ := a[1].(string)
			if body == h.sha {
				h.once.Do(h.f)
			}
		}
		return next(ctx, cmd)
	}
}

// A schedule moved to another queue as a slot comes due fires that slot
// once: a coordinator of the old queue firing it between the move's look
// at the old queue and the declaration in the new one leaves the new queue
// past that slot (or fires nothing itself).
func TestRepeatMoveWhileSlotFires(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	rdb := e.RDB
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	name := "mv-" + testenv.Queue(t)
	q1, q2 := keys.ForQueue(testenv.Queue(t)), keys.ForQueue(testenv.Queue(t))
	env := codec.AppendEnvelope(nil, &codec.Envelope{Kind: "tick", Attempt: 1, MaxAttempts: 3, RetainMs: 60000})
	def := store.RepeatDef{Name: name, Queue: q1.Name, Kind: "tick", Every: time.Hour, Env: env}
	t.Cleanup(func() { _, _ = store.RemoveRepeat(context.Background(), rdb, name) })
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.DeclareRepeat(ctx, rdb, def, now.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	// Its slot comes due: one that started a second ago.
	slot := now.UnixMilli() - 1000
	if err := rdb.HSet(ctx, q1.Repeat(name), "anchor", slot).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, q1.Repeats(), redis.Z{Score: float64(slot), Member: name}).Err(); err != nil {
		t.Fatal(err)
	}
	fire := func(q keys.Queue) []string {
		t.Helper()
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		fired, _, _, _, bad, err := store.FireRepeats(ctx, rdb, q, now.UnixMilli())
		if err != nil || bad != nil {
			t.Fatalf("fire %s: %v %v", q.Name, err, bad)
		}
		return fired
	}

	// The move's declaration in q2 waits until q1's coordinator fired.
	var firedOld []string
	hook := &beforeScript{sha: script.RepDeclare.Hash(), f: func() { firedOld = fire(q1) }}
	mover := testenv.NewEnvClient(e)
	t.Cleanup(func() { _ = mover.Close() })
	mover.AddHook(hook)
	def.Queue = q2.Name
	if _, _, err := store.DeclareRepeat(ctx, mover, def, now.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	firedNew := fire(q2)

	key := store.RepeatKey(name, slot)
	n := 0
	for _, q := range []keys.Queue{q1, q2} {
		c, err := rdb.Exists(ctx, q.Task(key)).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += int(c)
	}
	if n != 1 {
		t.Fatalf("slot %s has a task in %d queues (fired in the old queue: %v, in the new: %v); want exactly one", key, n, firedOld, firedNew)
	}
	// And the schedule lives on in q2 only, one interval after that slot.
	if _, err := rdb.ZScore(ctx, q1.Repeats(), name).Result(); err != redis.Nil {
		t.Errorf("still in the old queue's repeat set: %v", err)
	}
	if nx, err := rdb.ZScore(ctx, q2.Repeats(), name).Result(); err != nil || int64(nx) != slot+time.Hour.Milliseconds() {
		t.Errorf("next fire in the new queue %v (%v), want %d", int64(nx), err, slot+time.Hour.Milliseconds())
	}
}
