package store_test

import (
	"context"
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// A task cancelled while it waits behind the head of its partition leaves
// the partition's list. Were its slot left there, a task enqueued later
// with the same key (once the cancelled record expired) would be listed
// twice, and the old slot would start it ahead of the tasks enqueued before
// it (found in review: the list read [a k d k] and the new k started before
// d).
func TestPartitionReusedKeyOfCancelledWaiter(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"x", "a", "k", "d"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	succeedHead(t, rdb, q, "x")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if st, err := store.Cancel(ctx, rdb, q, "k", 60000, "stop"); err != nil || st != "cancelled" {
		t.Fatalf("cancel the waiting k: %q, %v", st, err)
	}
	if got, want := partState(t, rdb, q, "pk", "a", "k", "d"), "list [a d] a:pending/m=false/pc=/nx=k k:cancelled/m=true/pc=/nx= d:waiting/m=true/pc=1/nx= stream 2 outbox 0 pw 1"; got != want {
		t.Fatalf("after k was cancelled while it waited:\n got %s\nwant %s", got, want)
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, q.Task("k")) // its retention lapsed
	enqueueTasks(t, rdb, q, "op2", store.NewTask{UserKey: "k", Envelope: envelope("k2"), Part: "pk"})
	a := readOne(t, rdb, q, "c1")
	if a.Part != "pk" || a.Next != "k" {
		t.Fatalf("a's entry names %q %q; want pk k", a.Part, a.Next)
	}
	// a's entry names k behind it, and d is behind it now: the inline step
	// declines, the outbox entry names d, and the drain starts d.
	endRead(t, rdb, q, a, "a", store.Succeed([]byte("r"), 60000))
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if got, want := partState(t, rdb, q, "pk", "k", "d"), "list [d k] k:waiting/m=true/pc=1/nx= d:pending/m=false/pc=/nx=k stream 3 outbox 0 pw 1"; got != want {
		t.Fatalf("after a ended (the re-enqueued k must wait behind d):\n got %s\nwant %s", got, want)
	}
	d := readOne(t, rdb, q, "c1")
	if d.Next != "k" {
		t.Fatalf("d's entry names %q behind it; want k", d.Next)
	}
	endRead(t, rdb, q, d, "d", store.Succeed([]byte("r"), 60000))
	if got, want := partState(t, rdb, q, "pk", "k"), "list [k] k:pending/m=false/pc=/nx= stream 4 outbox 0 pw 0"; got != want {
		t.Fatalf("after d ended:\n got %s\nwant %s", got, want)
	}
}

// A waiting task can head its list for a moment (a drain popped the ended
// head and has not started the next yet). Cancelled then, it leaves the
// list and its outbox entry steps the partition: the task behind it starts.
func TestPartitionCancelWaitingHead(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	succeedHead(t, rdb, q, "a")
	// The drain's first step: a (ended) leaves the head; b is not started.
	rdb.LPop(ctx, q.Partition("pk"))
	if st, err := store.Cancel(ctx, rdb, q, "b", 60000, "stop"); err != nil || st != "cancelled" {
		t.Fatalf("cancel the waiting b: %q, %v", st, err)
	}
	if got := rdb.LRange(ctx, q.Partition("pk"), 0, -1).Val(); len(got) != 1 || got[0] != "c" {
		t.Fatalf("partition list %v after b was cancelled; want [c]", got)
	}
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if got, want := partState(t, rdb, q, "pk", "b", "c"), "list [c] b:cancelled/m=true/pc=/nx= c:pending/m=false/pc=/nx= stream 2 outbox 0 pw 0"; got != want {
		t.Fatalf("after the drain:\n got %s\nwant %s", got, want)
	}
}

// A task started with no task behind it names none in its hash, though an
// earlier start (a dead task retried) named one: its end then guesses no
// task that is gone.
func TestPartitionStartWithNothingBehindDropsNext(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	enqueueTasks(t, rdb, q, "op", tasks...)
	succeedHead(t, rdb, q, "a")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	b := readOne(t, rdb, q, "c1")
	endRead(t, rdb, q, b, "b", store.Dead(envelope("b"), "boom"))
	if ok, err := store.RetryDead(ctx, rdb, q, "b", envelope("b"), "n1", "pk"); err != nil || !ok {
		t.Fatalf("retry the dead b: %v, %v", ok, err)
	}
	// c ends: b, behind it, starts (inline or through the outbox) with
	// nothing behind it.
	c := readOne(t, rdb, q, "c1")
	endRead(t, rdb, q, c, "c", store.Succeed([]byte("r"), 60000))
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	if got, want := partState(t, rdb, q, "pk", "b"), "list [b] b:pending/m=false/pc=/nx= stream 4 outbox 0 pw 0"; got != want {
		t.Fatalf("after c ended:\n got %s\nwant %s", got, want)
	}
	// The same start in complete.lua's step: in partition p2, b dies
	// (c starts, naming d), is retried behind d, and d's end starts it
	// inline with nothing behind it.
	tasks = tasks[:0]
	for _, k := range []string{"a2", "b2", "c2", "d2"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "p2"})
	}
	enqueueTasks(t, rdb, q, "op2", tasks...)
	succeedHead2 := func(key string) {
		t.Helper()
		e := readOne(t, rdb, q, "c1")
		if got := endRead(t, rdb, q, e, key, store.Succeed([]byte("r"), 60000)); got != store.Recorded && key != "a2" {
			t.Fatalf("%s's end answered %d; want %d (stepped inline)", key, got, store.Recorded)
		}
	}
	readOne(t, rdb, q, "c1") // b's second run, in partition pk, stays pending
	succeedHead2("a2")
	if err := store.DrainOutbox(ctx, rdb, q, 60000); err != nil {
		t.Fatal(err)
	}
	b2 := readOne(t, rdb, q, "c1")
	if b2.Next != "c2" {
		t.Fatalf("b2's entry names %q behind it; want c2", b2.Next)
	}
	endRead(t, rdb, q, b2, "b2", store.Dead(envelope("b2"), "boom"))
	if ok, err := store.RetryDead(ctx, rdb, q, "b2", envelope("b2"), "n2", "p2"); err != nil || !ok {
		t.Fatalf("retry the dead b2: %v, %v", ok, err)
	}
	succeedHead2("c2")
	succeedHead2("d2")
	if got, want := partState(t, rdb, q, "p2", "b2"), "list [b2] b2:pending/m=false/pc=/nx= stream 9 outbox 0 pw 0"; got != want {
		t.Fatalf("after d2 ended:\n got %s\nwant %s", got, want)
	}
}

