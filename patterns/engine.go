package patterns

import (
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/engine"
)

// engineOf returns the engine under c (see internal/engine.Of).
func engineOf(c *client.Client) *engine.Engine {
	e, _ := engine.Of[*client.Handle](c)
	return e
}

// handleOf returns c's handle of the task r names.
func handleOf(c *client.Client, r engine.Ref) *client.Handle {
	_, wrap := engine.Of[*client.Handle](c)
	return wrap(r)
}

// optsOf returns o as the engine takes it (the compiler checks that the two
// types have the same fields).
func optsOf(o *client.EnqueueOpts) *engine.Opts { return (*engine.Opts)(o) }
