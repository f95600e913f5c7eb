package client

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// DeclareShards makes queue a sharded queue of n shards (1 to 1024): n
// physical queues, "<queue>~<i>.<salt>", whose keys land on hash slots
// spread evenly over the masters of a Redis Cluster (one Redis is one
// master). The declaration is an entry in a registry in Redis that every
// client and worker reads: from then on a task enqueued to queue goes to
// one of its shards (by its PartitionKey, else its ID, else round-robin;
// see the package doc), and a worker serving queue serves every shard.
//
// Declaring is idempotent: declaring queue again with the same n changes
// nothing and returns the same names. A queue declared with another
// number of shards is refused with an error; GrowShards grows one.
//
// A queue already in use (its plain queue holds tasks) keeps placing the
// tasks that have a partition key or an id on the plain queue for the
// default ShardChange.Grace, and after that looks there for their key's
// earlier tasks for ShardChange.Settle: see GrowShards, which works the
// same way and takes other durations. A queue declared before any
// producer uses it is sharded at once.
//
// It returns the physical queues, shard i at index i.
func (c *Client) DeclareShards(ctx context.Context, queue string, n int) ([]string, error) {
	names, err := c.eng.DeclareShards(ctx, queue, n, false, store.ShardChange{})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return names, nil
}

// ShardChange says how a change of a sharded queue's layout takes effect
// (GrowShards). The zero value takes the defaults.
type ShardChange struct {
	// Grace is how long after the change the tasks that have a partition
	// key or an id keep to the old layout: long enough for every producer
	// to read the change (a producer reads the registry again after 5
	// seconds) and for calls in flight to land (go-redis resends a command
	// for several seconds). Default 30 s.
	Grace time.Duration
	// Settle is how long after the change a task whose key moved to
	// another shard is first looked for in its old shard, to queue behind
	// its partition key's tasks there (their order holds) or to find the
	// task its id names (the id stays idempotent). Make it at least the
	// longest a task of the queue waits plus how long its record is kept
	// after it ends (EnqueueOpts.Retention). Default 24 h.
	Settle time.Duration
}

// GrowShards grows the sharded queue queue to n shards and returns its
// physical queues; a queue not declared yet is declared with n. Shards
// 0..N-1 keep their names and tasks; the new ones are placed on the
// masters with the fewest of the queue's shards. Workers serving queue
// start serving the new shards within 5 seconds.
//
// No task is lost or reordered: a key's shard is chosen by a consistent
// hash, so only the keys that go to the new shards move (a share
// (n-N)/n of them). For opts.Grace after the call, tasks with a partition
// key or an id keep to the old layout, while every producer learns of the
// change; then a task whose key moved goes to its new shard unless its
// old shard still holds a task of its partition key (it queues behind it
// there) or the task its id names (it finds that one), which producers
// look for during opts.Settle. Tasks without a key go to every shard at
// once.
//
// Growing to the number the queue has changes nothing (a repeated call is
// harmless); fewer shards are refused (a queue does not shrink), and so is
// a change while the previous change's grace has not passed. nil opts
// takes the defaults.
func (c *Client) GrowShards(ctx context.Context, queue string, n int, opts *ShardChange) ([]string, error) {
	var ch store.ShardChange
	if opts != nil {
		ch = store.ShardChange{Grace: opts.Grace, Settle: opts.Settle}
	}
	names, err := c.eng.DeclareShards(ctx, queue, n, true, ch)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return names, nil
}
