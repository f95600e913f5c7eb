package inspect_test

import (
	"context"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
)

// GroupMembers reads a group's counters and lists its members with their
// states, in submission order.
func TestGroupMembers(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	specs := []client.Spec{{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}, {Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}}
	g, err := patterns.ForkJoin(ctx, c, specs, &client.Spec{Args: Job{N: 3}, Opts: &client.EnqueueOpts{Queue: queue}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := in.GroupMembers(ctx, g.ID())
	if err != nil {
		t.Fatal(err)
	}
	if d.State != "open" || d.Members != 2 || !d.Listed || len(d.MemberList) != 2 || d.ByState["pending"] != 2 || d.Join == "" ||
		!strings.HasPrefix(d.MemberList[1].ID, queue+"/") || d.MemberList[1].Index != 1 || d.Created.IsZero() {
		t.Fatalf("group: %+v", d)
	}
	if d, err := in.GroupMembers(ctx, "group:"+queue+"/nope"); err != nil || d.State != "" || d.Listed {
		t.Errorf("unknown group: %+v, %v", d, err)
	}
	if _, err := in.GroupMembers(ctx, "nope"); err == nil {
		t.Error("a bad id accepted")
	}
}
