package store_test

import (
	"context"
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// What KeepsLastID infers from INFO is what the server does: a stream whose
// last entry was deleted refuses an id below the deleted one, or not.
func TestKeepsLastIDMatchesTheServer(t *testing.T) {
	e := testenv.Redis(t)
	ctx := context.Background()
	said, err := store.KeepsLastID(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	did, err := store.ProbeKeepsLastID(ctx, e.RDB, keys.ForQueue(testenv.Queue(t)), "probe")
	if err != nil {
		t.Fatal(err)
	}
	if said != did {
		t.Fatalf("KeepsLastID says %v, the server does %v", said, did)
	}
	if e.Mini == nil && !did {
		t.Fatal("a real Redis went back to an id below a deleted last entry")
	}
}
