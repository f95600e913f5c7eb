package asynctest

import (
	"context"
	"maps"
	"sync"

	"github.com/taskfleet/async/client"
)

// recorder keeps every task the fleet's clients enqueued.
type recorder struct {
	mu  sync.Mutex
	all []client.Enqueued
}

// hook is the client.EnqueuedHook the fleet's clients carry: it keeps a
// copy of t (its options and metadata copied too).
func (r *recorder) hook(_ context.Context, t *client.Enqueued) {
	c := *t
	if t.Opts != nil {
		o := *t.Opts
		o.Meta = maps.Clone(o.Meta)
		c.Opts = &o
	} else {
		c.Opts = &client.EnqueueOpts{Queue: t.Queue}
	}
	r.mu.Lock()
	r.all = append(r.all, c)
	r.mu.Unlock()
}

// snapshot returns the tasks recorded so far, in order.
func (r *recorder) snapshot() []client.Enqueued {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Enqueued(nil), r.all...)
}

// childrenOf returns the tasks enqueued from the handler of task id.
func (r *recorder) childrenOf(id string) []client.Enqueued {
	var out []client.Enqueued
	for _, e := range r.snapshot() {
		if e.Parent == id {
			out = append(out, e)
		}
	}
	return out
}

// Enqueued returns every task the fleet's clients enqueued (or found as
// duplicates), in the order the clients' hooks were told of them.
//
// What is recorded: every task added through Fleet.Client or a client of
// Fleet.NewClient, by any path (see client.Config.EnqueuedHooks): Enqueue,
// EnqueueMany, continuations (once registered), group members and joins,
// Partition's tasks, patterns.Batch items, and the tasks handlers enqueue
// through those clients (with their Parent). Each is recorded once Redis
// confirmed it, so a call that failed records nothing it did not add (a
// ForkJoin that failed before its group was sealed records its members,
// not its join). Not recorded either: a group started again with an ID
// that exists (it adds nothing), and a dead task client.RetryDead puts
// back (the same task, not a new one).
// Not recorded: tasks enqueued through a client the fleet did not make,
// and the tasks of repeat schedules (patterns.Repeat), which a coordinator
// makes from the schedule's template at each slot, in no client's call:
// find those with patterns.Repeats (a schedule's Last task id, to give to
// WaitTask, and its Fired count) or Fleet.Inspector().
func (f *Fleet) Enqueued() []client.Enqueued { return f.rec.snapshot() }
