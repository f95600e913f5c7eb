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
// duplicates), in order.
func (f *Fleet) Enqueued() []client.Enqueued { return f.rec.snapshot() }
