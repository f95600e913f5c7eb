package asynctest

import (
	"time"

	"github.com/taskfleet/async/client"
)

// Want narrows which enqueued tasks an assertion matches: every field set
// must match; fields left zero match anything.
type Want struct {
	Queue        string
	ID           string
	Parent       string // the task whose handler enqueued it
	Continues    string // the task or group it continues
	Group        string // the group it is a member of
	MaxAttempts  int
	Delay        time.Duration
	ProcessAt    time.Time
	Deadline     time.Time
	Timeout      time.Duration
	RateKey      string
	PartitionKey string
	Meta         map[string]string // entries the task's metadata must hold
	// Count, when set, is how many tasks must match exactly; 0 means at
	// least one.
	Count int
}

// RequireEnqueued fails the test unless a task of A's kind with args equal
// to want, and matching w, was enqueued; it returns the first such task.
func RequireEnqueued[A client.Args](f *Fleet, want A, w *Want) client.Enqueued {
	panic("asynctest: not yet")
}

// RequireEnqueuedKind fails the test unless a task of kind matching w was
// enqueued (its args not compared); it returns the matching tasks.
func RequireEnqueuedKind(f *Fleet, kind string, w *Want) []client.Enqueued {
	panic("asynctest: not yet")
}

// RequireNotEnqueued fails the test if a task of kind matching w was
// enqueued.
func RequireNotEnqueued(f *Fleet, kind string, w *Want) { panic("asynctest: not yet") }

// EnqueuedArgs returns the args of every task of A's kind enqueued so far,
// in order.
func EnqueuedArgs[A client.Args](f *Fleet) []A { panic("asynctest: not yet") }
