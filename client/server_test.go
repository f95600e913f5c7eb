package client_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

// A Redis that may evict keys gets a warning in the log at New.
func TestWarnsWhenEvictionPossible(t *testing.T) {
	testenv.RequireReal(t)
	env := testenv.Redis(t)
	ctx := context.Background()
	old, err := env.RDB.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		t.Fatal(err)
	}
	setPolicy := func(p string) error { return env.RDB.ConfigSet(ctx, "maxmemory-policy", p).Err() }
	if cc, ok := env.RDB.(*redis.ClusterClient); ok {
		// Each node has its own configuration.
		setPolicy = func(p string) error {
			return cc.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
				return n.ConfigSet(ctx, "maxmemory-policy", p).Err()
			})
		}
	}
	if err := setPolicy("allkeys-lru"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = setPolicy(old["maxmemory-policy"]) })
	var buf bytes.Buffer
	c, err := client.New(context.Background(), env.RDB, &client.Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(buf.String(), "noeviction") || !strings.Contains(buf.String(), "allkeys-lru") {
		t.Fatalf("got log %q; want a warning naming the policy", buf.String())
	}
}
