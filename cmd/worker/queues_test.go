package main

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
)

// `worker queues` counts exactly in a queue no worker serves after a
// waiting task is cancelled: the cancel deletes the task's stream entry,
// after which Redis reports no lag for the group, and the command printed
// -1 waiting (on real Redis; miniredis' lag ignores deletes and reads).
func TestCLIQueuesAfterCancel(t *testing.T) {
	e := asynctest.Redis(t)
	if os.Getenv(asynctest.EnvCluster) != "" {
		e = asynctest.IsolatedRedis(t, 0) // the commands take one server's URL
	}
	queue := asynctest.Queue(t)
	c := asynctest.Client(t, e)
	ctx := context.Background()
	var hs []*client.Handle
	for i := range 3 {
		h, err := c.Enqueue(ctx, Echo{N: i}, &client.EnqueueOpts{Queue: queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if st, err := hs[1].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %v, %v", st, err)
	}
	var out, errb syncBuf
	if code := runCLI([]string{"queues", "-redis", "redis://" + e.Addr, "-json"}, &out, &errb, func(string) string { return "" }); code != 0 {
		t.Fatalf("worker queues: exit %d\nstderr: %s", code, errb.String())
	}
	var rows []queueRow
	if err := json.Unmarshal([]byte(out.String()), &rows); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	for _, r := range rows {
		if r.Queue == queue {
			if r.Waiting != 2 || r.Running != 0 || r.Scheduled != 0 || r.Dead != 0 {
				t.Errorf("worker queues: %+v, want 2 waiting, none running, scheduled or dead", r)
			}
			return
		}
	}
	t.Errorf("worker queues does not list %s:\n%s", queue, out.String())
}
