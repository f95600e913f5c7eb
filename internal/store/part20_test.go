package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// listReads counts the LRANGE commands a client sends (alone or in
// pipelines).
type listReads struct{ n atomic.Int64 }

func (*listReads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *listReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h *listReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}

func (h *listReads) count(cmd redis.Cmder) {
	if strings.EqualFold(cmd.Name(), "lrange") {
		h.n.Add(1)
	}
}

// succeedHead takes the one entry of q's stream and records its task as
// succeeded, as a worker does.
func succeedHead(t *testing.T, rdb redis.UniversalClient, q keys.Queue, key string) {
	t.Helper()
	id := deliver(t, rdb, q, "c1")
	if _, err := store.Complete(context.Background(), rdb, q, "c1", []store.Completion{
		{EntryID: id, Deliveries: 1, Key: key, Attempt: 1, Outcome: store.Succeed([]byte("r"), 60000)},
	}); err != nil {
		t.Fatal(err)
	}
}

// The end of a partitioned task that partstep.lua started names the task
// behind it in its outbox entry: the drain starts that one without reading
// the partition's list. (The first task of a key went into the stream at
// its enqueue, when no task was behind it: its end is stepped with the
// list read first.)
func TestPartitionStepNamedByEndReadsNoList(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	var reads listReads
	rdb.AddHook(&reads)
	state := func(k string) string { return rdb.HGet(ctx, q.Task(k), "st").Val() }

	succeedHead(t, rdb, q, "a")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := state("b"); st != "pending" {
		t.Fatalf("b is %q after a ended and the outbox drained; want pending", st)
	}
	if nx := rdb.HGet(ctx, q.Task("b"), "nx").Val(); nx != "c" {
		t.Errorf("b's hash names %q as the task behind it; want c", nx)
	}
	before := reads.n.Load()
	succeedHead(t, rdb, q, "b")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st := state("c"); st != "pending" {
		t.Fatalf("c is %q after b ended and the outbox drained; want pending", st)
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Errorf("stepping past b read the partition's list %d times; want 0 (its end names c)", n)
	}
	if got := rdb.LRange(ctx, q.Partition("pk"), 0, -1).Val(); len(got) != 1 || got[0] != "c" {
		t.Errorf("partition list %v; want [c]", got)
	}
}

// readOne reads the next entry of q's stream for consumer, as a worker does.
func readOne(t *testing.T, rdb redis.UniversalClient, q keys.Queue, consumer string) store.ReadEntry {
	t.Helper()
	es, err := store.ReadNew(context.Background(), rdb, []keys.Queue{q}, consumer, 1, -1)
	if err != nil || len(es) != 1 {
		t.Fatalf("read an entry: %v (%d entries)", err, len(es))
	}
	return es[0]
}

