package asynctest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// aMail is a task with args to compare.
type aMail struct {
	To   string
	Tags []string
}

func (aMail) Kind() string { return "kit.mail" }

// aNote's Kind is on its pointer: A is a pointer type.
type aNote struct{ Text string }

func (*aNote) Kind() string { return "kit.note" }

// aSpawn's handler enqueues an aMail from its ctx (a child).
type aSpawn struct{ To string }

func (aSpawn) Kind() string { return "kit.spawn" }

// failMsg runs fn on a fleet that shares f's recorder and client but
// fails into a fake test, and returns what it failed with ("" when it
// passed). A failure must be a Fatalf that stops fn.
func failMsg(t *testing.T, f *Fleet, fn func(f *Fleet)) string {
	t.Helper()
	fake := newFakeTB(t, t.Name())
	returned := false
	fake.run(func(tb testing.TB) {
		fn(&Fleet{t: tb, opts: f.opts, client: f.client, rec: f.rec})
		returned = true
	})
	fs := fake.failures()
	switch {
	case len(fs) == 0:
		return ""
	case len(fs) > 1:
		t.Fatalf("failed %d times: %q", len(fs), fs)
	case !fake.fatal || returned:
		t.Fatalf("failed without stopping the test (Fatalf): %q", fs[0])
	}
	return fs[0]
}

// mustFail is failMsg that must fail with a message holding every one of
// parts.
func mustFail(t *testing.T, f *Fleet, fn func(f *Fleet), parts ...string) string {
	t.Helper()
	msg := failMsg(t, f, fn)
	if msg == "" {
		t.Fatalf("passed; want a failure with %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Fatalf("failure message lacks %q:\n%s", p, msg)
		}
	}
	t.Logf("failed as it should:\n%s", msg)
	return msg
}

