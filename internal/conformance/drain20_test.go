package conformance

import (
	"fmt"
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// TestResendConformanceCompleteFence runs complete.lua on batches whose one
// XPENDING over the batch's id range meets more of the consumer's pending
// entries than one page lists (the pages after the first, and the item
// fenced on its own past them), an item whose delivery count is not this
// attempt's, and an item the consumer does not hold.
func TestResendConformanceCompleteFence(t *testing.T) {
	const held = 120 // pending entries of consumer c; a batch of 2 lists 20 a page
	setup := func(r *Run) {
		r.Must(script.Complete.Load(r.Ctx, r.Env.RDB).Err())
		q := keys.ForQueue(r.Q)
		specs := make([]int, held+1)
		for i := range specs {
			specs[i] = i
		}
		_, err := r.Direct.EnqueueMany(r.Ctx, r.specs(r.Q, specs...))
		r.Must(err)
		r.Must(store.EnsureGroup(r.Ctx, r.Env.RDB, q))
		got := 0
		for got < held {
			es, err := store.ReadNew(r.Ctx, r.Env.RDB, []keys.Queue{q}, "c", held-got, -1)
			r.Must(err)
			got += len(es)
		}
		// The last entry is read by another consumer.
		_, err = store.ReadNew(r.Ctx, r.Env.RDB, []keys.Queue{q}, "other", 1, -1)
		r.Must(err)
	}
	op := func(want string, pick func(ids []string) []store.Completion) func(r *Run) string {
		return func(r *Run) string {
			q := keys.ForQueue(r.Q)
			ents, err := r.Env.RDB.XRange(r.Ctx, q.Stream(), "-", "+").Result()
			r.Must(err)
			ids := make([]string, len(ents))
			for i, e := range ents {
				ids[i] = e.ID
			}
			applied, err := store.Complete(r.Ctx, r.RDB, q, "c", pick(ids))
			if err == nil && fmt.Sprint(applied) != want {
				r.T.Errorf("applied %v, want %s", applied, want)
			}
			return Answer(fmt.Sprint(applied), err)
		}
	}
	succeed := func(id string, dlv int64) store.Completion {
		return store.Completion{EntryID: id, Deliveries: dlv, Key: id, Fresh: true, Attempt: 1, Outcome: store.Succeed([]byte{0x80}, 3600000)}
	}
	RunTable(t, []Row{
		// Pages of 20 cover 80 of the 120 entries: the last item is fenced
		// on its own.
		{Name: "Complete/fence-pages", Setup: setup, Op: op("[1 1 1]", func(ids []string) []store.Completion {
			return []store.Completion{succeed(ids[0], 1), succeed(ids[50], 1), succeed(ids[held-1], 1)}
		})},
		// Within the listed range: a stale delivery count, and an entry of
		// another consumer (past the range: fenced on its own).
		{Name: "Complete/fence-lost", Setup: setup, Op: op("[1 0 1 0]", func(ids []string) []store.Completion {
			return []store.Completion{succeed(ids[3], 1), succeed(ids[4], 2), succeed(ids[5], 1), succeed(ids[held], 1)}
		})},
	})
}