// endRead records outcome o of entry e (task key) as its worker does: with
// the partition fields the entry named.
func endRead(t *testing.T, rdb redis.UniversalClient, q keys.Queue, e store.ReadEntry, key string, o store.Outcome) store.Applied {
	t.Helper()
	a, err := store.Complete(context.Background(), rdb, q, "c1", []store.Completion{
		{EntryID: e.ID, Deliveries: 1, Key: key, Attempt: 1, Outcome: o, Part: e.Part, Next: e.Next},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a[0]
}

// partState is what a partition test compares: the list, each task's
// state, the stream's and the outbox's lengths and the count of tasks
// waiting behind a head.
func partState(t *testing.T, rdb redis.UniversalClient, q keys.Queue, pk string, ks ...string) string {
	t.Helper()
	ctx := context.Background()
	s := fmt.Sprintf("list %v", rdb.LRange(ctx, q.Partition(pk), 0, -1).Val())
	for _, k := range ks {
		h := rdb.HGetAll(ctx, q.Task(k)).Val()
		s += fmt.Sprintf(" %s:%s/m=%t/pc=%s/nx=%s", k, h["st"], h["m"] != "", h["pc"], h["nx"])
	}
	return s + fmt.Sprintf(" stream %d outbox %d pw %s", rdb.XLen(ctx, q.Stream()).Val(), rdb.XLen(ctx, q.Outbox()).Val(),
		rdb.HGet(ctx, q.Stats(), "pw").Val())
}

// The end of a partitioned task whose entry named its partition and the
// task behind it steps the partition in complete.lua: the next task enters
// the stream in the same call, named with the one behind it, and no outbox
// entry is written. A key's first task, which its enqueue started with no
// task behind it, names none: its end goes through the outbox, naming the
// task the list showed behind it (the drain reads no list).
func TestPartitionEndStepsInline(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	var reads listReads
	rdb.AddHook(&reads)

	a := readOne(t, rdb, q, "c1")
	if a.Part != "pk" || a.Next != "" {
		t.Fatalf("a's entry names partition %q, next %q; want pk and none (nothing was behind it at its enqueue)", a.Part, a.Next)
	}
	if got := endRead(t, rdb, q, a, "a", store.Succeed([]byte("r"), 60000)); got != store.Fired {
		t.Fatalf("a's end answered %d; want %d (b is behind it: the outbox)", got, store.Fired)
	}
	ob := rdb.XRange(ctx, q.Outbox(), "-", "+").Val()
	if len(ob) != 1 || ob[0].Values["k"] != "a" || ob[0].Values["nx"] != "b" {
		t.Fatalf("outbox %v; want one entry naming a and b", ob)
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if n := reads.n.Load(); n != 0 {
		t.Errorf("the drain read the partition's list %d times; want 0", n)
	}

	b := readOne(t, rdb, q, "c1")
	if b.Part != "pk" || b.Next != "c" {
		t.Fatalf("b's entry names partition %q, next %q; want pk and c", b.Part, b.Next)
	}
	if got := endRead(t, rdb, q, b, "b", store.Succeed([]byte("r"), 60000)); got != store.Recorded {
		t.Fatalf("b's end answered %d; want %d (stepped here, no outbox)", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk", "c"), "list [c] c:pending/m=false/pc=/nx= stream 3 outbox 0 pw 0"; got != want {
		t.Fatalf("after b ended:\n got %s\nwant %s", got, want)
	}
	c := readOne(t, rdb, q, "c1")
	if c.Part != "pk" || c.Next != "" {
		t.Fatalf("c's entry names partition %q, next %q; want pk and none", c.Part, c.Next)
	}
	if got := endRead(t, rdb, q, c, "c", store.Succeed([]byte("r"), 60000)); got != store.Recorded {
		t.Fatalf("c's end answered %d; want %d", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk"), "list [] stream 3 outbox 0 pw 0"; got != want {
		t.Fatalf("after c ended:\n got %s\nwant %s", got, want)
	}
	// A key's first task whose end finds nothing behind it pops itself.
	enqueueTasks(t, rdb, q, "op2", store.NewTask{UserKey: "d", Envelope: envelope("d"), Part: "pk"})
	d := readOne(t, rdb, q, "c1")
	if got := endRead(t, rdb, q, d, "d", store.Dead(envelope("d"), "boom")); got != store.Recorded {
		t.Fatalf("d's end answered %d; want %d", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk"), "list [] stream 4 outbox 0 pw 0"; got != want {
		t.Fatalf("after d died:\n got %s\nwant %s", got, want)
	}
}

// complete.lua replayed (its reply lost) steps nothing again: the ended
// task's attempt is recorded, so the replay neither pops the list again,
// nor starts a task twice, nor writes an outbox entry.
func TestPartitionInlineStepReplay(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c", "d"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	a := readOne(t, rdb, q, "c1")
	endRead(t, rdb, q, a, "a", store.Succeed([]byte("r"), 60000))
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	for _, o := range []store.Outcome{store.Succeed([]byte("r"), 60000), store.Dead(envelope("b"), "boom"), store.Cancelled(60000, "stop")} {
		b := readOne(t, rdb, q, "c1")
		key := b.Next // the task started next; b names it
		ended := rdb.LIndex(ctx, q.Partition("pk"), 0).Val()
		items := []store.Completion{{EntryID: b.ID, Deliveries: 1, Key: ended, Attempt: 1, Outcome: o, Part: b.Part, Next: b.Next}}
		if _, err := store.Complete(ctx, rdb, q, "c1", items); err != nil {
			t.Fatal(err)
		}
		once := partState(t, rdb, q, "pk", ended, key)
		got, err := store.Complete(ctx, rdb, q, "c1", items)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != store.Recorded {
			t.Errorf("the replay of %s's end answered %d; want %d", ended, got[0], store.Recorded)
		}
		if twice := partState(t, rdb, q, "pk", ended, key); twice != once {
			t.Fatalf("the replay of %s's end changed the partition:\n once %s\ntwice %s", ended, once, twice)
		}
		if key == "" {
			break
		}
	}
	if got := rdb.LLen(ctx, q.Partition("pk")).Val(); got != 0 {
		t.Errorf("the list holds %d keys after every task ended; want 0", got)
	}
}

// An end steps the partition in complete.lua only while the list agrees
// with what its entry named; otherwise it goes through the outbox as an
// entry without names does, and the drain steps it. A retry is not an end:
// the task keeps its key's turn.
func TestPartitionInlineStepDeclines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	setup := func(t *testing.T) (redis.UniversalClient, keys.Queue, store.ReadEntry) {
		rdb, q := env(t)
		var tasks []store.NewTask
		for _, k := range []string{"a", "b", "c", "d"} {
			tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
		}
		enqueueTasks(t, rdb, q, "op", tasks...)
		succeedHead(t, rdb, q, "a")
		if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
			t.Fatal(err)
		}
		b := readOne(t, rdb, q, "c1")
		if b.Part != "pk" || b.Next != "c" {
			t.Fatalf("b's entry names partition %q, next %q; want pk and c", b.Part, b.Next)
		}
		return rdb, q, b
	}
	// Each case changes what b's end declares, or the state, and says what
	// the outbox entry of b's end names.
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, rdb redis.UniversalClient, q keys.Queue, e *store.ReadEntry)
		nx     string
	}{
		{"stale next", func(_ *testing.T, _ redis.UniversalClient, _ keys.Queue, e *store.ReadEntry) { e.Next = "d" }, "c"},
		{"other partition", func(_ *testing.T, _ redis.UniversalClient, _ keys.Queue, e *store.ReadEntry) { e.Part = "other" }, "c"},
		{"next named none", func(_ *testing.T, _ redis.UniversalClient, _ keys.Queue, e *store.ReadEntry) { e.Next = "" }, "c"},
		// c, cancelled while it waited, left the list: d is behind b, and
		// the entry names it.
		{"next cancelled", func(t *testing.T, rdb redis.UniversalClient, q keys.Queue, _ *store.ReadEntry) {
			if st, err := store.Cancel(ctx, rdb, q, "c", 60000, "no"); err != nil || st != "cancelled" {
				t.Fatalf("cancel c: %q, %v", st, err)
			}
		}, "d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb, q, b := setup(t)
			tc.change(t, rdb, q, &b)
			obBefore := rdb.XLen(ctx, q.Outbox()).Val()
			if got := endRead(t, rdb, q, b, "b", store.Succeed([]byte("r"), 60000)); got != store.Fired {
				t.Fatalf("b's end answered %d; want %d (the outbox)", got, store.Fired)
			}
			ob := rdb.XRange(ctx, q.Outbox(), "-", "+").Val()
			if int64(len(ob)) != obBefore+1 || ob[len(ob)-1].Values["k"] != "b" || ob[len(ob)-1].Values["nx"] != tc.nx {
				t.Fatalf("outbox %v; want an entry naming b and %s added", ob, tc.nx)
			}
			if got := rdb.LRange(ctx, q.Partition("pk"), 0, 0).Val(); len(got) != 1 || got[0] != "b" {
				t.Fatalf("the list's head is %v after b ended through the outbox; want b until the drain", got)
			}
			if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
				t.Fatal(err)
			}
			// The drain starts the first task behind b that waits.
			next := "c"
			if tc.name == "next cancelled" {
				next = "d"
			}
			if got := readOne(t, rdb, q, "c1"); got.Part != "pk" {
				t.Errorf("the entry started by the drain names partition %q; want pk", got.Part)
			}
			if st := rdb.HGet(ctx, q.Task(next), "st").Val(); st != "pending" {
				t.Errorf("%s is %q after the drain; want pending", next, st)
			}
			if got := rdb.LIndex(ctx, q.Partition("pk"), 0).Val(); got != next {
				t.Errorf("the list's head is %q after the drain; want %s", got, next)
			}
		})
	}
	t.Run("retry", func(t *testing.T) {
		t.Parallel()
		rdb, q, b := setup(t)
		before := partState(t, rdb, q, "pk", "c", "d")
		if got := endRead(t, rdb, q, b, "b", store.Retry(envelope("b"), time.Hour, "again")); got != store.Recorded {
			t.Fatalf("b's retry answered %d; want %d", got, store.Recorded)
		}
		if after := partState(t, rdb, q, "pk", "c", "d"); after != before {
			t.Fatalf("a retry stepped the partition:\nbefore %s\n after %s", before, after)
		}
		if st := rdb.HGet(ctx, q.Task("b"), "st").Val(); st != "retrying" {
			t.Errorf("b is %q; want retrying", st)
		}
	})
}