func enqueue(t *testing.T, c *client.Client, args client.Args, opts *client.EnqueueOpts) *client.Handle {
	t.Helper()
	h, err := c.Enqueue(context.Background(), args, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// RequireEnqueued matches on args (deeply) and on every Want field set,
// returns the first match, and counts exactly with Count.
func TestRequireEnqueued(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, nil, nil)
	c := f.Client()
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	at := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	h1 := enqueue(t, c, aMail{To: "ann", Tags: []string{"a"}}, nil)
	h2 := enqueue(t, c, aMail{To: "bob"}, &client.EnqueueOpts{Queue: "mail", ID: "bob-1", MaxAttempts: 3,
		Timeout: time.Minute, Deadline: deadline, RateKey: "smtp", Meta: map[string]string{"tenant": "acme", "req": "r1"}})
	h3 := enqueue(t, c, aMail{To: "bob"}, &client.EnqueueOpts{Delay: time.Hour})
	h4 := enqueue(t, c, aMail{To: "cid"}, &client.EnqueueOpts{ProcessAt: at})
	h5 := enqueue(t, c, aMail{To: "dan"}, &client.EnqueueOpts{PartitionKey: "user:1"})

	if e := RequireEnqueued(f, aMail{To: "ann", Tags: []string{"a"}}, nil); e.ID != h1.ID() {
		t.Fatalf("matched %s, want %s", e.ID, h1.ID())
	}
	if e := RequireEnqueued(f, aMail{To: "bob"}, nil); e.ID != h2.ID() {
		t.Fatalf("matched %s, want the first, %s", e.ID, h2.ID())
	}
	for _, c := range []struct {
		w    Want
		want *client.Handle
	}{
		{Want{Queue: "mail"}, h2},
		{Want{ID: h2.ID()}, h2},
		{Want{MaxAttempts: 3}, h2},
		{Want{Timeout: time.Minute}, h2},
		{Want{Deadline: deadline}, h2},
		{Want{RateKey: "smtp"}, h2},
		{Want{Meta: map[string]string{"tenant": "acme"}}, h2},
		{Want{Meta: map[string]string{"tenant": "acme", "req": "r1"}, Queue: "mail", Count: 1}, h2},
		{Want{Delay: time.Hour}, h3},
		{Want{Queue: "default", Count: 1}, h3},
	} {
		if e := RequireEnqueued(f, aMail{To: "bob"}, &c.w); e.ID != c.want.ID() {
			t.Fatalf("%s matched %s, want %s", &c.w, e.ID, c.want.ID())
		}
	}
	if e := RequireEnqueued(f, aMail{To: "cid"}, &Want{ProcessAt: at}); e.ID != h4.ID() {
		t.Fatalf("ProcessAt matched %s", e.ID)
	}
	if e := RequireEnqueued(f, aMail{To: "dan"}, &Want{PartitionKey: "user:1"}); e.ID != h5.ID() {
		t.Fatalf("PartitionKey matched %s", e.ID)
	}
	if es := RequireEnqueuedKind(f, "kit.mail", &Want{Count: 5}); len(es) != 5 || es[4].ID != h5.ID() {
		t.Fatalf("RequireEnqueuedKind returned %d tasks", len(es))
	}
	if es := RequireEnqueuedKind(f, "kit.mail", &Want{Queue: "default"}); len(es) != 4 {
		t.Fatalf("RequireEnqueuedKind(default) returned %d tasks, want 4", len(es))
	}
	RequireNotEnqueued(f, "kit.mail", &Want{Queue: "other"})
	RequireNotEnqueued(f, "kit.other", nil)

	got := EnqueuedArgs[aMail](f)
	if len(got) != 5 || got[0].To != "ann" || got[4].To != "dan" {
		t.Fatalf("EnqueuedArgs = %+v", got)
	}
	if len(f.Enqueued()) != 5 {
		t.Fatalf("Enqueued has %d tasks, want 5", len(f.Enqueued()))
	}
}

// Each Want field, the args and Count fail the assertion when they do not
// match, and the message names the field, the value wanted and the task's.
func TestRequireEnqueuedFailures(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, nil, nil)
	c := f.Client()
	deadline := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	h := enqueue(t, c, aMail{To: "bob", Tags: []string{"x"}}, &client.EnqueueOpts{Queue: "mail", MaxAttempts: 3,
		Timeout: time.Minute, Deadline: deadline, RateKey: "smtp", Meta: map[string]string{"tenant": "acme"}})
	enqueue(t, c, aSpawn{To: "x"}, nil)
	want := aMail{To: "bob", Tags: []string{"x"}}
	for _, c := range []struct {
		w     Want
		parts []string
	}{
		{Want{Queue: "other"}, []string{`Queue is "mail", want "other"`}},
		{Want{ID: "mail/nope"}, []string{`ID is "` + h.ID() + `", want "mail/nope"`}},
		{Want{Parent: "default/p"}, []string{`Parent is "", want "default/p"`}},
		{Want{Continues: "default/p"}, []string{`Continues is "", want "default/p"`}},
		{Want{Group: "default/g"}, []string{`Group is "", want "default/g"`}},
		{Want{MaxAttempts: 4}, []string{"MaxAttempts is 3, want 4"}},
		{Want{Delay: time.Second}, []string{"Delay is 0s, want 1s"}},
		{Want{ProcessAt: deadline}, []string{"ProcessAt is unset, want "}},
		{Want{Deadline: deadline.Add(time.Second)}, []string{"Deadline is "}},
		{Want{Timeout: time.Second}, []string{"Timeout is 1m0s, want 1s"}},
		{Want{RateKey: "imap"}, []string{`RateKey is "smtp", want "imap"`}},
		{Want{PartitionKey: "k"}, []string{`PartitionKey is "", want "k"`}},
		{Want{Meta: map[string]string{"tenant": "other"}}, []string{`Meta["tenant"] is "acme", want "other"`}},
		{Want{Meta: map[string]string{"req": "r"}}, []string{`Meta has no "req"`}},
		{Want{Count: 2}, []string{"exactly 2 task(s)", "1 matched", ": matches"}},
	} {
		w := c.w
		parts := append([]string{`wanted`, `of kind "kit.mail"`, h.ID(), "(queue mail)", "{To:bob Tags:[x]}"}, c.parts...)
		mustFail(t, f, func(f *Fleet) { RequireEnqueued(f, want, &w) }, parts...)
	}
	mustFail(t, f, func(f *Fleet) { RequireEnqueued(f, aMail{To: "ann"}, nil) },
		`with args {To:ann Tags:[]}`, h.ID(), "args differ")
	mustFail(t, f, func(f *Fleet) { RequireEnqueuedKind(f, "kit.mail", &Want{Queue: "x"}) }, `Queue is "mail", want "x"`)
	mustFail(t, f, func(f *Fleet) { RequireEnqueued(f, &aNote{Text: "n"}, nil) },
		`nothing of kind "kit.note" was enqueued; enqueued kinds: kit.mail (1), kit.spawn (1)`)
	msg := mustFail(t, f, func(f *Fleet) { RequireNotEnqueued(f, "kit.mail", &Want{Queue: "mail"}) },
		`wanted no task of kind "kit.mail" matching {Queue: "mail"}; 1 were enqueued`, h.ID(), "{To:bob Tags:[x]}")
	if strings.Contains(msg, "kit.spawn") {
		t.Fatalf("RequireNotEnqueued listed another kind: %s", msg)
	}
	// Passing ones pass through the same fake.
	if msg := failMsg(t, f, func(f *Fleet) { RequireEnqueued(f, want, &Want{Queue: "mail", Count: 1}) }); msg != "" {
		t.Fatalf("a match failed: %s", msg)
	}
}

