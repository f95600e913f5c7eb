package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/taskfleet/async/internal/store"
)

// groupcont.lua run twice on a running group (a resend, or the same
// continuation registered again) lists the continuation once: the group's
// end would otherwise put it into the outbox once per copy.
func TestGroupContinuationRegisteredTwiceListedOnce(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	g := store.GroupRef{Home: q, ID: "g1"}
	if st, _, err := store.NewGroup(ctx, rdb, g, store.GroupSettings{Members: 1}, ""); err != nil || st != "new" {
		t.Fatalf("NewGroup = %q, %v", st, err)
	}
	spec := store.ContSpec(q.Name, "c1", false)
	for i := range 2 {
		fired, err := store.AddGroupContinuation(ctx, rdb, g, spec)
		if err != nil || fired {
			t.Fatalf("registration %d: fired %v, %v; want registered", i+1, fired, err)
		}
	}
	other := store.ContSpec(q.Name, "c2", true)
	if _, err := store.AddGroupContinuation(ctx, rdb, g, other); err != nil {
		t.Fatal(err)
	}
	got, err := rdb.LRange(ctx, q.GroupConts(g.ID), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{spec, other}; !slices.Equal(got, want) {
		t.Fatalf("the group lists continuations %q, want %q", got, want)
	}
}
