package client_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
)

// A Redis that may evict keys gets a warning in the log at New.
func TestWarnsWhenEvictionPossible(t *testing.T) {
	asynctest.RequireReal(t)
	env := asynctest.Redis(t)
	ctx := context.Background()
	old, err := env.RDB.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := env.RDB.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.RDB.ConfigSet(ctx, "maxmemory-policy", old["maxmemory-policy"]).Err() })
	var buf bytes.Buffer
	c, err := client.New(env.RDB, &client.Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(buf.String(), "noeviction") || !strings.Contains(buf.String(), "allkeys-lru") {
		t.Fatalf("got log %q; want a warning naming the policy", buf.String())
	}
}