// Args enqueued as pointers compare with values and the other way round;
// A may be a pointer type.
func TestRequireEnqueuedPointerArgs(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, nil, nil)
	c := f.Client()
	h1 := enqueue(t, c, &aMail{To: "ptr"}, nil)
	h2 := enqueue(t, c, &aNote{Text: "one"}, nil)
	if e := RequireEnqueued(f, aMail{To: "ptr"}, nil); e.ID != h1.ID() {
		t.Fatalf("matched %s", e.ID)
	}
	if e := RequireEnqueued(f, &aMail{To: "ptr"}, nil); e.ID != h1.ID() {
		t.Fatalf("matched %s", e.ID)
	}
	if e := RequireEnqueued(f, &aNote{Text: "one"}, nil); e.ID != h2.ID() {
		t.Fatalf("matched %s", e.ID)
	}
	mustFail(t, f, func(f *Fleet) { RequireEnqueued(f, &aNote{Text: "two"}, nil) },
		"with args &{Text:two}", h2.ID(), "args &{Text:one}", "args differ")
	if ms := EnqueuedArgs[aMail](f); len(ms) != 1 || ms[0].To != "ptr" {
		t.Fatalf("EnqueuedArgs[aMail] = %+v", ms)
	}
	if ms := EnqueuedArgs[*aMail](f); len(ms) != 1 || ms[0].To != "ptr" {
		t.Fatalf("EnqueuedArgs[*aMail] = %+v", ms)
	}
	if ns := EnqueuedArgs[*aNote](f); len(ns) != 1 || ns[0].Text != "one" {
		t.Fatalf("EnqueuedArgs[*aNote] = %+v", ns)
	}
}

// Tasks enqueued from a handler carry their Parent; a group's members
// their Group; a join and continuations what they continue; a second
// client's tasks are recorded too.
func TestRequireEnqueuedRelations(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, nil, nil)
	f.StartWorkers(1, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a aSpawn) (string, error) {
			_, err := f.Client().Enqueue(ctx, aMail{To: a.To}, nil)
			return "", err
		})
		worker.Handle(w, func(ctx context.Context, a aMail) (string, error) { return a.To, nil })
	})
	ctx := context.Background()
	p := enqueue(t, f.Client(), aSpawn{To: "kid"}, nil)
	f.WaitTask(p.ID(), client.StateSucceeded)
	kid := RequireEnqueued(f, aMail{To: "kid"}, &Want{Parent: p.ID(), Count: 1})
	RequireNotEnqueued(f, "kit.mail", &Want{Parent: "default/other"})

	g, err := patterns.ForkJoin(ctx, f.Client(), []client.Spec{{Args: aMail{To: "m0"}}, {Args: aMail{To: "m1"}}}, &client.Spec{Args: aMail{To: "join"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	RequireEnqueuedKind(f, "kit.mail", &Want{Group: g.ID(), Count: 2})
	RequireEnqueued(f, aMail{To: "join"}, &Want{Continues: g.ID()})
	next, err := f.Client().Enqueue(ctx, aMail{To: "first"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2 := f.NewClient(nil)
	h2, err := c2.Task(next.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.ContinueWith(ctx, aMail{To: "then"}, nil); err != nil {
		t.Fatal(err)
	}
	RequireEnqueued(f, aMail{To: "then"}, &Want{Continues: next.ID()})
	if kid.Parent != p.ID() {
		t.Fatalf("kid's parent %s", kid.Parent)
	}
}
