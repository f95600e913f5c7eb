package asynctest

import "errors"

// ErrInjected is the error of an attempt FailNext failed.
var ErrInjected = errors.New("asynctest: injected failure")

// faults holds the failures to inject into the fleet's workers.
type faults struct{}

// FailNext makes the next n attempts of kind, on any of the fleet's
// workers, fail with err (ErrInjected when nil) without running the
// handler. Wrap err with worker.Permanent to fail them for good.
func (f *Fleet) FailNext(kind string, n int, err error) { panic("asynctest: not yet") }

// LosePoint is when LoseWorker cuts a worker off.
type LosePoint int

const (
	// LoseDuring cuts the worker off as the handler starts: the handler
	// runs, but its outcome is never recorded.
	LoseDuring LosePoint = iota
	// LoseAfter cuts the worker off once the handler returned, before its
	// outcome is recorded: the work was done, and is done again.
	LoseAfter
)

// Loss is a worker lost by LoseWorker.
type Loss struct{}

// LoseWorker cuts off from Redis the worker that runs the next attempt of
// kind, at point at, as if its process died; its lease lapses and another
// worker of the fleet takes the task over.
func (f *Fleet) LoseWorker(kind string, at LosePoint) *Loss { panic("asynctest: not yet") }

// Wait waits until the loss happened and returns the id of the task whose
// worker was lost.
func (l *Loss) Wait() string { panic("asynctest: not yet") }