// A group's cancel (CancelMembers) takes a named task waiting in a
// partition out of its list too: the pipelined cancel calls it again with
// the list declared. Members and tasks not in a partition are cancelled in
// the first call.
func TestPartitionCancelMembersWaiting(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	var tasks []store.NewTask
	for _, k := range []string{"a", "b", "c"} {
		tasks = append(tasks, store.NewTask{UserKey: k, Envelope: envelope(k), Part: "pk"})
	}
	tasks = append(tasks, store.NewTask{UserKey: "e", Envelope: envelope("e")})
	enqueueTasks(t, rdb, q, "op", tasks...)
	g := store.GroupRef{Home: q, ID: "g1"}
	if st, _, err := store.NewGroup(ctx, rdb, g, store.GroupSettings{Members: 2}, ""); err != nil || st != "new" {
		t.Fatalf("NewGroup = %q, %v", st, err)
	}
	names := []string{keys.TaskID(q.Name, "b"), keys.TaskID(q.Name, "e")}
	if _, err := store.CancelMembers(ctx, rdb, g, names, "stop", 60000); err != nil {
		t.Fatal(err)
	}
	if got, want := partState(t, rdb, q, "pk", "a", "b", "c"), "list [a c] a:pending/m=false/pc=/nx= b:cancelled/m=true/pc=/nx= c:waiting/m=true/pc=1/nx= stream 1 outbox 0 pw 1"; got != want {
		t.Fatalf("after the group cancelled b:\n got %s\nwant %s", got, want)
	}
	if st := rdb.HGet(ctx, q.Task("e"), "st").Val(); st != "cancelled" {
		t.Fatalf("e is %q; want cancelled", st)
	}
}
