package client

import (
	"context"
	"fmt"
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
// number of shards is refused with an error (changing the number of a live
// queue's shards is not supported). Declare a queue before producers use
// it: see the package doc for what a producer that has not read the
// declaration yet does.
//
// It returns the physical queues, shard i at index i.
func (c *Client) DeclareShards(ctx context.Context, queue string, n int) ([]string, error) {
	names, err := c.eng.DeclareShards(ctx, queue, n)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return names, nil
}
