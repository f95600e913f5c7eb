package asynctest

import (
	"context"
	"sync"

	"github.com/taskfleet/async/client"
)

// recorder keeps every task the fleet's clients enqueued.
type recorder struct {
	mu  sync.Mutex
	all []client.Enqueued
}

// hook is the client.EnqueuedHook the fleet's clients carry.
func (r *recorder) hook(ctx context.Context, t *client.Enqueued) { panic("asynctest: not yet") }

// childrenOf returns the tasks enqueued from the handler of task id.
func (r *recorder) childrenOf(id string) []client.Enqueued { panic("asynctest: not yet") }

// Enqueued returns every task the fleet's clients enqueued (or found as
// duplicates), in order.
func (f *Fleet) Enqueued() []client.Enqueued { panic("asynctest: not yet") }
