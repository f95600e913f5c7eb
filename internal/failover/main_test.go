// Package failover holds the tests that kill a Redis Cluster master and
// check what a failover keeps (issue 21): each starts a cluster of its own
// (testenv.StartCluster), never the shared one of ASYNC_REDIS_CLUSTER.
package failover

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/testenv"
)

// redisLog counts go-redis' own log lines instead of printing them: while
// a killed master is down, every dial to it logs one, thousands in all.
type redisLog struct{ n atomic.Int64 }

func (l *redisLog) Printf(context.Context, string, ...any) { l.n.Add(1) }

var goRedisLines = &redisLog{}

func TestMain(m *testing.M) {
	redis.SetLogger(goRedisLines)
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