// A task cancelled while it runs (its worker's retry turned into the
// cancel) and a dead one step the partition in complete.lua; a dead task
// retried later (RetryDead) waits at the tail of its key and runs after the
// tasks that were behind it.
func TestPartitionInlineStepCancelledDeadRetried(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c", "d"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	succeedHead(t, rdb, q, "a")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	b := readOne(t, rdb, q, "c1")
	if st, err := store.Cancel(ctx, rdb, q, "b", 60000, "stop"); err != nil || st != "cancelling" {
		t.Fatalf("cancel the running b: %q, %v", st, err)
	}
	if got := endRead(t, rdb, q, b, "b", store.Retry(envelope("b"), time.Millisecond, "err")); got != store.Recorded {
		t.Fatalf("b's end answered %d; want %d", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk", "b", "c"), "list [c d] b:cancelled/m=false/pc=/nx=c c:pending/m=false/pc=/nx=d stream 3 outbox 0 pw 1"; got != want {
		t.Fatalf("after b was cancelled while it ran:\n got %s\nwant %s", got, want)
	}
	c := readOne(t, rdb, q, "c1")
	if got := endRead(t, rdb, q, c, "c", store.Dead(envelope("c"), "boom")); got != store.Recorded {
		t.Fatalf("c's end answered %d; want %d", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk", "c", "d"), "list [d] c:dead/m=true/pc=/nx=d d:pending/m=false/pc=/nx= stream 4 outbox 0 pw 0"; got != want {
		t.Fatalf("after c died:\n got %s\nwant %s", got, want)
	}
	if ok, err := store.RetryDead(ctx, rdb, q, "c", envelope("c"), "n1", "pk"); err != nil || !ok {
		t.Fatalf("retry the dead c: %v, %v", ok, err)
	}
	// d runs first; its entry named no task behind it, and c is behind it
	// now: its end goes through the outbox, and the drain starts c.
	d := readOne(t, rdb, q, "c1")
	if d.Next != "" {
		t.Fatalf("d's entry names %q behind it; want none", d.Next)
	}
	if got := endRead(t, rdb, q, d, "d", store.Succeed([]byte("r"), 60000)); got != store.Fired {
		t.Fatalf("d's end answered %d; want %d (the outbox)", got, store.Fired)
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	c = readOne(t, rdb, q, "c1")
	if got := endRead(t, rdb, q, c, "c", store.Succeed([]byte("r"), 60000)); got != store.Recorded {
		t.Fatalf("the retried c's end answered %d; want %d", got, store.Recorded)
	}
	if got, want := partState(t, rdb, q, "pk"), "list [] stream 5 outbox 0 pw 0"; got != want {
		t.Fatalf("after every task ended:\n got %s\nwant %s", got, want)
	}
}

// One complete.lua call ending the heads of several partitions steps each
// in the same call; an item whose lease is lost steps nothing.
func TestPartitionInlineStepBatch(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	pks := []string{"p1", "p2", "p3"}
	var tasks []store.NewTask
	for _, pk := range pks {
		for _, k := range []string{"a", "b", "c"} {
			tasks = append(tasks, store.NewTask{UserKey: pk + k, Envelope: envelope(pk + k), Part: pk})
		}
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	for _, pk := range pks {
		succeedHead(t, rdb, q, pk+"a")
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	var items []store.Completion
	for range pks {
		e := readOne(t, rdb, q, "c1")
		key := rdb.LIndex(ctx, q.Partition(e.Part), 0).Val()
		items = append(items, store.Completion{EntryID: e.ID, Deliveries: 1, Key: key, Attempt: 1, Outcome: store.Succeed([]byte("r"), 60000), Part: e.Part, Next: e.Next})
	}
	items[2].Deliveries = 2 // not this consumer's delivery: lease lost
	got, err := store.Complete(ctx, rdb, q, "c1", items)
	if err != nil {
		t.Fatal(err)
	}
	if want := []store.Applied{store.Recorded, store.Recorded, store.LeaseLost}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("answers %v; want %v", got, want)
	}
	for _, pk := range pks {
		want := fmt.Sprintf("list [%sc] %sc:pending/m=false/pc=/nx=", pk, pk)
		if pk == items[2].Part {
			want = fmt.Sprintf("list [%sb %sc] %sc:waiting/m=true/pc=1/nx=", pk, pk, pk)
		}
		if got := partState(t, rdb, q, pk, pk+"c"); !strings.HasPrefix(got, want) {
			t.Errorf("partition %s: %s; want %s...", pk, got, want)
		}
	}
	if n := rdb.XLen(ctx, q.Outbox()).Val(); n != 0 {
		t.Errorf("outbox holds %d entries; want 0", n)
	}
}
