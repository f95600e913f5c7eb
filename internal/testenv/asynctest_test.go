package testenv_test

import (
	"context"
	"testing"

	"github.com/taskfleet/async/internal/testenv"
)

// Database 0 is shared by every package's tests on a real server: an
// isolated Redis asked for db 0 must leave it alone (a flush there once
// wiped a stream another package's test had just written).
func TestIsolatedRedisLeavesSharedDatabase(t *testing.T) {
	shared := testenv.Redis(t)
	ctx := context.Background()
	key := "{" + testenv.Queue(t) + "}:canary"
	if err := shared.RDB.Set(ctx, key, "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = shared.RDB.Del(context.Background(), key).Err() })
	iso := testenv.IsolatedRedis(t, 0)
	if iso.Mini == nil {
		t.Fatal("IsolatedRedis(t, 0) gave a real server's database; want a miniredis of its own")
	}
	if n, err := shared.RDB.Exists(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("the shared database lost a key: exists %d, %v", n, err)
	}
}
