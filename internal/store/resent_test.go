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

// Each test here runs one script of an operation twice with the same
// arguments (the rerun hook), as go-redis does when the first reply is
// lost, and checks that the operation answers as a clean run does.

// rerun is twice with a step between the two runs: the client it hooks
// runs every call of the script with hash sha, then between (if set), then
// the call again, whose reply the caller reads.
type rerun struct {
	sha     string
	between func()
}

func (rerun) DialHook(next redis.DialHook) redis.DialHook { return next }
func (rerun) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h rerun) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "evalsha" && len(a) > 1 && a[1] == h.sha {
			if err := next(ctx, cmd); err != nil {
				return err // not run (NOSCRIPT): go-redis falls back to EVAL
			}
			if h.between != nil {
				h.between()
			}
		}
		return next(ctx, cmd)
	}
}

// resending returns a client of e that runs every call of s twice.
func resending(t *testing.T, e *testenv.Env, s *redis.Script) redis.UniversalClient {
	t.Helper()
	rdb := testenv.NewEnvClient(e)
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(rerun{sha: s.Hash()})
	return rdb
}

// published records the channels PUBLISHed to through the client it hooks.
type published struct {
	mu       sync.Mutex
	channels []string
}

func (*published) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*published) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (p *published) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); cmd.Name() == "publish" && len(a) > 1 {
			p.mu.Lock()
			p.channels = append(p.channels, a[1].(string))
			p.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (p *published) count(channel string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.channels {
		if c == channel {
			n++
		}
	}
	return n
}

// A mark that moved a queue's due entry earlier wakes the coordinators
// even when its reply was lost: the resend finds the entry already where it
// put it, which alone would read as "nothing earlier, no wake-up".
func TestMarkDueResentWakesCoordinators(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	if err := script.Load(ctx, e.RDB); err != nil {
		t.Fatal(err)
	}
	queue := testenv.Queue(t)
	t.Cleanup(func() {
		e.RDB.ZRem(context.Background(), keys.DueIndex, queue)
		e.RDB.HDel(context.Background(), keys.DueGen, queue)
	})
	rdb := resending(t, e, script.DueMark)
	pub := &published{}
	rdb.AddHook(pub)
	if err := store.MarkDue(ctx, rdb, queue, 5000); err != nil {
		t.Fatal(err)
	}
	if n := pub.count(keys.DueWake); n != 1 {
		t.Fatalf("a resent mark of a new due time woke the coordinators %d times, want 1", n)
	}
	if s, err := e.RDB.ZScore(ctx, keys.DueIndex, queue).Result(); err != nil || s != 5000 {
		t.Fatalf("due entry %v (%v), want 5000", s, err)
	}
	// A later due time moves nothing: no wake-up, resent or not.
	if err := store.MarkDue(ctx, rdb, queue, 6000); err != nil {
		t.Fatal(err)
	}
	if n := pub.count(keys.DueWake); n != 1 {
		t.Fatalf("a resent mark of a later due time woke the coordinators (%d wake-ups in all, want 1)", n)
	}
	// A mark counts once in the queue's generation however often it runs:
	// a coordinator that read the generation between the two runs is not
	// refused its update for a mark it saw.
	var between []string
	rdb2 := testenv.NewEnvClient(e)
	t.Cleanup(func() { _ = rdb2.Close() })
	rdb2.AddHook(rerun{sha: script.DueMark.Hash(), between: func() {
		between, _ = store.DueGens(ctx, e.RDB, []string{queue})
	}})
	if err := store.MarkDue(ctx, rdb2, queue, 4000); err != nil {
		t.Fatal(err)
	}
	after, err := store.DueGens(ctx, e.RDB, []string{queue})
	if err != nil || len(between) != 1 || after[0] != between[0] {
		t.Fatalf("generation %q after the first run, %q (%v) after the resend; want it counted once", between, after, err)
	}
}

// A purge whose reply was lost reports the task it purged.
func TestPurgeDeadResentCountsPurged(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	if err := script.Load(ctx, e.RDB); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue(testenv.Queue(t))
	for _, k := range []string{"a", "b"} {
		if err := e.RDB.HSet(ctx, q.Task(k), "st", "dead").Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.RDB.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: k}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rdb := resending(t, e, script.PurgeDead)
	n, err := store.PurgeDead(ctx, rdb, q, []string{"a", "b", "none"})
	if err != nil || n != 2 {
		t.Fatalf("resent purge: %d, %v; want 2 purged", n, err)
	}
	if c, err := e.RDB.Exists(ctx, q.Task("a"), q.Task("b")).Result(); err != nil || c != 0 {
		t.Fatalf("%d purged tasks left (%v)", c, err)
	}
	if c, err := e.RDB.ZCard(ctx, q.Dead()).Result(); err != nil || c != 0 {
		t.Fatalf("%d dead letters left (%v)", c, err)
	}
	// Nothing dead: 0, resent or not.
	if n, err := store.PurgeDead(ctx, rdb, q, []string{"a"}); err != nil || n != 0 {
		t.Fatalf("purge of a purged task: %d, %v; want 0", n, err)
	}
}

func repeatDef(t *testing.T, queue string, every time.Duration) store.RepeatDef {
	env := codec.AppendEnvelope(nil, &codec.Envelope{Kind: "tick", Attempt: 1, MaxAttempts: 3, RetainMs: 60000})
	return store.RepeatDef{Name: "rs-" + testenv.Queue(t), Queue: queue, Kind: "tick", Every: every, Env: env}
}

// A removal whose script's reply was lost reports the schedule it removed.
func TestRemoveRepeatResentReportsRemoved(t *testing.T) {
	t.Parallel()
	for _, s := range []struct {
		name string
		s    *redis.Script
	}{{"definition", script.RepRemove}, {"index", script.RepIndex}} {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.Redis(t)
			ctx := context.Background()
			if err := script.Load(ctx, e.RDB); err != nil {
				t.Fatal(err)
			}
			def := repeatDef(t, testenv.Queue(t), time.Hour)
			t.Cleanup(func() { _, _ = store.RemoveRepeat(context.Background(), e.RDB, def.Name) })
			if _, _, err := store.DeclareRepeat(ctx, e.RDB, def, 0); err != nil {
				t.Fatal(err)
			}
			removed, err := store.RemoveRepeat(ctx, resending(t, e, s.s), def.Name)
			if err != nil || !removed {
				t.Fatalf("resent removal: %v, %v; want true", removed, err)
			}
			if n, err := e.RDB.HExists(ctx, keys.RepeatIndex, def.Name).Result(); err != nil || n {
				t.Fatalf("still in the repeat index (%v)", err)
			}
			removed, err = store.RemoveRepeat(ctx, resending(t, e, s.s), def.Name)
			if err != nil || removed {
				t.Fatalf("removal of a removed schedule: %v, %v; want false", removed, err)
			}
		})
	}
}

