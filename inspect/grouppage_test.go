package inspect_test

import (
	"context"
	"errors"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
)

// forkJoins makes n groups of one member homed in queue and returns their
// ids.
func forkJoins(t *testing.T, c *client.Client, queue string, n int) map[string]bool {
	t.Helper()
	ctx := context.Background()
	ids := map[string]bool{}
	for range n {
		g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}},
			&client.Spec{Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[g.ID()] = true
	}
	return ids
}

// GroupsPage pages through a queue's groups, newest first: 250 groups make
// pages of 100, 100 and 50, none listed twice.
func TestGroupsPage(t *testing.T) {
	e := testenv.IsolatedRedis(t, groupsDB)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	want := forkJoins(t, c, queue, 250)

	seen := map[string]bool{}
	var sizes []int
	cursor := ""
	for range 10 {
		p, err := in.GroupsPage(ctx, queue, inspect.GroupListOpts{Limit: 100, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Groups))
		for j, g := range p.Groups {
			if seen[g.ID] || !want[g.ID] {
				t.Fatalf("page %d: %s listed twice or not one of the queue's", len(sizes), g.ID)
			}
			seen[g.ID] = true
			if j > 0 && g.Created.After(p.Groups[j-1].Created) {
				t.Fatalf("page %d: not newest first at %d", len(sizes), j)
			}
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(sizes) != 3 || sizes[0] != 100 || sizes[1] != 100 || sizes[2] != 50 || len(seen) != 250 {
		t.Fatalf("pages of %v, %d groups seen", sizes, len(seen))
	}
	if p, err := in.GroupsPage(ctx, queue, inspect.GroupListOpts{}); err != nil || len(p.Groups) != 100 || p.Next == "" {
		t.Fatalf("default limit: %d groups, next %q, %v", len(p.Groups), p.Next, err)
	}
	for _, o := range []inspect.GroupListOpts{{Limit: -1}, {Limit: 1001}, {Cursor: "nope"}, {Cursor: "12:bad queue:x"}, {Cursor: "x:q:id"}} {
		if _, err := in.GroupsPage(ctx, queue, o); err == nil || (o.Cursor != "" && !errors.Is(err, inspect.ErrBadCursor)) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// Over every queue, a page merges the queues' indexes: groups of two
// queues, many created in the same millisecond, are each listed once.
func TestGroupsPageEveryQueue(t *testing.T) {
	e := testenv.IsolatedRedis(t, groupsDB)
	ctx := context.Background()
	qa, qb := testenv.Queue(t), testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	want := forkJoins(t, c, qa, 60)
	for id := range forkJoins(t, c, qb, 40) {
		want[id] = true
	}
	seen := map[string]bool{}
	cursor := ""
	for range 1000 {
		p, err := in.GroupsPage(ctx, "", inspect.GroupListOpts{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range p.Groups {
			if seen[g.ID] {
				t.Fatalf("%s listed twice", g.ID)
			}
			seen[g.ID] = true
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("%s not listed", id)
		}
	}
}

// groupsDB is the real Redis database of the GroupsPage tests (no other
// package's tests use it): on the shared one their hundreds of groups
// would push other tests' groups off the first page of every queue's.
const groupsDB = 4
