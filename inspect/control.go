package inspect

import (
	"context"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// setPaused sets or deletes queue's pause flag and tells its workers
// (Pause, Resume). Workers read the flags of their queues every 250 ms and
// at once on the notice; a worker hands back, unstarted, what a read of its
// own returns for a queue paused meanwhile. A sharded queue's flag pauses
// all its shards in the workers; a shard's name pauses that shard alone.
func (i *Inspector) setPaused(ctx context.Context, queue string, paused bool) error {
	if err := keys.ValidatePhysicalQueue(queue); err != nil {
		return err
	}
	return store.SetPaused(ctx, i.rdb, keys.ForQueue(queue), paused)
}
