package worker

import (
	"time"

	"github.com/taskfleet/async/internal/engine"
)

// The tests read the shard registry often, so that a queue declared while
// a worker or a producer runs is picked up within a test's patience.
func init() {
	shardPoll = 500 * time.Millisecond
	engine.ShardRefresh = 500 * time.Millisecond
}
