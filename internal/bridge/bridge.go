// Package bridge lets package patterns use parts of package client that are
// not public API: enqueueing tasks as members of a group, or held waiting,
// and the client's shared notification listener. Package client fills in
// the functions in its init; the *client.Client travels as an any, since
// client imports this package.
package bridge

import (
	"context"
	"errors"
	"time"
)

// Item is one task to enqueue for a pattern.
type Item struct {
	Args interface{ Kind() string }
	Opts any // *client.EnqueueOpts, or nil

	Key   string // the task's key, derived by the pattern (then Opts.ID must be empty); "" takes Opts.ID, or none for SendMembers
	Group string // public id of the group the task is a member of, or ""
	Hold  bool   // create it waiting, outside the stream, until activated
	Prev  string // what it continues (a group id for a join), or ""
	Index int    // its position among the caller's specs, for errors

	// A rate limit the task carries (patterns.Throttle): its bucket and
	// RateN events per RatePer.
	RateKey string
	RateN   int
	RatePer time.Duration

	// ProcessAt delays the task (patterns.Spread's members; keyed only).
	ProcessAt time.Time
}

// Placed is where an Item went.
type Placed struct {
	Queue   string
	Key     string
	Existed bool // a task with that key existed: nothing was added
}

// ErrGroupEnded is returned by SendMembers when the group ended (fail fast)
// while its members were being added; the rest were not added.
var ErrGroupEnded = errors.New("group ended")

var (
	// Enqueue checks every item, then adds them all (pipelined); nothing is
	// added when one is bad.
	Enqueue func(ctx context.Context, c any, items []Item) ([]Placed, error)

	// Prepare checks and encodes items without sending anything; Send
	// enqueues what Prepare returned.
	Prepare func(ctx context.Context, c any, items []Item) (any, error)
	Send    func(ctx context.Context, c any, prepared any) ([]Placed, error)

	// SendMembers enqueues prepared items, all members of group whose
	// queue is the group's home (their keys empty), adding each to the group
	// in the same step; indices are their submission indices.
	SendMembers func(ctx context.Context, c any, prepared any, group string, indices []int) ([]Placed, error)

	// Watch registers interest in messages equal to key on channel, once
	// subscribed; the returned channel receives a value whenever one may have
	// arrived (also after a reconnect). stop unregisters.
	Watch func(ctx context.Context, c any, channel, key string) (<-chan struct{}, func(), error)

	// Handle returns the *client.Handle of a task.
	Handle func(c any, queue, key string, dup bool) any

	// Retention is the client's default result retention.
	Retention func(c any) time.Duration

	// Template checks and encodes a task that a script enqueues later
	// (patterns.Repeat's slots, patterns.Batch's items and batches): its
	// envelope with key (Repeat: "", each copy gets its own), not a child
	// of any handler, and its queue. ID, Deadline, ProcessAt, Delay and
	// PartitionKey are refused.
	Template func(ctx context.Context, c any, args, opts any, key string) (queue string, env []byte, err error)

	// QueueOf is the queue Opts names, or the client's default queue.
	QueueOf func(c any, opts any) string
)
