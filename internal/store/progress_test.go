package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// pgSet writes a report of run (attempt, seq, run, n) and fails t on error.
func pgSet(t *testing.T, ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, done, total int64, attempt int, seq int64, run string, n int64) bool {
	t.Helper()
	ok, err := store.WriteProgress(ctx, rdb, q, key, store.ProgressReport{Done: done, Total: total, Attempt: attempt, Seq: seq, Run: run, N: n, RetainMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// pgset.lua refuses a report of an older run (a lower attempt, or the same
// attempt delivered fewer times), and an older write of the same run; a
// resent write changes nothing, not even the time.
func TestProgressFence(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	read := func() codec.ProgressRecord {
		t.Helper()
		rec, ok, err := store.ReadProgress(ctx, rdb, q, "t1")
		if err != nil || !ok {
			t.Fatalf("read: %+v %v %v", rec, ok, err)
		}
		return rec
	}
	if !pgSet(t, ctx, rdb, q, "t1", 10, 100, 2, 1, "e2/1", 1) {
		t.Fatal("the first report was refused")
	}
	first := read()
	for _, c := range []struct {
		name    string
		attempt int
		seq     int64
		run     string
		n       int64
		want    bool
	}{
		{"an earlier attempt", 1, 5, "e1/5", 9, false},
		{"the same attempt delivered fewer times", 2, 0, "e2/0", 9, false},
		{"the same write resent", 2, 1, "e2/1", 1, true},
		{"an older write of the same run", 2, 1, "e2/1", 0, false},
	} {
		if got := pgSet(t, ctx, rdb, q, "t1", 99, 100, c.attempt, c.seq, c.run, c.n); got != c.want {
			t.Errorf("%s: applied %v, want %v", c.name, got, c.want)
		}
		if rec := read(); rec != first {
			t.Fatalf("%s changed the report: %+v, was %+v", c.name, rec, first)
		}
	}
	// A later write of the run, a later delivery, a later attempt: each
	// replaces the report.
	for i, r := range []struct {
		attempt int
		seq     int64
		run     string
		n       int64
	}{{2, 1, "e2/1", 2}, {2, 2, "e2/2", 1}, {3, 1, "e3/1", 1}} {
		if !pgSet(t, ctx, rdb, q, "t1", int64(20+i), 100, r.attempt, r.seq, r.run, r.n) {
			t.Fatalf("write %d was refused", i)
		}
		if rec := read(); rec.Done != int64(20+i) || rec.Attempt != r.attempt {
			t.Fatalf("write %d: %+v", i, rec)
		}
	}
	recs, oks, err := store.ReadProgresses(ctx, rdb, []string{keys.TaskID(q.Name, "t1")})
	if err != nil || !oks[0] || recs[0] != read() {
		t.Fatalf("ReadProgresses = %+v %v %v, want %+v", recs, oks, err, read())
	}
	if ttl := rdb.PTTL(ctx, q.Progress("t1")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL %v, want the retention (1m)", ttl)
	}
}

// Bytes in a progress hash that this library could not have written are
// refused with an error naming the field.
func TestProgressReadRefusesGarbage(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		fields []any
	}{
		{"not a number", []any{"done", "x1", "total", "5", "attempt", "1", "at", "1700000000000"}},
		{"negative", []any{"done", "-1", "total", "5", "attempt", "1", "at", "1700000000000"}},
		{"done over total", []any{"done", "6", "total", "5", "attempt", "1", "at", "1700000000000"}},
		{"attempt 0", []any{"done", "1", "total", "5", "attempt", "0", "at", "1700000000000"}},
		{"a field missing", []any{"done", "1", "total", "5", "attempt", "1"}},
	} {
		key := "g-" + c.name[:3]
		rdb.Del(ctx, q.Progress(key))
		if err := rdb.HSet(ctx, q.Progress(key), c.fields...).Err(); err != nil {
			t.Fatal(err)
		}
		_, _, err := store.ReadProgress(ctx, rdb, q, key)
		if !errors.Is(err, codec.ErrBadProgress) {
			t.Errorf("%s: %v, want ErrBadProgress", c.name, err)
		}
	}
	if _, ok, err := store.ReadProgress(ctx, rdb, q, "none"); ok || err != nil {
		t.Fatalf("no report: %v %v", ok, err)
	}
}

// A group member's reports sum in its group's progress hash, which takes
// the group's lifetime; a member that succeeded counts as done in full
// though its last report said less; a group that is gone takes nothing.
func TestGroupProgressSums(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	g := store.GroupRef{Home: q, ID: "g1"}
	if st, _, err := store.NewGroup(ctx, rdb, g, store.GroupSettings{Members: 2, RetainMs: 3600000}, ""); err != nil || st != "new" {
		t.Fatalf("NewGroup = %q, %v", st, err)
	}
	m1, m2 := keys.TaskID(q.Name, "g1.0"), keys.TaskID(q.Name, "g1.1")
	if _, err := store.AddGroupMembers(ctx, rdb, g, []store.GroupMember{{Index: 0, Name: m1}, {Index: 1, Name: m2}}); err != nil {
		t.Fatal(err)
	}
	write := func(m string, done, total int64, n int64) bool {
		t.Helper()
		ok, err := store.WriteGroupProgress(ctx, rdb, g, m, store.ProgressReport{Done: done, Total: total, Attempt: 1, Seq: 1, Run: m + "/1", N: n})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	work := func() store.GroupWork {
		t.Helper()
		_, w, err := store.ReadGroupWithWork(ctx, rdb, g)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	write(m1, 10, 100, 1)
	write(m2, 5, 50, 1)
	write(m1, 40, 100, 2)
	if !write(m1, 40, 100, 2) { // resent
		t.Fatal("a resent write answered refused")
	}
	if w := work(); w != (store.GroupWork{Done: 45, Total: 150}) {
		t.Fatalf("sums %+v, want 45 of 150", w)
	}
	if ttl := rdb.PTTL(ctx, q.GroupProgress(g.ID)).Val(); ttl <= 0 {
		t.Fatalf("progress hash of an unsealed group: TTL %v, want the group's", ttl)
	}
	if _, _, err := store.SealGroup(ctx, rdb, g); err != nil {
		t.Fatal(err)
	}
	write(m2, 6, 50, 2)
	if ttl := rdb.PTTL(ctx, q.GroupProgress(g.ID)).Val(); ttl != -1 {
		t.Fatalf("progress hash of a sealed running group: TTL %v, want none", ttl)
	}
	if _, _, err := store.EndMembers(ctx, rdb, g, []store.MemberEnd{{Member: m1, State: "succeeded"}, {Member: m2, State: "dead"}}); err != nil {
		t.Fatal(err)
	}
	if w := work(); w != (store.GroupWork{Done: 106, Total: 150}) {
		t.Fatalf("sums at the end %+v, want 106 of 150 (m1 in full, m2 as reported)", w)
	}
	gTTL, pTTL := rdb.PTTL(ctx, q.Group(g.ID)).Val(), rdb.PTTL(ctx, q.GroupProgress(g.ID)).Val()
	if gTTL <= 0 || pTTL <= 0 || pTTL > gTTL+time.Second || pTTL < gTTL-5*time.Second {
		t.Fatalf("ended group: TTL %v, its progress hash's %v; want the retention on both", gTTL, pTTL)
	}
	gone := store.GroupRef{Home: q, ID: "g2"}
	ws, err := store.ReadGroupWorks(ctx, rdb, []store.GroupRef{g, gone})
	if err != nil || len(ws) != 2 || ws[0] != (store.GroupWork{Done: 106, Total: 150}) || ws[1] != (store.GroupWork{}) {
		t.Fatalf("ReadGroupWorks = %+v, %v", ws, err)
	}
	ids := []string{keys.TaskID(q.Name, "none")}
	if recs, oks, err := store.ReadProgresses(ctx, rdb, ids); err != nil || len(recs) != 1 || oks[0] {
		t.Fatalf("ReadProgresses of a task without a report = %+v %v %v", recs, oks, err)
	}
	if ok, err := store.WriteGroupProgress(ctx, rdb, gone, m1, store.ProgressReport{Done: 1, Total: 2, Attempt: 1, Seq: 1, Run: "r", N: 1}); ok || err != nil {
		t.Fatalf("a report for a group that is gone: %v %v, want refused", ok, err)
	}
	if n := rdb.Exists(ctx, q.GroupProgress(gone.ID)).Val(); n != 0 {
		t.Fatal("a report for a group that is gone made its progress hash")
	}
}

// PurgeDead deletes a dead task's progress hash with the task.
func TestPurgeDeadDeletesProgress(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	if err := rdb.HSet(ctx, q.Task("d1"), "st", "dead").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: "d1"})
	pgSet(t, ctx, rdb, q, "d1", 1, 2, 1, 1, "e/1", 1)
	pgSet(t, ctx, rdb, q, "alive", 1, 2, 1, 1, "e/1", 1)
	if n, err := store.PurgeDead(ctx, rdb, q, []string{"d1", "alive"}); err != nil || n != 1 {
		t.Fatalf("PurgeDead = %d, %v", n, err)
	}
	if n := rdb.Exists(ctx, q.Progress("d1")).Val(); n != 0 {
		t.Fatal("the purged task's progress hash is still there")
	}
	if n := rdb.Exists(ctx, q.Progress("alive")).Val(); n != 1 {
		t.Fatal("a task that is not dead lost its progress hash")
	}
}

// RetryDead starts the task over at attempt 1: the dead run's report goes
// with it, so that the new first attempt's reports are not refused as
// older than the dead attempt's.
func TestRetryDeadDropsProgress(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	for _, partition := range []string{"", "pk1"} {
		key := "d-" + partition
		if err := rdb.HSet(ctx, q.Task(key), "st", "dead").Err(); err != nil {
			t.Fatal(err)
		}
		rdb.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: key})
		pgSet(t, ctx, rdb, q, key, 5, 10, 3, 1, "e3/1", 4)
		if ok, err := store.RetryDead(ctx, rdb, q, key, envelope(key), "n-"+key, partition); err != nil || !ok {
			t.Fatalf("RetryDead = %v, %v", ok, err)
		}
		if !pgSet(t, ctx, rdb, q, key, 1, 10, 1, 1, "e1/1", 1) {
			t.Fatalf("partition %q: the retried task's first report was refused", partition)
		}
	}
}