// A declaration whose script's reply was lost reports what it did: created,
// updated (a new interval, a move to another queue) or unchanged.
func TestDeclareRepeatResentReportsWhatItDid(t *testing.T) {
	t.Parallel()
	q1, q2 := "a", "b"
	for _, tc := range []struct {
		name  string
		s     *redis.Script
		setup bool          // declared before, in q1, every hour
		queue string        // q1 or q2
		every time.Duration // of the declaration under test
		want  int
	}{
		{"create/declare", script.RepDeclare, false, q1, time.Hour, store.RepeatCreated},
		{"create/index", script.RepIndex, false, q1, time.Hour, store.RepeatCreated},
		{"again/declare", script.RepDeclare, true, q1, time.Hour, store.RepeatUnchanged},
		{"again/index", script.RepIndex, true, q1, time.Hour, store.RepeatUnchanged},
		{"interval/declare", script.RepDeclare, true, q1, 2 * time.Hour, store.RepeatUpdated},
		{"interval/index", script.RepIndex, true, q1, 2 * time.Hour, store.RepeatUpdated},
		{"move/move", script.RepMove, true, q2, time.Hour, store.RepeatUpdated},
		{"move/declare", script.RepDeclare, true, q2, time.Hour, store.RepeatUpdated},
		{"move/remove", script.RepRemove, true, q2, time.Hour, store.RepeatUpdated},
		{"move/index", script.RepIndex, true, q2, time.Hour, store.RepeatUpdated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.Redis(t)
			ctx := context.Background()
			if err := script.Load(ctx, e.RDB); err != nil {
				t.Fatal(err)
			}
			queues := map[string]string{q1: testenv.Queue(t), q2: testenv.Queue(t)}
			def := repeatDef(t, queues[q1], time.Hour)
			t.Cleanup(func() { _, _ = store.RemoveRepeat(context.Background(), e.RDB, def.Name) })
			if tc.setup {
				if _, _, err := store.DeclareRepeat(ctx, e.RDB, def, 0); err != nil {
					t.Fatal(err)
				}
			}
			def.Queue, def.Every = queues[tc.queue], tc.every
			got, _, err := store.DeclareRepeat(ctx, resending(t, e, tc.s), def, 0)
			if err != nil || got != tc.want {
				t.Fatalf("resent declaration: %d, %v; want %d (0 unchanged, 1 created, 2 updated)", got, err, tc.want)
			}
			idx, err := e.RDB.HGet(ctx, keys.RepeatIndex, def.Name).Result()
			if err != nil {
				t.Fatal(err)
			}
			q := keys.ForQueue(def.Queue)
			tok, err := e.RDB.HGet(ctx, q.Repeat(def.Name), "tok").Result()
			if err != nil || idx != def.Queue+"|"+tok {
				t.Fatalf("index %q, definition's token %q (%v)", idx, tok, err)
			}
			if _, err := e.RDB.ZScore(ctx, q.Repeats(), def.Name).Result(); err != nil {
				t.Fatalf("not in its queue's repeat set: %v", err)
			}
		})
	}
}

// Of removals of one schedule racing, one reports it removed.
func TestRemoveRepeatRacingOneReportsRemoved(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	if err := script.Load(ctx, e.RDB); err != nil {
		t.Fatal(err)
	}
	def := repeatDef(t, testenv.Queue(t), time.Hour)
	for round := 0; round < 20; round++ {
		if _, _, err := store.DeclareRepeat(ctx, e.RDB, def, 0); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		answers := make(chan bool, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				removed, err := store.RemoveRepeat(ctx, e.RDB, def.Name)
				if err != nil {
					t.Error(err)
				}
				answers <- removed
			}()
		}
		wg.Wait()
		close(answers)
		n := 0
		for a := range answers {
			if a {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d of 4 racing removals report the schedule removed, want 1", round, n)
		}
	}
}
