package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// shardText is a shard set as the rows compare it: each name with its salt
// left out (a salt depends on the run's queue name), and the distance of
// each shard's slot from the one before, which does not.
func shardText(s store.ShardSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "n=%d epoch=%d at=%d", s.N, s.Epoch, s.CreatedMs)
	for i, name := range s.Names {
		q, j, ok := keys.ParseShard(name)
		gap := 0
		if i > 0 {
			gap = (keys.QueueSlot(name) - keys.QueueSlot(s.Names[i-1]) + keys.Slots) % keys.Slots
		}
		fmt.Fprintf(&b, " %s~%d.<salt>:%v+%d", q, j, ok, gap)
	}
	return b.String()
}

// TestResendConformanceShards declares a sharded queue (issue 21): its one
// write is HSETNX into the registry; a resent one finds the entry its first
// run wrote and answers with it.
func TestResendConformanceShards(t *testing.T) {
	RunTable(t, []Row{
		{Name: "DeclareShards", Op: func(r *Run) string {
			r.T.Cleanup(func() { _ = r.Env.RDB.HDel(context.Background(), keys.ShardRegistry, r.Q).Err() })
			s, err := store.DeclareShards(r.Ctx, r.RDB, r.Q, 4, store.ShardChange{})
			// The registry is one key of every queue's: the run's entry,
			// read directly.
			got, ok, gerr := store.Shards(r.Ctx, r.Env.RDB, r.Q)
			r.Note("registry %s: %v %s %v", r.Q, ok, shardText(got), gerr)
			return Answer(shardText(s), err)
		}},
		// A task sent to its key's old shard after a growth is written
		// only where its key has a task (enqueue.lua's IfThere): resent,
		// the op marker answers the first run's "moved" or "added".
		{Name: "Enqueue/if-there-moved", Op: ifThere},
		{Name: "Enqueue/if-there-from-past", Op: func(r *Run) string { return ifThereTask(r, store.NewTask{IfThereFromMs: 1}) }},
		{Name: "Enqueue/if-there-behind",
			Setup: func(r *Run) { r.enqueue(0, &client.EnqueueOpts{PartitionKey: "k"}) },
			Op:    ifThere},
		{Name: "GrowShards", Setup: func(r *Run) {
			r.T.Cleanup(func() { _ = r.Env.RDB.HDel(context.Background(), keys.ShardRegistry, r.Q).Err() })
			if _, err := store.DeclareShards(r.Ctx, r.RDB, r.Q, 2, store.ShardChange{}); err != nil {
				r.T.Fatal(err)
			}
		}, Op: func(r *Run) string {
			// The write is shardcas.lua: a resend finds the entry its first
			// run wrote and answers it, not a conflict.
			s, err := store.GrowShards(r.Ctx, r.RDB, r.Q, 5, store.ShardChange{Grace: time.Minute, Settle: time.Hour})
			got, ok, gerr := store.Shards(r.Ctx, r.Env.RDB, r.Q)
			r.Note("registry %s: %v %s %s %v", r.Q, ok, shardText(got), layoutText(got), gerr)
			return Answer(shardText(s)+" "+layoutText(s), err)
		}},
	})
}

// layoutText is a shard set's earlier layouts and when they settle and it
// takes effect, in ms after it was made (the grace and the settle time).
func layoutText(s store.ShardSet) string {
	var b strings.Builder
	made := s.ActiveMs - time.Minute.Milliseconds()
	fmt.Fprintf(&b, "active=+%d", s.ActiveMs-made)
	for _, l := range s.Prev {
		fmt.Fprintf(&b, " prev n=%d until=+%d", l.N, l.UntilMs-made)
	}
	return b.String()
}

// ifThere enqueues one IfThere task of partition key k into the run's
// queue through the store and answers what enqueue.lua said of it.
func ifThere(r *Run) string { return ifThereTask(r, store.NewTask{IfThere: true}) }

// ifThereTask enqueues t, as task it-1 of partition key k, into the run's
// queue through the store and answers what enqueue.lua said of it.
func ifThereTask(r *Run, t store.NewTask) string {
	q := keys.ForQueue(r.Q)
	t.UserKey, t.Envelope, t.Part = "it-1", []byte("x"), "k" // never run: the row reads the state only
	c := store.EnqueueCall(q, "ifthere", 60_000, []store.NewTask{t})
	err := store.RunCalls(r.Ctx, r.RDB, []*store.Call{c})
	if err != nil {
		return Answer("", err)
	}
	res, err := c.Enqueued(1)
	if err != nil {
		return Answer("", err)
	}
	return Answer(fmt.Sprintf("%s existed=%v moved=%v", res[0].Key, res[0].Existed, res[0].Moved), nil)
}
