package asynctest

import (
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
)

// WaitTask waits until task id is in state want and returns its Info. It
// fails the test, saying what the task was doing instead, when the wait
// timeout passes or the task ended in another state.
func (f *Fleet) WaitTask(id string, want client.State) *client.Info { panic("asynctest: not yet") }

// WaitGroup waits until group id is in state want and returns its
// progress; it fails the test, with the progress it saw, as WaitTask does.
func (f *Fleet) WaitGroup(id string, want patterns.GroupState) patterns.Progress {
	panic("asynctest: not yet")
}

// WaitResult waits until the task h names succeeded and returns its result
// decoded into an R; it fails the test if the task ended otherwise.
func WaitResult[R any](f *Fleet, h *client.Handle) R { panic("asynctest: not yet") }
